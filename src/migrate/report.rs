//! The typed results of migration steps: progress reports, the push's plan and
//! report, the migration status, the verification report and its differences. The
//! CLI, the admin page and the control wire render or carry these values; their serde
//! form is what `--json` prints and what crosses the control socket. Knows nothing
//! of the edges.

use crate::plural::count;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scim::schema::ResourceType;
use crate::store::{MigrationState, Phase};

/// Where a long migration step is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
pub(crate) enum Progress {
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
    /// Users whose manager was set once every user had a target id.
    Managers { done: u64, total: u64 },
    /// Resources of one type listed from the target (to match or verify in memory).
    #[serde(rename_all = "camelCase")]
    Listing {
        resource_type: ResourceType,
        done: u64,
        total: u64,
    },
    /// A request to the target is retried after `wait_ms`, for `reason`.
    #[serde(rename_all = "camelCase")]
    Retrying { reason: String, wait_ms: u64 },
    /// A long step is still running (sent every few seconds so that nobody waiting
    /// on it mistakes silence for a hang).
    Working { step: String },
    /// A cut-over drained the mirror to zero lag.
    Drained,
    /// A step runs inside the server, which goes on with it if the command that
    /// asked for it is interrupted (sent by the control socket, never by a step the
    /// CLI runs itself).
    InServer,
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
            Progress::Managers { done, total } => write!(f, "managers: {done}/{total}"),
            Progress::Listing {
                resource_type,
                done,
                total,
            } => write!(
                f,
                "listing the target's {}: {done}/{total}",
                resource_type.endpoint()
            ),
            Progress::Retrying { reason, wait_ms } => {
                write!(f, "retrying in {:.1} s: {reason}", *wait_ms as f64 / 1000.0)
            }
            Progress::Working { step } => write!(f, "still working: {step}"),
            Progress::Drained => f.write_str("drained"),
            Progress::InServer => f.write_str(
                "this runs inside the server: interrupting this command does not stop it \
                 (`scimbridge migrate status` follows it, `scimbridge migrate abort` stops it)",
            ),
        }
    }
}

/// Receives progress reports (a terminal line, the admin page's job, the wire).
pub(crate) type ProgressSink<'a> = &'a mut (dyn FnMut(Progress) + Send);

/// How many resources of one type a dry run would create and update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlanCounts {
    pub total: u64,
    pub create: u64,
    pub update: u64,
}

/// What a push would do (`--dry-run`): nothing was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PushPlan {
    /// The normalised target base URL.
    pub target: String,
    /// Whether the target offers Bulk (users are then created in Bulk requests).
    pub bulk: bool,
    pub users: PlanCounts,
    pub groups: PlanCounts,
    pub memberships: u64,
    /// What the target announced.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Attributes the directory holds that the target's /Schemas or /ResourceTypes do
    /// not define (e.g. `title`, `urn:…:enterprise:2.0:User:department`): the push
    /// refuses to start unless `--omit-unsupported` accepts leaving them out.
    #[serde(default)]
    pub unsupported: Vec<String>,
    /// Every resource by name with what the push would do and why.
    #[serde(default)]
    pub preview: Vec<PreviewItem>,
    /// Groups hosted provisioning will not manage (the policy's protected groups):
    /// pushed like the others, listed so that the admin knows.
    #[serde(default)]
    pub protected_groups: Vec<String>,
    /// The readiness check's blockers (their messages): a dry run plans anyway, the
    /// push refuses until they are fixed.
    #[serde(default)]
    pub blockers: Vec<String>,
    /// Matchers the target refused (e.g. `externalId eq` answered 400 invalidFilter),
    /// with the target's detail; matching went on without them.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Accounts only the target has (by type and name): the push leaves them alone.
    /// Empty when the target cannot be listed (not looked for).
    #[serde(default)]
    pub only_on_target: Vec<String>,
    /// Groups the target already holds that the push will change: renamed to the
    /// directory's displayName, and members of ours removed (trial 8 item 7).
    #[serde(default)]
    pub group_changes: Vec<GroupChange>,
}

