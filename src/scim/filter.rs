// TEMPORARY compile stub; replaced by the real module from the core-filter-patch branch.
use super::error::*;
use super::path::AttrPath;
use super::schema::ResourceType;
use serde_json::{Map, Value};
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CompareOp {
    Eq,
    Ne,
    Co,
    Sw,
    Ew,
    Gt,
    Ge,
    Lt,
    Le,
}
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        path: AttrPath,
        op: CompareOp,
        value: Value,
    },
    Present(AttrPath),
    And(Box<Filter>, Box<Filter>),
    Or(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    ValuePath {
        path: AttrPath,
        filter: Box<Filter>,
    },
}
pub fn parse(input: &str) -> ScimResult<Filter> {
    let parts: Vec<&str> = input.splitn(3, ' ').collect();
    Ok(Filter::Compare {
        path: AttrPath::parse(parts[0])?,
        op: CompareOp::Eq,
        value: Value::String(parts.get(2).unwrap_or(&"").trim_matches('"').to_owned()),
    })
}
pub fn validate(_f: &Filter, _rt: ResourceType) -> ScimResult<()> {
    Ok(())
}
pub fn matches(f: &Filter, rt: ResourceType, r: &Map<String, Value>) -> bool {
    match f {
        Filter::Compare { path, value, .. } => {
            let d = path.resolve(rt).unwrap();
            r.get(d.def.name)
                .and_then(|v| v.as_str())
                .map(|s| s.eq_ignore_ascii_case(value.as_str().unwrap()))
                .unwrap_or(false)
        }
        _ => false,
    }
}
