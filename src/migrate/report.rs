//! The typed results of migration steps: progress reports, the push's plan and
//! report, the migration status, the verification report and its differences. The
//! CLI, the admin page and the control wire render or carry these values; their serde
//! form is what `--json` prints and what crosses the control socket. Knows nothing
//! of the edges.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scim::schema::ResourceType;
use crate::store::{MigrationState, Phase};

/// Where a long migration step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
pub enum Progress {
    /// Users pushed so far.
    Users { done: u64, total: u64 },
    /// Groups created (without members) so far.
    Groups { done: u64, total: u64 },
    /// Groups whose members were set so far.
    Memberships { done: u64, total: u64 },
    /// Resources of one type read back from the target.
    #[serde(rename_all = "camelCase")]
    Verify {
        resource_type: ResourceType,
        done: u64,
        total: u64,
    },
    /// A cut-over drained the mirror to zero lag.
    Drained,
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Progress::Users { done, total } => write!(f, "users: {done}/{total}"),
            Progress::Groups { done, total } => write!(f, "groups: {done}/{total}"),
            Progress::Memberships { done, total } => write!(f, "memberships: {done}/{total}"),
            Progress::Verify {
                resource_type,
                done,
                total,
            } => write!(f, "verify {}: {done}/{total}", resource_type.endpoint()),
            Progress::Drained => f.write_str("drained"),
        }
    }
}

/// Receives progress reports (a terminal line, the admin page's job, the wire).
pub type ProgressSink<'a> = &'a mut (dyn FnMut(Progress) + Send);

/// How many resources of one type a dry run would create and update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanCounts {
    pub total: u64,
    pub create: u64,
    pub update: u64,
}

/// What a push would do (`--dry-run`): nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushPlan {
    /// The normalised target base URL.
    pub target: String,
    /// Whether the target offers Bulk (users are then created 50 at a time).
    pub bulk: bool,
    pub users: PlanCounts,
    pub groups: PlanCounts,
    pub memberships: u64,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushReport {
    /// Users and groups in the directory.
    pub users: u64,
    pub groups: u64,
    /// Resources created and updated on the target.
    pub created: u64,
    pub updated: u64,
    /// HTTP requests sent, and how many of them answered 429.
    pub requests: u64,
    pub throttled: u64,
    /// What reading the target back found; empty when it matches.
    pub differences: Vec<Difference>,
}

/// The outcome of `migrate push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum PushOutcome {
    /// A dry run's plan.
    Planned(PushPlan),
    /// A push, now mirroring.
    Pushed(PushReport),
}

/// How far the mirror is behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Lag {
    /// Change events not yet replayed to the target.
    pub events: u64,
    /// Seconds since the oldest of them.
    pub seconds: f64,
}

/// `migrate status`: where the migration stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    pub phase: Phase,
    /// The phase in words ("not started", "cut over").
    pub phase_text: String,
    /// The persisted state without its secrets (no target token, no CA).
    pub state: MigrationState,
    pub lag: Lag,
    /// Resources mapped to a target id so far.
    pub mapped: u64,
}

/// `migrate verify`: every difference between the directory and the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub differences: Vec<Difference>,
    pub count: u64,
}

/// One difference between the directory and the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "DifferenceJson", from = "DifferenceJson")]
pub struct Difference {
    pub resource_type: ResourceType,
    /// The local id; `None` for a count difference.
    pub id: Option<String>,
    pub kind: DifferenceKind,
}

/// What differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DifferenceKind {
    /// The resource has no target id: it was never pushed.
    NeverPushed,
    /// The target answers 404 for the mapped id.
    #[serde(rename_all = "camelCase")]
    MissingOnTarget { target_id: String },
    /// An attribute's value differs (SCIM values, as JSON).
    Attribute {
        attribute: String,
        local: Value,
        target: Value,
    },
    /// The target holds more resources of the type than the bridge.
    #[serde(rename_all = "camelCase")]
    ExtraOnTarget { target_count: u64, local_count: u64 },
}

impl Difference {
    /// What differs, as a sentence ("title: local \"CEO\", target null").
    pub fn sentence(&self) -> String {
        match &self.kind {
            DifferenceKind::NeverPushed => "not on the target (never pushed)".into(),
            DifferenceKind::MissingOnTarget { target_id } => {
                format!("missing on the target (target id {target_id})")
            }
            DifferenceKind::Attribute {
                attribute,
                local,
                target,
            } => format!("{attribute}: local {local}, target {target}"),
            DifferenceKind::ExtraOnTarget {
                target_count,
                local_count,
            } => format!(
                "the target has {target_count} {}s, the bridge {local_count}",
                self.resource_type.name()
            ),
        }
    }
}

/// "User 0190…: title: local \"CEO\", target null".
impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{} {id}: {}", self.resource_type.name(), self.sentence()),
            None => write!(f, "{}: {}", self.resource_type.name(), self.sentence()),
        }
    }
}

/// The JSON form of a difference: the typed kind plus the sentence, under the
/// names `migrate verify --json` has always printed.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DifferenceJson {
    resource_type: ResourceType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_deserializing)]
    difference: String,
    #[serde(flatten)]
    kind: DifferenceKind,
}

impl From<Difference> for DifferenceJson {
    fn from(d: Difference) -> DifferenceJson {
        DifferenceJson {
            difference: d.sentence(),
            resource_type: d.resource_type,
            id: d.id,
            kind: d.kind,
        }
    }
}

impl From<DifferenceJson> for Difference {
    fn from(d: DifferenceJson) -> Difference {
        Difference {
            resource_type: d.resource_type,
            id: d.id,
            kind: d.kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_keep_their_json_names_and_round_trip() {
        let d = Difference {
            resource_type: ResourceType::User,
            id: Some("u1".into()),
            kind: DifferenceKind::Attribute {
                attribute: "title".into(),
                local: Value::from("CEO"),
                target: Value::Null,
            },
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["resourceType"], "User");
        assert_eq!(v["id"], "u1");
        assert_eq!(v["difference"], "title: local \"CEO\", target null");
        assert_eq!(v["kind"], "attribute");
        let back: Difference = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
        assert_eq!(d.to_string(), "User u1: title: local \"CEO\", target null");
    }

    #[test]
    fn progress_reads_as_a_line() {
        let p = Progress::Verify {
            resource_type: ResourceType::Group,
            done: 3,
            total: 9,
        };
        assert_eq!(p.to_string(), "verify /Groups: 3/9");
        let back: Progress = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