/// What a push will change in a group the target already holds (a dry run's plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GroupChange {
    /// The directory's displayName.
    pub name: String,
    /// The target's displayName, when it differs (the push replaces it).
    #[serde(default)]
    pub renamed_from: Option<String>,
    /// Members the target's group has that are matched users of this directory but
    /// not members here: the push removes them (by the target's userName).
    #[serde(default)]
    pub removed: Vec<String>,
    /// How many members the push adds.
    #[serde(default)]
    pub added: u64,
}

/// One resource of a preview: its name, the action and the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreviewItem {
    pub resource_type: ResourceType,
    /// userName or displayName.
    pub name: String,
    pub rule: MatchRule,
}

/// Which rule matched a local resource to a target resource, or that none did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum MatchRule {
    /// Already mapped by an earlier push (the journal).
    Journal,
    /// The same externalId on the target.
    ExternalId,
    /// The same userName, compared case-insensitively (RFC 7643 §4.1.1: userName is
    /// caseExact false) over the candidates the target returned.
    UserName,
    /// The same Group displayName (case-insensitive).
    DisplayName,
    /// The target refused a create with 409 uniqueness; the existing resource was
    /// found and matched.
    Uniqueness,
    /// A create whose answer was lost (5xx, timeout) had in fact been done: found by
    /// looking the resource up before creating it again.
    Recovered,
    /// No match: created.
    Created,
}

impl MatchRule {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MatchRule::Journal => "already pushed (journal)",
            MatchRule::ExternalId => "matched by externalId",
            MatchRule::UserName => "matched by userName (case-insensitive)",
            MatchRule::DisplayName => "matched by displayName",
            MatchRule::Uniqueness => "matched after 409 uniqueness",
            MatchRule::Recovered => "found after an uncertain create",
            MatchRule::Created => "created",
        }
    }
}

/// What the target announced in /ServiceProviderConfig, /Schemas and /ResourceTypes
/// (RFC 7643 §5–7, RFC 9865 for cursor paging), and what the push observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Capabilities {
    /// Bulk supported, with its limits (0 when not announced).
    pub bulk: bool,
    pub bulk_max_operations: u64,
    /// Largest request body in bytes (`bulk.maxPayloadSize`), applied to every
    /// request; 0 when not announced.
    pub max_payload: u64,
    pub patch: bool,
    pub filter: bool,
    /// Largest page the target serves (`filter.maxResults`); 0 when not announced.
    pub max_results: u64,
    /// RFC 9865 cursor paging announced.
    pub cursor: bool,
    /// /Schemas answered, with the schema ids it lists.
    pub schemas_read: bool,
    pub schemas: Vec<String>,
    /// /ResourceTypes answered, with the User extensions it lists.
    pub resource_types_read: bool,
    pub user_extensions: Vec<String>,
    /// Group membership changes are sent as whole-group PUTs (PATCH refused).
    pub members_by_put: bool,
}

