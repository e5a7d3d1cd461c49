//! SCIM filters (RFC 7644 §3.4.2.2): the parser, a schema check and the evaluator
//! over a resource held as a JSON object with canonical attribute names. PATCH value
//! paths (`emails[type eq "work"]`) are evaluated against single elements with
//! [`matches_element`]. Knows the schema tables, nothing of HTTP or storage.
//!
//! Bounds: a filter longer than [`MAX_FILTER_LEN`] bytes or nesting (parentheses,
//! `not`, value paths) deeper than [`MAX_NESTING`] is refused, so neither parsing nor
//! evaluation can recurse without limit.
//!
//! Semantics that the RFC leaves open, as decided here:
//! - `ne` is the negation of `eq`: an absent attribute is "not equal", and on a
//!   multi-valued attribute `ne` holds when no value is equal.
//! - `eq null` holds when the attribute is not present, `ne null` when it is.
//! - Strings compare case-insensitively unless the attribute is `caseExact`; binary
//!   values always compare exactly.
//! - dateTime values compare as instants when both sides parse as RFC 3339, and as
//!   strings otherwise.
//! - Booleans stored as the strings "true"/"false" (any case, as some IdPs send them)
//!   compare as booleans.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::error::{ScimError, ScimResult};
use super::path::AttrPath;
use super::schema::{AttrDef, AttrType, ResourceType};

mod prefilter;
pub use prefilter::Prefilter;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and value paths accepted.
pub const MAX_NESTING: usize = 32;

/// An attribute operator of a filter (RFC 7644 §3.4.2.2, Table 3), written in either case
/// in the filter text. `pr` is not here: it is [`Filter::Present`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    /// `eq`: the attribute and the value are equal.
    Eq,
    /// `ne`: the negation of `eq` (an absent attribute is "not equal").
    Ne,
    /// `co`: the string value is a substring of the attribute value.
    Co,
    /// `sw`: the attribute value starts with the string value.
    Sw,
    /// `ew`: the attribute value ends with the string value.
    Ew,
    /// `gt`: the attribute value is greater. Strings compare by code point (of their
    /// caseless forms unless `caseExact`), dateTimes as instants, numbers numerically;
    /// refused for booleans and binary.
    Gt,
    /// `ge`: greater than or equal, ordered as for `gt`.
    Ge,
    /// `lt`: less than, ordered as for `gt`.
    Lt,
    /// `le`: less than or equal, ordered as for `gt`.
    Le,
    /// Not SCIM: the admin page's directory search. The string value is a substring
    /// of the attribute value, both in `text::search_form` (case and diacritics
    /// ignored: `Jose` finds `José`). No filter text names it: [`parse`] never
    /// yields it, and its [`Display`](std::fmt::Display) (`search`) does not parse.
    Search,
}

impl CompareOp {
    fn from_keyword(word: &str) -> Option<CompareOp> {
        const OPS: [(&str, CompareOp); 9] = [
            ("eq", CompareOp::Eq),
            ("ne", CompareOp::Ne),
            ("co", CompareOp::Co),
            ("sw", CompareOp::Sw),
            ("ew", CompareOp::Ew),
            ("gt", CompareOp::Gt),
            ("ge", CompareOp::Ge),
            ("lt", CompareOp::Lt),
            ("le", CompareOp::Le),
        ];
        OPS.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(word))
            .map(|(_, op)| *op)
    }

    /// The operator's keyword in lower case (`"eq"`, `"sw"`, ...), as RFC 7644 §3.4.2.2
    /// spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "eq",
            CompareOp::Ne => "ne",
            CompareOp::Co => "co",
            CompareOp::Sw => "sw",
            CompareOp::Ew => "ew",
            CompareOp::Gt => "gt",
            CompareOp::Ge => "ge",
            CompareOp::Lt => "lt",
            CompareOp::Le => "le",
            CompareOp::Search => "search",
        }
    }

    fn is_ordering(self) -> bool {
        matches!(
            self,
            CompareOp::Gt | CompareOp::Ge | CompareOp::Lt | CompareOp::Le
        )
    }

    fn is_substring(self) -> bool {
        matches!(
            self,
            CompareOp::Co | CompareOp::Sw | CompareOp::Ew | CompareOp::Search
        )
    }
}

/// A parsed filter expression (RFC 7644 §3.4.2.2): the tree [`parse`] builds and
/// [`validate`] / [`matches()`] read.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// `attr op value`: compares an attribute with a literal (RFC 7644 §3.4.2.2).
    Compare {
        /// The attribute compared, as written (names resolve case-insensitively).
        path: AttrPath,
        /// The comparison.
        op: CompareOp,
        /// The comparison value: a JSON string, number, boolean or null (`eq null` holds when
        /// the attribute is absent).
        value: Value,
    },
    /// `attr pr`: the attribute has a value: not null, not an empty string, and for arrays
    /// and objects at least one element or member that is present (RFC 7644 §3.4.2.2).
    Present(AttrPath),
    /// `a and b`: both hold.
    And(Box<Filter>, Box<Filter>),
    /// `a or b`: either holds.
    Or(Box<Filter>, Box<Filter>),
    /// `not (a)`: the inner filter does not hold.
    Not(Box<Filter>),
    /// `attr[valFilter]`: paths inside are relative to the complex attribute's
    /// sub-attributes.
    ValuePath {
        /// The multi-valued (or singular) complex attribute, e.g. `emails`.
        path: AttrPath,
        /// The filter one value (element) must satisfy, e.g. `type eq "work"`.
        filter: Box<Filter>,
    },
}

/// The filter as RFC 7644 §3.4.2.2 text that [`parse`] reads back to the same tree:
/// every `and`/`or` operand and every `not` operand in parentheses, strings with JSON
/// escapes, numbers as JSON writes them. For logs and for clients that build
/// filters (the migration push). The admin page's `CompareOp::Search` has no filter
/// text; it reads `search`, which does not parse.
impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filter::Compare { path, op, value } => write!(f, "{path} {} {value}", op.as_str()),
            Filter::Present(path) => write!(f, "{path} pr"),
            Filter::And(a, b) => write!(f, "({a}) and ({b})"),
            Filter::Or(a, b) => write!(f, "({a}) or ({b})"),
            Filter::Not(inner) => write!(f, "not ({inner})"),
            Filter::ValuePath { path, filter } => write!(f, "{path}[{filter}]"),
        }
    }
}

