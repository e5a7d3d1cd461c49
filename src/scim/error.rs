//! `ScimError`: the one error type of the SCIM core. It carries what RFC 7644 §3.12
//! puts in an error document (HTTP status, `scimType`, `detail`) and nothing about
//! how it is sent; the HTTP layer renders it.

use serde_json::{json, Value};
use std::fmt;

/// The `scimType` values of RFC 7644 §3.12.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimType {
    /// `invalidFilter` (400): the filter syntax is wrong, or it names an attribute or applies
    /// an operator the schema does not allow (RFC 7644 §3.4.2.2).
    InvalidFilter,
    /// `tooMany`: the request asks for more than the server will do (RFC 7644 §3.12); the
    /// bridge sends it with 413 when a Bulk request holds more than `maxOperations`
    /// (RFC 7644 §3.7.3).
    TooMany,
    /// `uniqueness` (409): the value would duplicate a unique attribute such as a User's
    /// `userName` (RFC 7644 §3.3, §3.5.1).
    Uniqueness,
    /// `mutability` (400): the request changes a `readOnly` or `immutable` attribute
    /// (RFC 7643 §7, RFC 7644 §3.5.2).
    Mutability,
    /// `invalidSyntax` (400): the body is not valid JSON or not the message structure the
    /// endpoint expects (RFC 7644 §3.12).
    InvalidSyntax,
    /// `invalidPath` (400): a PATCH `path` is malformed or names no attribute of the schema
    /// (RFC 7644 §3.5.2).
    InvalidPath,
    /// `noTarget` (400): a PATCH `path` with a value filter matched no value, where the
    /// operation needs one (RFC 7644 §3.5.2.2, §3.5.2.3).
    NoTarget,
    /// `invalidValue` (400): a required value is missing or a value has the wrong type or
    /// form for its attribute (RFC 7644 §3.12).
    InvalidValue,
    /// `invalidVers` (400): the SCIM protocol version is not supported (RFC 7644 §3.12);
    /// defined for completeness, the bridge does not send it.
    InvalidVers,
    /// `sensitive` (403): the request put confidential data in the URI (RFC 7644 §3.12,
    /// §7.5.2); defined for completeness, the bridge does not send it.
    Sensitive,
    /// RFC 9865 §2.3: the `cursor` is not one this service provider issued.
    InvalidCursor,
}

impl ScimType {
    /// The `scimType` string as RFC 7644 §3.12 (and RFC 9865 §2.3) spells it, e.g.
    /// `"invalidValue"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScimType::InvalidFilter => "invalidFilter",
            ScimType::TooMany => "tooMany",
            ScimType::Uniqueness => "uniqueness",
            ScimType::Mutability => "mutability",
            ScimType::InvalidSyntax => "invalidSyntax",
            ScimType::InvalidPath => "invalidPath",
            ScimType::NoTarget => "noTarget",
            ScimType::InvalidValue => "invalidValue",
            ScimType::InvalidVers => "invalidVers",
            ScimType::Sensitive => "sensitive",
            ScimType::InvalidCursor => "invalidCursor",
        }
    }
}

/// A SCIM protocol error: status, optional scimType and a human-readable detail that
/// never contains internals (paths, stack traces, database messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// The HTTP status code (400, 404, 409, 412, 413, 500, ...); the error document carries
    /// it as a string (RFC 7644 §3.12).
    pub status: u16,
    /// The `scimType` detail code; RFC 7644 §3.12 defines them for 400 responses (and 413
    /// `tooMany`), so other statuses carry `None`.
    pub scim_type: Option<ScimType>,
    /// The human-readable `detail`: says what was wrong and how to fix it; never file paths,
    /// database messages or other internals.
    pub detail: String,
}

/// The schema URN of an error response (RFC 7644 §3.12).
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

impl ScimError {
    /// An error with any status, `scimType` and detail.
    pub fn new(status: u16, scim_type: Option<ScimType>, detail: impl Into<String>) -> Self {
        ScimError {
            status,
            scim_type,
            detail: detail.into(),
        }
    }
    /// 400 with a scimType.
    pub fn bad(scim_type: ScimType, detail: impl Into<String>) -> Self {
        Self::new(400, Some(scim_type), detail)
    }
    /// 400 `invalidValue` (RFC 7644 §3.12).
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidValue, detail)
    }
    /// 400 `invalidSyntax` (RFC 7644 §3.12).
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidSyntax, detail)
    }
    /// 400 `invalidFilter` (RFC 7644 §3.4.2.2, §3.12).
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidFilter, detail)
    }
    /// 400 `invalidPath` (RFC 7644 §3.5.2, §3.12).
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::InvalidPath, detail)
    }
    /// 400 `noTarget` (RFC 7644 §3.5.2, §3.12).
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::NoTarget, detail)
    }
    /// 400 `mutability` (RFC 7644 §3.12).
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::bad(ScimType::Mutability, detail)
    }
    /// 404 without a `scimType`: the resource (or endpoint) does not exist (RFC 7644 §3.12).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(404, None, detail)
    }
    /// 409 `uniqueness` (RFC 7644 §3.3, §3.12).
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(409, Some(ScimType::Uniqueness), detail)
    }
    /// 412 without a `scimType`: an `If-Match` version did not match the resource's current
    /// ETag (RFC 7644 §3.14).
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(412, None, detail)
    }
    /// 500 with a fixed detail that reveals nothing; the cause goes to the server log only.
    pub fn internal() -> Self {
        Self::new(500, None, "internal error; the server log has the details")
    }

    /// The RFC 7644 §3.12 error document.
    pub fn to_json(&self) -> Value {
        let mut doc = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            doc["scimType"] = Value::String(t.as_str().to_owned());
        }
        doc
    }
}

impl fmt::Display for ScimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scim_type {
            Some(t) => write!(f, "{} {}: {}", self.status, t.as_str(), self.detail),
            None => write!(f, "{}: {}", self.status, self.detail),
        }
    }
}

impl std::error::Error for ScimError {}

/// The result type of every fallible function of the SCIM core.
pub type ScimResult<T> = Result<T, ScimError>;