impl Capabilities {
    /// One line per capability, for `migrate status` and the page.
    pub(crate) fn lines(&self) -> Vec<String> {
        let yes = |b: bool| if b { "yes" } else { "no" };
        let limit = |n: u64| {
            if n == 0 {
                "not announced".to_owned()
            } else {
                n.to_string()
            }
        };
        vec![
            format!(
                "bulk: {} (max operations {}, max payload {})",
                yes(self.bulk),
                limit(self.bulk_max_operations),
                limit(self.max_payload)
            ),
            format!(
                "filter: {} (max results {})",
                yes(self.filter),
                limit(self.max_results)
            ),
            format!("patch: {}", yes(self.patch)),
            format!("cursor paging: {}", yes(self.cursor)),
            format!(
                "schemas: {}",
                if self.schemas_read {
                    self.schemas.join(", ")
                } else {
                    "not readable".into()
                }
            ),
            format!(
                "user extensions: {}",
                if self.resource_types_read {
                    if self.user_extensions.is_empty() {
                        "none".into()
                    } else {
                        self.user_extensions.join(", ")
                    }
                } else {
                    "not readable".into()
                }
            ),
            format!(
                "group members sent by: {}",
                if self.members_by_put { "PUT" } else { "PATCH" }
            ),
        ]
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PushReport {
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
    /// How many resources each rule decided (created included).
    #[serde(default)]
    pub rules: Vec<(MatchRule, u64)>,
    /// Refused matchers and other notes, with the target's detail.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Accounts only the target has (names), left alone.
    #[serde(default)]
    pub only_on_target: Vec<String>,
    /// Attributes the target does not keep (omitted by choice or dropped by it).
    #[serde(default)]
    pub not_kept: Vec<String>,
    /// Created and updated by the earlier runs of this migration's push (`created`
    /// and `updated` are this run's).
    #[serde(default)]
    pub earlier_created: u64,
    #[serde(default)]
    pub earlier_updated: u64,
    /// Pushed resources the closing verification found held otherwise on the target
    /// (e.g. changed there by hand) and that were sent again ("User NAME", "Group
    /// NAME"); `differences` is what the verification after that found.
    #[serde(default)]
    pub repaired: Vec<String>,
}

/// The outcome of `migrate push`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub(crate) enum PushOutcome {
    /// A dry run's plan.
    Planned(Box<PushPlan>),
    /// A push, now mirroring.
    Pushed(PushReport),
}

/// How far the mirror is behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Lag {
    /// Change events not yet replayed to the target.
    pub events: u64,
    /// Seconds since the oldest of them.
    pub seconds: f64,
}

/// How long the oldest change not yet replayed may wait before the mirror counts as
/// behind (`MirrorHealth::Behind`): the mirror replays within a second when the
/// target answers, so this is a stall, not a busy moment.
pub(crate) const MIRROR_BEHIND_SECONDS: f64 = 30.0;

/// How the mirror is doing, for `migrate status`, the admin pages and /metrics.
/// Worst first: a stopped or failing mirror is said even when it is also behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub(crate) enum MirrorHealth {
    /// Not mirroring: before the push, during it, after the cut-over.
    #[default]
    Off,
    /// Replaying; nothing older than `MIRROR_BEHIND_SECONDS` waits.
    InStep,
    /// No failure, but a change has waited longer than `MIRROR_BEHIND_SECONDS`.
    Behind,
    /// The last attempts failed (the last error says why); `attempt` is the one
    /// under way or waited for (2 after the first failure). Each request is tried 8
    /// times with backoff (0.2 s doubling to 25.6 s), then the step starts again
    /// after a pause doubling from 0.25 s to 30 s, until the target answers.
    Failing { attempt: u32 },
    /// No target token is stored (a database restored from a backup, which leaves
    /// it out): nothing is replayed until `migrate push --token-file FILE`.
    NoToken,
}

impl MirrorHealth {
    /// What is wrong, in words ("failing: retrying (attempt 3)"); `None` when nothing is.
    pub(crate) fn problem(self) -> Option<String> {
        match self {
            MirrorHealth::Off | MirrorHealth::InStep => None,
            MirrorHealth::Behind => Some(format!(
                "behind: a change has waited more than {MIRROR_BEHIND_SECONDS:.0} s"
            )),
            MirrorHealth::Failing { attempt } => {
                Some(format!("failing: retrying (attempt {attempt})"))
            }
            MirrorHealth::NoToken => Some(
                "stopped: no target token is stored; resume with \
                 `scimbridge migrate push --token-file FILE`"
                    .into(),
            ),
        }
    }

    /// Failing or stopped (what `scimbridge_migration_error` reports).
    pub(crate) fn is_error(self) -> bool {
        matches!(self, MirrorHealth::Failing { .. } | MirrorHealth::NoToken)
    }
}

/// `migrate status`: where the migration stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MigrationStatus {
    pub phase: Phase,
    /// The phase in words ("not started", "cut over"), with what is wrong with the
    /// mirror ("verified, but the mirror is failing: retrying (attempt 2)").
    pub phase_text: String,
    /// How the mirror is doing.
    #[serde(default)]
    pub mirror: MirrorHealth,
    /// The persisted state without its secrets (no target token, no CA).
    pub state: MigrationState,
    pub lag: Lag,
    /// Resources mapped to a target id so far.
    pub mapped: u64,
    /// What the target announced, as the last push read it.
    #[serde(default)]
    pub capabilities: Option<Capabilities>,
    /// How many resources each matching rule decided in the last push.
    #[serde(default)]
    pub rules: Vec<(MatchRule, u64)>,
    /// What the directory holds now (what a push would send).
    #[serde(default)]
    pub directory: DirectoryCounts,
}

