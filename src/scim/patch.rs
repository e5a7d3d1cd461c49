// TEMPORARY compile stub; replaced by the real module from the core-filter-patch branch.
use super::error::*;
use super::schema::ResourceType;
use serde_json::{Map, Value};
pub struct PatchOp;
pub fn parse_request(_b: &Value) -> ScimResult<Vec<PatchOp>> {
    Ok(vec![])
}
pub fn apply(_rt: ResourceType, _r: &mut Map<String, Value>, _ops: &[PatchOp]) -> ScimResult<()> {
    Ok(())
}