// ---------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    LBracket,
    RBracket,
    /// An attribute path, a keyword or `true`/`false`/`null`.
    Word(String),
    Str(String),
    Number(serde_json::Number),
}

#[derive(Debug)]
struct Spanned {
    token: Token,
    /// Byte offset in the input, for error messages and for callers that need the
    /// text after a value path.
    at: usize,
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'$' | b':' | b'.')
}

fn describe(token: &Token) -> String {
    match token {
        Token::LParen => "'('".into(),
        Token::RParen => "')'".into(),
        Token::LBracket => "'['".into(),
        Token::RBracket => "']'".into(),
        Token::Word(w) => format!("'{w}'"),
        Token::Str(s) => format!("the string {}", Value::String(s.clone())),
        Token::Number(n) => format!("the number {n}"),
    }
}

fn lex(input: &str) -> ScimResult<Vec<Spanned>> {
    let bytes = input.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let start = i;
        let token = match b {
            b if b.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            b'(' => {
                i += 1;
                Token::LParen
            }
            b')' => {
                i += 1;
                Token::RParen
            }
            b'[' => {
                i += 1;
                Token::LBracket
            }
            b']' => {
                i += 1;
                Token::RBracket
            }
            b'"' => {
                // Find the closing quote; UTF-8 continuation bytes are never '"' or
                // '\\', so a byte scan is safe, and the slice ends on ASCII.
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => {
                            return Err(ScimError::invalid_filter(format!(
                                "unterminated string starting at byte {start}"
                            )))
                        }
                        Some(b'\\') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                let raw = input.get(start..i).unwrap_or_default();
                let s: String = serde_json::from_str(raw).map_err(|_| {
                    ScimError::invalid_filter(format!(
                        "invalid string at byte {start}: use JSON escapes (\\\", \\\\, \\uXXXX)"
                    ))
                })?;
                Token::Str(s)
            }
            b'-' | b'0'..=b'9' => {
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    i += 1;
                }
                let raw = input.get(start..i).unwrap_or_default();
                let n: serde_json::Number = serde_json::from_str(raw).map_err(|_| {
                    ScimError::invalid_filter(format!("invalid number '{raw}' at byte {start}"))
                })?;
                Token::Number(n)
            }
            b if is_word_byte(b) => {
                while i < bytes.len() && is_word_byte(bytes[i]) {
                    i += 1;
                }
                Token::Word(input.get(start..i).unwrap_or_default().to_owned())
            }
            _ => {
                let c = input.get(start..).and_then(|s| s.chars().next());
                return Err(ScimError::invalid_filter(format!(
                    "unexpected character {} at byte {start}",
                    c.map(|c| format!("'{c}'")).unwrap_or_else(|| "?".into())
                )));
            }
        };
        tokens.push(Spanned { token, at: start });
    }
    Ok(tokens)
}

// ---------------------------------------------------------------------------------
// Parser: or → and → unary (not, parentheses, value path, attribute expression).
// `and`/`or` chains are built in loops; only nesting recurses, and it is bounded.