/// Users, groups and (group, member) rows in the directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DirectoryCounts {
    pub users: u64,
    pub groups: u64,
    pub memberships: u64,
}

/// `migrate check --to URL`: what the target can hold, read before any write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TargetCheck {
    /// The normalised target base URL.
    pub target: String,
    pub capabilities: Capabilities,
    /// Attributes of the directory the target's /Schemas or /ResourceTypes do not
    /// define.
    pub unsupported: Vec<String>,
    /// How many users and groups hold each of them (what leaving it out with
    /// `--omit-unsupported` would drop; trial 8 item 23).
    #[serde(default)]
    pub held_by: BTreeMap<String, u64>,
}

/// `migrate verify`: every difference between the directory and the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VerifyReport {
    pub differences: Vec<Difference>,
    pub count: u64,
    /// Accounts only the target has (owner, billing admin, break-glass), by name:
    /// left alone and not counted as differences.
    #[serde(default)]
    pub only_on_target: Vec<String>,
    /// Attributes the target does not keep (left out with `--omit-unsupported`, or
    /// observed to be dropped): reported once, not counted as differences.
    #[serde(default)]
    pub not_kept: Vec<String>,
    /// What could not be compared, and why (e.g. a target that refuses to list
    /// without a filter: duplicates and accounts only on the target not looked for).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One difference between the directory and the target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "DifferenceJson", from = "DifferenceJson")]
pub(crate) struct Difference {
    pub resource_type: ResourceType,
    /// The local id; `None` for a count difference.
    pub id: Option<String>,
    /// The userName or displayName, which is how an admin knows the resource.
    pub name: Option<String>,
    pub kind: DifferenceKind,
}

/// What differs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum DifferenceKind {
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
    /// A group's members differ: local members missing on the target and members
    /// of ours the target has that the directory does not (by name).
    Members {
        missing: Vec<String>,
        extra: Vec<String>,
    },
    /// The target holds several resources with the same (case-insensitive) userName
    /// or displayName: duplicates, by their target ids.
    #[serde(rename_all = "camelCase")]
    Duplicate { target_ids: Vec<String> },
}

impl Difference {
    /// The kind in a few words, for a table: "missing on the target", "attribute
    /// differs", "members differ", …
    pub(crate) fn kind_label(&self) -> &'static str {
        match &self.kind {
            DifferenceKind::NeverPushed => "never pushed",
            DifferenceKind::MissingOnTarget { .. } => "missing on the target",
            DifferenceKind::Attribute { .. } => "attribute differs",
            DifferenceKind::ExtraOnTarget { .. } => "more on the target",
            DifferenceKind::Members { .. } => "members differ",
            DifferenceKind::Duplicate { .. } => "duplicate on the target",
        }
    }

    /// The difference in words, as the Migration page lists it.
    pub(crate) fn listed(&self) -> crate::store::ListedDifference {
        crate::store::ListedDifference {
            resource_type: self.resource_type.name().to_owned(),
            name: self
                .name
                .clone()
                .or_else(|| self.id.clone())
                .unwrap_or_default(),
            kind: self.kind_label().to_owned(),
            attribute: match &self.kind {
                DifferenceKind::Attribute { attribute, .. } => Some(attribute.clone()),
                DifferenceKind::Members { .. } => Some("members".to_owned()),
                _ => None,
            },
            detail: self.sentence(),
        }
    }

    /// What differs, as a sentence ("title: local \"CEO\", target null").
    pub(crate) fn sentence(&self) -> String {
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
            } => {
                let name = self.resource_type.name();
                format!(
                    "the target has {}, the bridge {local_count}",
                    count(*target_count, name, &format!("{name}s"))
                )
            }
            DifferenceKind::Members { missing, extra } => {
                let mut parts = Vec::new();
                if !missing.is_empty() {
                    parts.push(format!(
                        "{} missing on the target ({})",
                        count(missing.len() as u64, "member", "members"),
                        list_some(missing)
                    ));
                }
                if !extra.is_empty() {
                    parts.push(format!(
                        "{} only on the target ({})",
                        count(extra.len() as u64, "member", "members"),
                        list_some(extra)
                    ));
                }
                parts.join("; ")
            }
            DifferenceKind::Duplicate { target_ids } => format!(
                "{} copies on the target (ids {})",
                target_ids.len(),
                target_ids.join(", ")
            ),
        }
    }
}