struct Parser {
    tokens: Vec<Spanned>,
    pos: usize,
    depth: usize,
    /// Whether `attr[valFilter].sub op value` is read as one comparison (in a
    /// filter), or the text after `]` is left to the caller (a PATCH path).
    sub_after_value_path: bool,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|s| &s.token)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.pos + ahead).map(|s| &s.token)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).map(|s| s.token.clone());
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(usize::MAX, |s| s.at)
    }

    fn peek_keyword(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword))
    }

    fn enter(&mut self) -> ScimResult<()> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ScimError::invalid_filter(format!(
                "filter nests deeper than {MAX_NESTING} levels; simplify it"
            )));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn expect(&mut self, want: Token, what: &str) -> ScimResult<()> {
        match self.next() {
            Some(t) if t == want => Ok(()),
            Some(t) => Err(ScimError::invalid_filter(format!(
                "expected {what}, found {}",
                describe(&t)
            ))),
            None => Err(ScimError::invalid_filter(format!(
                "expected {what}, found the end of the filter"
            ))),
        }
    }

    fn parse_or(&mut self, in_value_path: bool) -> ScimResult<Filter> {
        let mut left = self.parse_and(in_value_path)?;
        while self.peek_keyword("or") {
            self.pos += 1;
            let right = self.parse_and(in_value_path)?;
            left = Filter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_and(&mut self, in_value_path: bool) -> ScimResult<Filter> {
        let mut left = self.parse_unary(in_value_path)?;
        while self.peek_keyword("and") {
            self.pos += 1;
            let right = self.parse_unary(in_value_path)?;
            left = Filter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn parse_unary(&mut self, in_value_path: bool) -> ScimResult<Filter> {
        // `not` is a keyword only where an operator cannot follow it.
        let not_keyword = self.peek_keyword("not")
            && !matches!(self.peek_at(1), Some(Token::Word(w))
                if CompareOp::from_keyword(w).is_some() || w.eq_ignore_ascii_case("pr"));
        if not_keyword {
            self.pos += 1;
            self.enter()?;
            let inner = self.parse_unary(in_value_path)?;
            self.leave();
            return Ok(Filter::Not(Box::new(inner)));
        }
        match self.next() {
            Some(Token::LParen) => {
                self.enter()?;
                let inner = self.parse_or(in_value_path)?;
                self.expect(Token::RParen, "')'")?;
                self.leave();
                Ok(inner)
            }
            Some(Token::Word(word)) => {
                let path =
                    AttrPath::parse(&word).map_err(|e| ScimError::invalid_filter(e.detail))?;
                if path.is_whole_schema() {
                    return Err(ScimError::invalid_filter(format!(
                        "'{word}' names a schema, not an attribute; append ':attributeName'"
                    )));
                }
                if self.peek() == Some(&Token::LBracket) {
                    if in_value_path {
                        return Err(ScimError::invalid_filter(format!(
                            "value filters cannot be nested ('{word}[' inside '[...]')"
                        )));
                    }
                    self.pos += 1;
                    self.enter()?;
                    let mut inner = self.parse_or(true)?;
                    self.expect(Token::RBracket, "']' to close the value filter")?;
                    self.leave();
                    // `emails[type eq "work"].value eq "x"` (sent by Entra ID): an
                    // element that satisfies both the value filter and the comparison.
                    let sub = match self.peek() {
                        Some(Token::Word(w)) if self.sub_after_value_path => {
                            w.strip_prefix('.').map(str::to_owned)
                        }
                        _ => None,
                    };
                    if let Some(sub) = sub {
                        self.pos += 1;
                        let sub_path = AttrPath::parse(&sub)
                            .ok()
                            .filter(|p| p.urn.is_none() && p.sub.is_none() && !p.attr.is_empty())
                            .ok_or_else(|| {
                                ScimError::invalid_filter(format!(
                                    "'{word}[...].{sub}': only one sub-attribute name may follow ']'"
                                ))
                            })?;
                        let compared =
                            self.parse_attr_expr(sub_path, &format!("{word}[...].{sub}"))?;
                        inner = Filter::And(Box::new(inner), Box::new(compared));
                    }
                    return Ok(Filter::ValuePath {
                        path,
                        filter: Box::new(inner),
                    });
                }
                self.parse_attr_expr(path, &word)
            }
            Some(t) => Err(ScimError::invalid_filter(format!(
                "expected an attribute name, '(' or 'not', found {}",
                describe(&t)
            ))),
            None => Err(ScimError::invalid_filter(
                "the filter ends where an attribute expression was expected",
            )),
        }
    }

    fn parse_attr_expr(&mut self, path: AttrPath, word: &str) -> ScimResult<Filter> {
        let op_word = match self.next() {
            Some(Token::Word(w)) => w,
            other => {
                return Err(ScimError::invalid_filter(format!(
                    "expected an operator (eq, ne, co, sw, ew, gt, ge, lt, le, pr) after '{word}', found {}",
                    other.as_ref().map_or("the end of the filter".into(), describe)
                )))
            }
        };
        if op_word.eq_ignore_ascii_case("pr") {
            return Ok(Filter::Present(path));
        }
        let op = CompareOp::from_keyword(&op_word).ok_or_else(|| {
            ScimError::invalid_filter(format!(
                "unknown operator '{op_word}' after '{word}'; use eq, ne, co, sw, ew, gt, ge, lt, le or pr"
            ))
        })?;
        let value = match self.next() {
            Some(Token::Str(s)) => Value::String(s),
            Some(Token::Number(n)) => Value::Number(n),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("true") => Value::Bool(true),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("false") => Value::Bool(false),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("null") => Value::Null,
            other => {
                return Err(ScimError::invalid_filter(format!(
                    "expected a value (a quoted string, a number, true, false or null) after '{word} {}', found {}",
                    op.as_str(),
                    other.as_ref().map_or("the end of the filter".into(), describe)
                )))
            }
        };
        Ok(Filter::Compare { path, op, value })
    }
}

fn start(input: &str, sub_after_value_path: bool) -> ScimResult<Parser> {
    if input.len() > MAX_FILTER_LEN {
        return Err(ScimError::invalid_filter(format!(
            "filter is {} bytes long; the limit is {MAX_FILTER_LEN}",
            input.len()
        )));
    }
    let tokens = lex(input)?;
    if tokens.is_empty() {
        return Err(ScimError::invalid_filter("empty filter"));
    }
    Ok(Parser {
        tokens,
        pos: 0,
        depth: 0,
        sub_after_value_path,
    })
}

/// Parses a filter. Errors are 400 `invalidFilter` with a detail that says what was
/// expected where.
pub fn parse(input: &str) -> ScimResult<Filter> {
    let mut p = start(input, true)?;
    let filter = p.parse_or(false)?;
    match p.peek() {
        None => Ok(filter),
        Some(t) => Err(ScimError::invalid_filter(format!(
            "expected 'and', 'or' or the end of the filter at byte {}, found {}",
            p.offset(),
            describe(t)
        ))),
    }
}

/// Parses a PATCH value path `attr[valFilter]`, returning the attribute path, the
/// value filter and the text after the closing `]` (e.g. `.value`, or empty).
/// Errors are `invalidFilter`; the caller decides how to report them.
pub fn parse_value_path(input: &str) -> ScimResult<(AttrPath, Filter, &str)> {
    let mut p = start(input, false)?;
    match p.parse_unary(false)? {
        Filter::ValuePath { path, filter } => {
            let rest = match p.tokens.get(p.pos) {
                Some(s) => input.get(s.at..).unwrap_or_default(),
                None => "",
            };
            Ok((path, *filter, rest))
        }
        _ => Err(ScimError::invalid_filter(
            "expected a value path such as emails[type eq \"work\"]",
        )),
    }
}

// ---------------------------------------------------------------------------------
// Resolution against the schema

/// Where a path is evaluated: a whole resource, or one element of a complex
/// attribute (inside `[...]`).
#[derive(Clone, Copy)]
enum Scope {
    Resource(ResourceType),
    Element(&'static AttrDef),
}

/// A resolved attribute path.
struct Target {
    def: &'static AttrDef,
    /// The extension object holding the attribute, for extension attributes.
    extension: Option<&'static str>,
    sub: Option<&'static AttrDef>,
}

impl Target {
    /// The definition that describes the values compared: the sub-attribute, or
    /// `value` of a complex attribute compared as a whole (`emails co "@x"`).
    fn leaf(&self) -> Option<&'static AttrDef> {
        match (self.sub, self.def.ty) {
            (Some(sub), _) => Some(sub),
            (None, AttrType::Complex) => self.def.sub("value"),
            (None, _) => Some(self.def),
        }
    }
}

fn resolve(scope: Scope, path: &AttrPath) -> ScimResult<Target> {
    let (def, extension) = match scope {
        Scope::Resource(rt) => {
            let found = path.resolve(rt).ok_or_else(|| {
                ScimError::invalid_filter(format!(
                    "unknown attribute '{}' for {} resources",
                    display_path(path),
                    rt.name()
                ))
            })?;
            (found.def, found.schema.map(|s| s.id))
        }
        Scope::Element(parent) => {
            if path.urn.is_some() || path.sub.is_some() {
                return Err(ScimError::invalid_filter(format!(
                    "inside {}[...] name sub-attributes directly (e.g. type, value), not '{}'",
                    parent.name,
                    display_path(path)
                )));
            }
            let def = parent.sub(&path.attr).ok_or_else(|| {
                ScimError::invalid_filter(format!(
                    "'{}' has no sub-attribute '{}'",
                    parent.name, path.attr
                ))
            })?;
            (def, None)
        }
    };
    let sub = match &path.sub {
        None => None,
        Some(name) => {
            if def.ty != AttrType::Complex {
                return Err(ScimError::invalid_filter(format!(
                    "'{}' has no sub-attributes",
                    def.name
                )));
            }
            Some(def.sub(name).ok_or_else(|| {
                ScimError::invalid_filter(format!("'{}' has no sub-attribute '{name}'", def.name))
            })?)
        }
    };
    Ok(Target {
        def,
        extension,
        sub,
    })
}

fn display_path(path: &AttrPath) -> String {
    let mut s = String::new();
    if let Some(urn) = &path.urn {
        s.push_str(urn);
        s.push(':');
    }
    s.push_str(&path.attr);
    if let Some(sub) = &path.sub {
        s.push('.');
        s.push_str(sub);
    }
    s
}

/// Checks a parsed filter against a resource type's schema: unknown attributes,
/// operators that make no sense for the attribute's type, values of the wrong kind.
/// Each is 400 `invalidFilter` naming the attribute (RFC 7644 §3.4.2.2).
pub fn validate(filter: &Filter, rt: ResourceType) -> ScimResult<()> {
    validate_in(filter, Scope::Resource(rt))
}

/// [`validate`] for a value filter applied to elements of the complex attribute
/// `parent` (a PATCH path such as `members[value eq "…"]`).
pub fn validate_element(filter: &Filter, parent: &'static AttrDef) -> ScimResult<()> {
    validate_in(filter, Scope::Element(parent))
}

fn validate_in(filter: &Filter, scope: Scope) -> ScimResult<()> {
    match filter {
        Filter::Present(path) => resolve(scope, path).map(|_| ()),
        Filter::And(a, b) | Filter::Or(a, b) => {
            validate_in(a, scope)?;
            validate_in(b, scope)
        }
        Filter::Not(inner) => validate_in(inner, scope),
        Filter::ValuePath { path, filter } => {
            let t = resolve(scope, path)?;
            if t.def.ty != AttrType::Complex || t.sub.is_some() {
                return Err(ScimError::invalid_filter(format!(
                    "'{}[...]' needs a complex attribute such as emails or members",
                    display_path(path)
                )));
            }
            validate_in(filter, Scope::Element(t.def))
        }
        Filter::Compare { path, op, value } => {
            let t = resolve(scope, path)?;
            let name = display_path(path);
            let leaf = t.leaf().ok_or_else(|| {
                ScimError::invalid_filter(format!(
                    "'{name}' is complex; compare one of its sub-attributes (e.g. {name}.{})",
                    t.def.sub_attributes.first().map_or("value", |s| s.name)
                ))
            })?;
            validate_comparison(&name, leaf, *op, value)
        }
    }
}

fn validate_comparison(name: &str, leaf: &AttrDef, op: CompareOp, value: &Value) -> ScimResult<()> {
    let refuse = |why: String| Err(ScimError::invalid_filter(why));
    if value.is_null() {
        return match op {
            CompareOp::Eq | CompareOp::Ne => Ok(()),
            _ => refuse(format!("'{name} {}' cannot compare with null", op.as_str())),
        };
    }
    match leaf.ty {
        AttrType::Boolean => {
            if !matches!(op, CompareOp::Eq | CompareOp::Ne) {
                return refuse(format!(
                    "'{name}' is a boolean; only eq, ne and pr apply to it, not {}",
                    op.as_str()
                ));
            }
            if lenient_bool(value).is_none() {
                return refuse(format!("'{name}' is a boolean; compare it with true or false"));
            }
        }
        AttrType::Binary if op.is_ordering() => {
            return refuse(format!(
                "'{name}' is binary; {} does not apply to it",
                op.as_str()
            ));
        }
        AttrType::DateTime if op.is_ordering() => match value {
            Value::String(s) if parse_instant(s).is_some() => {}
            _ => {
                return refuse(format!(
                    "'{name}' is a dateTime; compare it with an RFC 3339 string such as \"2024-01-31T12:00:00Z\""
                ))
            }
        },
        _ => {}
    }
    if value.is_boolean() && leaf.ty != AttrType::Boolean {
        return refuse(format!(
            "'{name}' is not a boolean; compare it with a string or a number"
        ));
    }
    if op.is_substring() && !value.is_string() {
        return refuse(format!("'{name} {}' needs a string value", op.as_str()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Evaluation

/// True when `resource` (canonical attribute names) satisfies `filter`. A filter that
/// does not fit the schema (see [`validate`]) never panics: what cannot be resolved
/// behaves as an absent attribute.
pub fn matches(filter: &Filter, rt: ResourceType, resource: &Map<String, Value>) -> bool {
    eval(filter, Scope::Resource(rt), resource)
}

/// True when one element of the multi-valued complex attribute `parent` (e.g. one
/// object of `emails`) satisfies a value filter such as `type eq "work"`.
pub fn matches_element(filter: &Filter, parent: &'static AttrDef, element: &Value) -> bool {
    match element.as_object() {
        Some(obj) => eval(filter, Scope::Element(parent), obj),
        None => false,
    }
}

fn eval(filter: &Filter, scope: Scope, obj: &Map<String, Value>) -> bool {
    match filter {
        Filter::And(a, b) => eval(a, scope, obj) && eval(b, scope, obj),
        Filter::Or(a, b) => eval(a, scope, obj) || eval(b, scope, obj),
        Filter::Not(inner) => !eval(inner, scope, obj),
        Filter::Present(path) => match resolve(scope, path) {
            // A complex attribute named alone is present when any sub-attribute is.
            Ok(t) if t.sub.is_none() => attribute_value(obj, &t).is_some_and(is_present),
            Ok(t) => leaves(obj, &t).iter().any(|v| is_present(v)),
            Err(_) => false,
        },
        Filter::ValuePath { path, filter } => {
            let Ok(t) = resolve(scope, path) else {
                return false;
            };
            if t.sub.is_some() {
                return false;
            }
            attribute_value(obj, &t)
                .map(elements)
                .unwrap_or_default()
                .into_iter()
                .any(|e| matches_element(filter, t.def, e))
        }
        Filter::Compare { path, op, value } => {
            let Ok(t) = resolve(scope, path) else {
                return *op == CompareOp::Ne;
            };
            let Some(leaf_def) = t.leaf() else {
                return *op == CompareOp::Ne;
            };
            let values = leaves(obj, &t);
            if value.is_null() {
                let present = values.iter().any(|v| is_present(v));
                return present == (*op == CompareOp::Ne);
            }
            match op {
                CompareOp::Ne => !values
                    .iter()
                    .any(|v| compare(CompareOp::Eq, v, value, leaf_def)),
                _ => values.iter().any(|v| compare(*op, v, value, leaf_def)),
            }
        }
    }
}

/// Looks a key up by its canonical name, then case-insensitively, so a resource that
/// escaped normalisation still evaluates sensibly.
pub(crate) fn get_ci<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

fn attribute_value<'a>(obj: &'a Map<String, Value>, t: &Target) -> Option<&'a Value> {
    let container = match t.extension {
        Some(urn) => get_ci(obj, urn)?.as_object()?,
        None => obj,
    };
    get_ci(container, t.def.name)
}

fn elements(v: &Value) -> Vec<&Value> {
    match v {
        Value::Array(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// The values a comparison looks at: every value of the attribute, or of its
/// sub-attribute, or of `value` for a complex attribute named without one.
fn leaves<'a>(obj: &'a Map<String, Value>, t: &Target) -> Vec<&'a Value> {
    let Some(v) = attribute_value(obj, t) else {
        return Vec::new();
    };
    let sub_name = match (t.sub, t.def.ty) {
        (Some(sub), _) => Some(sub.name),
        (None, AttrType::Complex) => Some("value"),
        (None, _) => None,
    };
    match sub_name {
        None => elements(v),
        Some(name) => elements(v)
            .into_iter()
            .filter_map(|e| match e {
                Value::Object(o) => get_ci(o, name),
                // A manager given as a bare id before normalisation.
                other if t.sub.is_none() => Some(other),
                _ => None,
            })
            .flat_map(elements)
            .collect(),
    }
}

/// `pr`: present and neither null nor empty.
pub(crate) fn is_present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => items.iter().any(is_present),
        Value::Object(o) => o.values().any(is_present),
        _ => true,
    }
}

fn lenient_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

fn parse_instant(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

fn as_text(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        _ => None,
    }
}

fn ordering_holds(op: CompareOp, ord: Ordering) -> bool {
    match op {
        CompareOp::Eq => ord == Ordering::Equal,
        CompareOp::Ne => ord != Ordering::Equal,
        CompareOp::Gt => ord == Ordering::Greater,
        CompareOp::Ge => ord != Ordering::Less,
        CompareOp::Lt => ord == Ordering::Less,
        CompareOp::Le => ord != Ordering::Greater,
        CompareOp::Co | CompareOp::Sw | CompareOp::Ew | CompareOp::Search => false,
    }
}

fn compare_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    match (a.as_i64(), b.as_i64()) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

/// One attribute value against the filter's literal.
fn compare(op: CompareOp, actual: &Value, literal: &Value, def: &AttrDef) -> bool {
    match def.ty {
        AttrType::Boolean => match (lenient_bool(actual), lenient_bool(literal)) {
            (Some(a), Some(b)) => ordering_holds(op, a.cmp(&b)) && !op.is_ordering(),
            _ => false,
        },
        AttrType::DateTime => {
            if let (Value::String(a), Value::String(b)) = (actual, literal) {
                if !op.is_substring() {
                    if let (Some(x), Some(y)) = (parse_instant(a), parse_instant(b)) {
                        return ordering_holds(op, x.cmp(&y));
                    }
                }
            }
            compare_text(op, actual, literal, true)
        }
        AttrType::Integer | AttrType::Decimal => match (actual, literal) {
            (Value::Number(a), Value::Number(b)) => {
                compare_numbers(a, b).is_some_and(|o| ordering_holds(op, o))
            }
            _ => compare_text(op, actual, literal, true),
        },
        AttrType::Binary => compare_text(op, actual, literal, true),
        AttrType::String | AttrType::Reference | AttrType::Complex => {
            compare_text(op, actual, literal, def.case_exact)
        }
    }
}

fn compare_text(op: CompareOp, actual: &Value, literal: &Value, case_exact: bool) -> bool {
    let (Some(a), Some(b)) = (as_text(actual), as_text(literal)) else {
        return false;
    };
    if op == CompareOp::Search {
        return super::text::search_form(&a).contains(super::text::search_form(&b).as_ref());
    }
    // caseExact false: the caseless forms (NFC + case folding), the same ones the
    // indexes are keyed by, so an index lookup and a filter never disagree.
    let (a, b) = if case_exact {
        (a, b)
    } else {
        (
            Cow::Owned(super::text::caseless(&a).into_owned()),
            Cow::Owned(super::text::caseless(&b).into_owned()),
        )
    };
    match op {
        CompareOp::Co => a.contains(b.as_ref()),
        CompareOp::Sw => a.starts_with(b.as_ref()),
        CompareOp::Ew => a.ends_with(b.as_ref()),
        _ => ordering_holds(op, a.as_ref().cmp(b.as_ref())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("test resource must be an object"),
        }
    }

    fn user() -> Map<String, Value> {
        obj(json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
            "id": "2819c223-7f76-453a-919d-413861904646",
            "externalId": "bjensen",
            "meta": {
                "resourceType": "User",
                "created": "2011-08-01T18:29:49.793Z",
                "lastModified": "2011-08-01T18:29:49.793+02:00",
                "version": "W/\"3\""
            },
            "userName": "Bjensen@Example.com",
            "name": {"familyName": "Jensen", "givenName": "Barbara"},
            "title": "Tour Guide",
            "active": true,
            "emails": [
                {"value": "bjensen@example.com", "type": "work", "primary": true},
                {"value": "babs@jensen.org", "type": "home", "primary": "False"}
            ],
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                "department": "Tour Operations",
                "employeeNumber": "701984",
                "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}
            }
        }))
    }

    fn group() -> Map<String, Value> {
        obj(json!({
            "id": "e9e30dba-f08f-4109-8486-d5c6a331660a",
            "displayName": "Tour Guides",
            "members": [
                {"value": "2819c223-7f76-453a-919d-413861904646", "type": "User"},
                {"value": "902c246b-6245-4190-8e05-00816be7344a", "type": "User"}
            ]
        }))
    }

    fn user_matches(f: &str) -> bool {
        let filter = parse(f).unwrap_or_else(|e| panic!("{f}: {e}"));
        validate(&filter, ResourceType::User).unwrap_or_else(|e| panic!("{f}: {e}"));
        matches(&filter, ResourceType::User, &user())
    }

    fn user_invalid(f: &str) -> ScimError {
        match parse(f).and_then(|filter| validate(&filter, ResourceType::User)) {
            Ok(()) => panic!("{f} should be refused"),
            Err(e) => e,
        }
    }

    fn cmp(path: &str, op: CompareOp, value: Value) -> Filter {
        Filter::Compare {
            path: AttrPath::parse(path).unwrap(),
            op,
            value,
        }
    }

    #[test]
    fn parses_a_simple_comparison() {
        assert_eq!(
            parse(r#"userName eq "bjensen""#).unwrap(),
            cmp("userName", CompareOp::Eq, json!("bjensen"))
        );
    }

    #[test]
    fn keywords_and_operators_are_case_insensitive() {
        let f = parse(r#"userName EQ "a" AND Not (title Pr) oR active Eq TRUE"#).unwrap();
        let want = Filter::Or(
            Box::new(Filter::And(
                Box::new(cmp("userName", CompareOp::Eq, json!("a"))),
                Box::new(Filter::Not(Box::new(Filter::Present(
                    AttrPath::parse("title").unwrap(),
                )))),
            )),
            Box::new(cmp("active", CompareOp::Eq, json!(true))),
        );
        assert_eq!(f, want);
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let f = parse("title pr or userName pr and active pr").unwrap();
        assert!(matches!(f, Filter::Or(_, ref b) if matches!(**b, Filter::And(_, _))));
    }

    #[test]
    fn parentheses_override_precedence() {
        let f = parse("(title pr or userName pr) and active pr").unwrap();
        assert!(matches!(f, Filter::And(ref a, _) if matches!(**a, Filter::Or(_, _))));
    }

    #[test]
    fn not_binds_tighter_than_and() {
        let f = parse("not (title pr) and active pr").unwrap();
        assert!(matches!(f, Filter::And(ref a, _) if matches!(**a, Filter::Not(_))));
    }

    #[test]
    fn parses_values_of_every_kind() {
        for (text, value) in [
            (r#""a\"b\\c\u00e9""#, json!("a\"b\\c\u{e9}")),
            ("42", json!(42)),
            ("-1.5e3", json!(-1500.0)),
            ("true", json!(true)),
            ("false", json!(false)),
            ("null", Value::Null),
        ] {
            let f = parse(&format!("title eq {text}")).unwrap();
            assert_eq!(f, cmp("title", CompareOp::Eq, value), "{text}");
        }
    }

    #[test]
    fn parses_value_paths() {
        let f = parse(r#"emails[type eq "work" and value co "@example.com"]"#).unwrap();
        match f {
            Filter::ValuePath { path, filter } => {
                assert_eq!(path.attr, "emails");
                assert!(matches!(*filter, Filter::And(_, _)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_urn_qualified_paths() {
        let f = parse(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "x""#,
        )
        .unwrap();
        match f {
            Filter::Compare { path, .. } => {
                assert_eq!(
                    path.urn.as_deref(),
                    Some(super::super::schema::ENTERPRISE_USER_URN)
                );
                assert_eq!(path.attr, "department");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_malformed_filters_with_invalid_filter() {
        for f in [
            "",
            "   ",
            "userName",
            "userName eq",
            r#"userName zz "x""#,
            r#"userName eq "x" and"#,
            r#"(userName eq "x""#,
            r#"userName eq "x")"#,
            r#"emails[type eq "work""#,
            r#"emails[type eq "work"]]"#,
            r#"userName eq "unterminated"#,
            r#"userName eq "bad \q escape""#,
            "userName eq bjensen",
            "userName eq 1.2.3",
            r#"userName eq "x" userName eq "y""#,
            r#"emails[type[value eq "x"]]"#,
            "userName eq 'single'",
            "not",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User pr",
        ] {
            let e = parse(f).expect_err(f);
            assert_eq!(e.status, 400, "{f}");
            assert_eq!(
                e.scim_type,
                Some(super::super::error::ScimType::InvalidFilter),
                "{f}"
            );
            assert!(!e.detail.is_empty());
        }
    }

    #[test]
    fn error_detail_says_what_was_expected() {
        let e = parse(r#"userName equals "x""#).unwrap_err();
        assert!(
            e.detail.contains("unknown operator 'equals'"),
            "{}",
            e.detail
        );
    }

    #[test]
    fn refuses_filters_longer_than_the_limit() {
        let long = format!(r#"userName eq "{}""#, "a".repeat(MAX_FILTER_LEN));
        assert!(parse(&long).unwrap_err().detail.contains("limit"));
    }

    #[test]
    fn refuses_nesting_deeper_than_the_limit() {
        let ok = format!(
            "{}title pr{}",
            "(".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert!(parse(&ok).is_ok());
        let deep = format!(
            "{}title pr{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert!(parse(&deep).unwrap_err().detail.contains("deeper"));
        let nots = format!("{}(title pr)", "not ".repeat(MAX_NESTING + 1));
        assert!(parse(&nots).is_err());
        assert!(parse(&"(".repeat(4000)).is_err());
    }

    #[test]
    fn long_or_chain_within_the_limit_evaluates() {
        let mut f = String::from("title pr");
        while f.len() < MAX_FILTER_LEN - 12 {
            f.push_str(" or title pr");
        }
        let filter = parse(&f).unwrap();
        validate(&filter, ResourceType::User).unwrap();
        assert!(matches(&filter, ResourceType::User, &user()));
    }

    /// Deterministic pseudo-random input (xorshift) must never panic the parser or
    /// the evaluator, whatever bytes or token soup it is fed.
    #[test]
    fn garbage_never_panics() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        const PIECES: &[&str] = &[
            "(",
            ")",
            "[",
            "]",
            " ",
            "\"",
            "\\",
            "not",
            "and",
            "or",
            "eq",
            "pr",
            "gt",
            "co",
            "emails",
            "members",
            "value",
            "type",
            ".",
            ":",
            "urn:ietf:params:scim:schemas:",
            "name.familyName",
            "\"x\"",
            "1",
            "-",
            "e",
            "true",
            "null",
            "é",
            "\u{0}",
            "meta.lastModified",
            "\"2020-01-01T00:00:00Z\"",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:",
        ];
        let resource = user();
        for round in 0..20_000 {
            let input: String = if round % 2 == 0 {
                let len = (next() % 64) as usize;
                let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                let n = (next() % 16) as usize;
                (0..n)
                    .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                    .collect::<Vec<_>>()
                    .join(if next() % 2 == 0 { " " } else { "" })
            };
            if let Ok(filter) = parse(&input) {
                let _ = validate(&filter, ResourceType::User);
                let _ = matches(&filter, ResourceType::User, &resource);
                let _ = matches(&filter, ResourceType::Group, &group());
            }
            let _ = parse_value_path(&input);
        }
    }

    #[test]
    fn pathological_input_is_refused_quickly() {
        for input in [
            "(".repeat(MAX_FILTER_LEN),
            "[".repeat(MAX_FILTER_LEN),
            "not ".repeat(1000),
            format!("emails{}", "[".repeat(2000)),
            "\"".repeat(MAX_FILTER_LEN),
            "\\".repeat(MAX_FILTER_LEN),
        ] {
            assert!(parse(&input).is_err(), "{}", &input[..20]);
        }
    }

    #[test]
    fn string_comparison_ignores_case_unless_case_exact() {
        assert!(user_matches(r#"userName eq "bjensen@example.com""#));
        assert!(user_matches(r#"title co "GUIDE""#));
        // externalId is caseExact.
        assert!(user_matches(r#"externalId eq "bjensen""#));
        assert!(!user_matches(r#"externalId eq "BJENSEN""#));
        assert!(!user_matches(
            r#"id eq "2819C223-7F76-453A-919D-413861904646""#
        ));
    }

    #[test]
    fn substring_operators() {
        assert!(user_matches(r#"userName sw "bjen""#));
        assert!(user_matches(r#"userName ew "example.com""#));
        assert!(user_matches(r#"userName co "@""#));
        assert!(!user_matches(r#"userName sw "example""#));
    }

    #[test]
    fn ordering_on_strings() {
        assert!(user_matches(r#"title gt "a""#));
        assert!(user_matches(r#"title lt "Z""#));
        assert!(user_matches(r#"title ge "tour guide""#));
        assert!(user_matches(r#"title le "tour guide""#));
    }

    #[test]
    fn sub_attribute_comparison() {
        assert!(user_matches(r#"name.familyName eq "jensen""#));
        assert!(user_matches(r#"NAME.FAMILYNAME eq "Jensen""#));
        assert!(!user_matches(r#"name.givenName eq "Jensen""#));
    }

    #[test]
    fn multi_valued_matches_if_any_value_does() {
        assert!(user_matches(r#"emails.type eq "home""#));
        assert!(user_matches(r#"emails.value ew "jensen.org""#));
    }

    #[test]
    fn multi_valued_complex_without_sub_attribute_compares_value() {
        assert!(user_matches(r#"emails co "@jensen.org""#));
        assert!(!user_matches(r#"emails co "@nowhere""#));
    }

    #[test]
    fn value_path_requires_one_element_to_satisfy_all_conditions() {
        assert!(user_matches(
            r#"emails[type eq "work" and value co "@example.com"]"#
        ));
        // work is example.com, jensen.org is home: no single element has both.
        assert!(!user_matches(
            r#"emails[type eq "work" and value co "@jensen.org"]"#
        ));
        assert!(user_matches(
            r#"userName sw "b" and emails[not (type eq "work")]"#
        ));
    }

    #[test]
    fn urn_qualified_core_and_extension_attributes() {
        assert!(user_matches(
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bjensen@example.com""#
        ));
        assert!(user_matches(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "tour operations""#
        ));
        assert!(user_matches(
            r#"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq "26118915-6090-4610-87e4-49d8ca9f808d""#
        ));
        // Unqualified extension attributes are found too.
        assert!(user_matches(r#"employeeNumber eq "701984""#));
    }

    #[test]
    fn manager_compares_its_value_even_as_a_bare_id() {
        let filter = parse(r#"manager eq "m1""#).unwrap();
        validate(&filter, ResourceType::User).unwrap();
        let mut u = user();
        u.insert(
            super::super::schema::ENTERPRISE_USER_URN.into(),
            json!({"manager": "m1"}),
        );
        assert!(matches(&filter, ResourceType::User, &u));
    }

    #[test]
    fn boolean_eq_and_ne() {
        assert!(user_matches("active eq true"));
        assert!(!user_matches("active eq false"));
        assert!(user_matches("active ne false"));
    }

    #[test]
    fn booleans_stored_as_strings_compare_as_booleans() {
        assert!(user_matches("emails[primary eq false]"));
        assert!(user_matches(
            r#"emails[primary eq "False" and type eq "home"]"#
        ));
        let mut u = user();
        u.insert("active".into(), json!("True"));
        let f = parse("active eq true").unwrap();
        assert!(matches(&f, ResourceType::User, &u));
    }

    #[test]
    fn ordering_operators_refused_on_booleans_and_complex() {
        for f in [
            "active gt true",
            "active co \"t\"",
            "name gt \"x\"",
            "name eq \"x\"",
            "x509Certificates.value gt \"AA\"",
        ] {
            assert_eq!(
                user_invalid(f).scim_type,
                Some(super::super::error::ScimType::InvalidFilter),
                "{f}"
            );
        }
    }

    #[test]
    fn unknown_attributes_are_invalid_filters() {
        assert!(user_invalid(r#"shoeSize eq "9""#)
            .detail
            .contains("shoeSize"));
        assert!(user_invalid(r#"name.nickname eq "x""#)
            .detail
            .contains("nickname"));
        assert!(user_invalid(r#"userName.value eq "x""#)
            .detail
            .contains("no sub-attributes"));
        assert!(user_invalid(r#"emails[shoe eq "x"]"#)
            .detail
            .contains("shoe"));
        assert!(user_invalid(r#"userName[value eq "x"]"#)
            .detail
            .contains("complex"));
        assert!(user_invalid(r#"urn:example:unknown:2.0:User:foo eq "x""#)
            .detail
            .contains("unknown attribute"));
    }

    #[test]
    fn wrong_value_kinds_are_invalid_filters() {
        user_invalid(r#"active eq "yes""#);
        user_invalid("title eq true");
        user_invalid("title co 3");
        user_invalid("title gt null");
        user_invalid(r#"meta.lastModified gt "yesterday""#);
    }

    #[test]
    fn datetime_compares_by_instant() {
        // lastModified is 2011-08-01T16:29:49.793Z (written with +02:00).
        assert!(user_matches(
            r#"meta.lastModified gt "2011-08-01T16:00:00Z""#
        ));
        assert!(user_matches(
            r#"meta.lastModified lt "2011-08-01T17:00:00Z""#
        ));
        assert!(user_matches(
            r#"meta.lastModified eq "2011-08-01T16:29:49.793Z""#
        ));
        assert!(user_matches(
            r#"meta.created ge "2011-08-01T18:29:49.793+00:00""#
        ));
        assert!(!user_matches(
            r#"meta.created gt "2011-08-01T18:29:49.793Z""#
        ));
    }

    #[test]
    fn the_admin_search_ignores_diacritics_where_co_does_not() {
        let mut u = user();
        u.insert("displayName".into(), json!("José Müller"));
        let search = |text: &str| Filter::Compare {
            path: AttrPath::parse("displayName").unwrap(),
            op: CompareOp::Search,
            value: json!(text),
        };
        for found in ["jose", "MULLER", "sé mü", "José"] {
            assert!(matches(&search(found), ResourceType::User, &u), "{found}");
        }
        assert!(!matches(&search("josef"), ResourceType::User, &u));
        assert!(!matches(
            &parse(r#"displayName co "jose""#).unwrap(),
            ResourceType::User,
            &u
        ));
        assert_eq!(search("x").to_string(), "displayName search \"x\"");
        assert!(
            parse(&search("x").to_string()).is_err(),
            "no filter text names it"
        );
    }

    #[test]
    fn present_means_not_null_and_not_empty() {
        assert!(user_matches("title pr"));
        assert!(user_matches("emails pr"));
        assert!(user_matches("name pr"));
        assert!(!user_matches("nickName pr"));
        let mut u = user();
        u.insert("nickName".into(), json!(""));
        u.insert("phoneNumbers".into(), json!([]));
        u.insert("displayName".into(), Value::Null);
        for f in ["nickName pr", "phoneNumbers pr", "displayName pr"] {
            assert!(!matches(&parse(f).unwrap(), ResourceType::User, &u), "{f}");
        }
    }

    #[test]
    fn ne_holds_for_absent_attributes() {
        assert!(user_matches(r#"nickName ne "x""#));
        assert!(user_matches(r#"title ne "x""#));
        assert!(!user_matches(r#"title ne "tour guide""#));
        // ne on a multi-valued attribute: no value is equal.
        assert!(!user_matches(r#"emails.type ne "work""#));
    }

    #[test]
    fn eq_null_means_absent() {
        assert!(user_matches("nickName eq null"));
        assert!(!user_matches("title eq null"));
        assert!(user_matches("title ne null"));
    }

    #[test]
    fn numbers_compare_numerically_with_strings_as_text() {
        // employeeNumber is a string attribute: a number literal compares as text.
        assert!(user_matches("employeeNumber eq 701984"));
        assert!(user_matches(r#"employeeNumber sw "70""#));
    }

    #[test]
    fn entra_group_membership_check() {
        let f = parse(
            r#"id eq "e9e30dba-f08f-4109-8486-d5c6a331660a" and members[value eq "902c246b-6245-4190-8e05-00816be7344a"]"#,
        )
        .unwrap();
        validate(&f, ResourceType::Group).unwrap();
        assert!(matches(&f, ResourceType::Group, &group()));
        let f = parse(
            r#"id eq "e9e30dba-f08f-4109-8486-d5c6a331660a" and members[value eq "somebody-else"]"#,
        )
        .unwrap();
        assert!(!matches(&f, ResourceType::Group, &group()));
    }

    #[test]
    fn group_display_name_filter() {
        let f = parse(r#"displayName eq "tour guides""#).unwrap();
        validate(&f, ResourceType::Group).unwrap();
        assert!(matches(&f, ResourceType::Group, &group()));
        assert!(validate(&parse(r#"userName eq "x""#).unwrap(), ResourceType::Group).is_err());
    }

    #[test]
    fn unvalidated_filter_on_unknown_attribute_matches_nothing() {
        let f = parse(r#"shoeSize eq "9""#).unwrap();
        assert!(!matches(&f, ResourceType::User, &user()));
    }

    #[test]
    fn element_filter_for_patch() {
        let emails = ResourceType::User.find_attr(None, "emails").unwrap().def;
        let f = parse(r#"type eq "WORK""#).unwrap();
        validate_element(&f, emails).unwrap();
        assert!(matches_element(&f, emails, &json!({"type": "work"})));
        assert!(!matches_element(&f, emails, &json!({"type": "home"})));
        assert!(!matches_element(&f, emails, &json!("work")));
    }

    #[test]
    fn entra_value_path_with_sub_attribute_comparison() {
        let f = parse(r#"emails[type eq "work"].value eq "bjensen@example.com""#).unwrap();
        validate(&f, ResourceType::User).unwrap();
        assert!(matches!(&f, Filter::ValuePath { .. }));
        assert!(user_matches(
            r#"emails[type eq "work"].value eq "BJENSEN@example.com""#
        ));
        // The home address exists, but not as the work email.
        assert!(!user_matches(
            r#"emails[type eq "work"].value eq "babs@jensen.org""#
        ));
        assert!(user_matches(
            r#"emails[type eq "home"].value ew "jensen.org" and userName sw "bj""#
        ));
        assert!(user_matches(r#"emails[type eq "work"].value pr"#));
        assert!(user_invalid(r#"emails[type eq "work"].nope eq "x""#)
            .detail
            .contains("nope"));
        assert_eq!(
            parse(r#"emails[type eq "work"].value.x eq "y""#)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            parse(r#"emails[type eq "work"].value"#).unwrap_err().status,
            400
        );
    }

    #[test]
    fn value_path_for_patch_returns_the_rest() {
        let (path, filter, rest) = parse_value_path(r#"emails[type eq "work"].value"#).unwrap();
        assert_eq!(path.attr, "emails");
        assert_eq!(filter, cmp("type", CompareOp::Eq, json!("work")));
        assert_eq!(rest, ".value");
        let (_, _, rest) = parse_value_path(r#"members[value eq "a]b"]"#).unwrap();
        assert_eq!(rest, "");
        assert!(parse_value_path("emails").is_err());
    }
}