/// The first few names of a list, for a sentence.
fn list_some(names: &[String]) -> String {
    let mut s = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        s.push_str(&format!(", and {} more", names.len() - 5));
    }
    s
}

/// "User 0190…: title: local \"CEO\", target null".
/// For the audit (Activity): a push or verify that ran to its end but found the
/// target differing is not "done"; this is its reason, naming the first difference.
/// `None` when the target matches.
pub(crate) fn unverified(differences: &[Difference]) -> Option<String> {
    let first = differences.first()?;
    Some(format!(
        "the target differs from the directory: {} (first: {first}); \
         `scimbridge migrate verify` lists them",
        count(differences.len() as u64, "difference", "differences")
    ))
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.name, &self.id) {
            (Some(name), _) => write!(
                f,
                "{} {name}: {}",
                self.resource_type.name(),
                self.sentence()
            ),
            (None, Some(id)) => {
                write!(f, "{} {id}: {}", self.resource_type.name(), self.sentence())
            }
            (None, None) => write!(f, "{}: {}", self.resource_type.name(), self.sentence()),
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
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
            name: d.name,
            kind: d.kind,
        }
    }
}

impl From<DifferenceJson> for Difference {
    fn from(d: DifferenceJson) -> Difference {
        Difference {
            resource_type: d.resource_type,
            id: d.id,
            name: d.name,
            kind: d.kind,
        }
    }
}

/// `writeln!` into a `String` (which cannot fail).
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        use std::fmt::Write as _;
        let _ = writeln!($out, $($arg)*);
    }};
}

/// The attributes of the directory a target cannot hold, as `migrate check --to` and
/// a dry run print them (indented lines).
pub(crate) fn unsupported_text(unsupported: &[String], held_by: &BTreeMap<String, u64>) -> String {
    let mut out = String::new();
    if unsupported.is_empty() {
        w!(
            out,
            "  the target defines every attribute the directory holds"
        );
        return out;
    }
    w!(
        out,
        "  {} the target cannot hold (the push refuses unless --omit-unsupported):",
        count(unsupported.len() as u64, "attribute", "attributes")
    );
    for a in unsupported {
        match held_by.get(a) {
            Some(n) => w!(
                out,
                "    {a} (held by {})",
                count(*n, "resource", "resources")
            ),
            None => w!(out, "    {a}"),
        }
    }
    out
}

/// A dry run's plan as text: what `migrate push --dry-run` prints and the Migration
/// page shows (trial 8 item 20: the page showed the plan's JSON).
pub(crate) fn plan_text(plan: &PushPlan) -> String {
    let mut out = String::new();
    if !plan.blockers.is_empty() {
        w!(
            out,
            "The readiness check has {}; the push refuses until they are fixed \
             (`scimbridge migrate check` names who is concerned):",
            count(plan.blockers.len() as u64, "blocker", "blockers")
        );
        for b in &plan.blockers {
            w!(out, "  {b}");
        }
    }
    w!(out, "Plan (dry run, nothing was sent):");
    w!(out, "  target: {}", plan.target);
    for (name, c) in [("users: ", plan.users), ("groups:", plan.groups)] {
        w!(
            out,
            "  {name} {} ({} to create, {} to update)",
            c.total,
            c.create,
            c.update
        );
    }
    w!(out, "  memberships: {}", plan.memberships);
    w!(out, "  bulk: {}", if plan.bulk { "yes" } else { "no" });
    w!(out, "Target capabilities:");
    for l in plan.capabilities.lines() {
        w!(out, "  {l}");
    }
    out.push_str(&unsupported_text(&plan.unsupported, &BTreeMap::new()));
    for n in &plan.notes {
        w!(out, "  note: {n}");
    }
    let mut by_rule: std::collections::BTreeMap<MatchRule, Vec<&PreviewItem>> = Default::default();
    for p in &plan.preview {
        by_rule.entry(p.rule).or_default().push(p);
    }
    w!(out, "Preview by name:");
    for (rule, items) in &by_rule {
        w!(out, "  {} ({}):", rule.as_str(), items.len());
        for p in items.iter().take(PREVIEW_NAMES) {
            w!(out, "    {} {}", p.resource_type.name(), p.name);
        }
        if items.len() > PREVIEW_NAMES {
            w!(
                out,
                "    … and {} more (`migrate push --dry-run --json` lists them all)",
                items.len() - PREVIEW_NAMES
            );
        }
    }
    if !plan.protected_groups.is_empty() {
        w!(
            out,
            "  protected groups, pushed but not managed by hosted provisioning ({}):",
            plan.protected_groups.len()
        );
        for g in &plan.protected_groups {
            w!(out, "    {g}");
        }
    }
    // Trial 8 item 7: what the push changes in what the target already holds.
    if !plan.group_changes.is_empty() {
        w!(
            out,
            "Groups the target already holds that the push changes ({}; the directory wins):",
            plan.group_changes.len()
        );
        for c in plan.group_changes.iter().take(PREVIEW_NAMES) {
            let mut what = Vec::new();
            if let Some(from) = &c.renamed_from {
                what.push(format!("renamed from \"{from}\""));
            }
            if c.added > 0 {
                what.push(format!("{} added", count(c.added, "member", "members")));
            }
            if !c.removed.is_empty() {
                let shown: Vec<&str> = c.removed.iter().take(5).map(String::as_str).collect();
                let more = c.removed.len().saturating_sub(shown.len());
                what.push(format!(
                    "{} removed ({}{})",
                    count(c.removed.len() as u64, "member", "members"),
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                ));
            }
            w!(out, "    Group {}: {}", c.name, what.join("; "));
        }
        if plan.group_changes.len() > PREVIEW_NAMES {
            w!(
                out,
                "    … and {} more (`migrate push --dry-run --json` lists them all)",
                plan.group_changes.len() - PREVIEW_NAMES
            );
        }
    }
    if !plan.only_on_target.is_empty() {
        w!(
            out,
            "{} only on the target (left alone):",
            count(plan.only_on_target.len() as u64, "account", "accounts")
        );
        for o in plan.only_on_target.iter().take(PREVIEW_NAMES) {
            w!(out, "    {o}");
        }
        if plan.only_on_target.len() > PREVIEW_NAMES {
            w!(
                out,
                "    … and {} more (`migrate push --dry-run --json` lists them all)",
                plan.only_on_target.len() - PREVIEW_NAMES
            );
        }
    }
    out
}

/// Names shown per rule in a preview (all of them with --json).
pub(crate) const PREVIEW_NAMES: usize = 20;

/// One resource of the push's journal (`migrate id-map`): its id here and the id
/// the target gave it. A hosted service assigns its own ids (RFC 7643 §3.1: `id` is
/// the service provider's), so an identity provider that keeps the ids it was given
/// (Okta) must learn the new ones after the cut-over; this is the map to do it with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IdPair {
    pub resource_type: ResourceType,
    /// userName or displayName.
    pub name: String,
    /// The identity provider's own key for it, when it sent one.
    #[serde(default)]
    pub external_id: Option<String>,
    /// The id in this bridge: the one the identity provider holds today.
    pub id: String,
    /// The id on the target.
    pub target_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_keep_their_json_names_and_round_trip() {
        let d = Difference {
            resource_type: ResourceType::User,
            id: Some("u1".into()),
            name: Some("ada@example.com".into()),
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
        assert_eq!(v["name"], "ada@example.com");
        let back: Difference = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
        assert_eq!(
            d.to_string(),
            "User ada@example.com: title: local \"CEO\", target null"
        );
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
