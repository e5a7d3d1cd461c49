//! The export file: JSON Lines, streamed from one read snapshot in constant memory.
//! Line 1 is a manifest, then every User, every Group, every membership, and a
//! trailer with the SHA-256 of all preceding bytes. See docs/EXPORT_FORMAT.md.

use std::io::{BufRead, Write};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::scim::error::ScimError;
use crate::scim::resource::{Attributes, Meta, RequestLimits, UnknownAttributes};
use crate::scim::schema::ResourceType;
use crate::store::{
    hex, ImportItem, RawResource, Snapshot, StoreError, StoreResult, StoredResource,
};

mod check;

pub(crate) const FORMAT_NAME: &str = "scimbridge-export";
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Longest line accepted on import (a resource is far smaller).
pub(crate) const MAX_LINE: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub(crate) struct Counts {
    pub(crate) users: u64,
    pub(crate) groups: u64,
    pub(crate) memberships: u64,
}

/// Line 1 of an export file (docs/EXPORT_FORMAT.md): the format name
/// (`scimbridge-export`) and version (1), the scimbridge version that wrote it, when
/// (`exportedAt`, RFC 3339 UTC) and how many users, groups and memberships follow
/// (`counts`, each a count of lines). [`verify`] returns it once the whole file checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub(crate) format: String,
    pub(crate) format_version: u32,
    /// The scimbridge version that wrote the file.
    pub(crate) source_version: String,
    pub(crate) exported_at: Timestamp,
    pub(crate) counts: Counts,
}

/// One line of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub(crate) enum Line {
    #[serde(rename = "manifest")]
    Manifest(Manifest),
    User(Record),
    Group(Record),
    #[serde(rename = "membership", rename_all = "camelCase")]
    Membership {
        group: String,
        member: String,
        member_type: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display: Option<String>,
    },
    #[serde(rename = "trailer")]
    Trailer {
        sha256: String,
        lines: u64,
    },
}

/// A resource as exported: id, meta and the attributes as stored (canonical names,
/// extension attributes under their URN). No secrets exist to leave out: passwords
/// are never stored and tokens are not part of the directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) id: String,
    pub(crate) meta: Meta,
    pub(crate) attributes: Attributes,
}

/// Why writing, verifying or importing an export file failed. The `Display` text is
/// the message the CLI prints: it names the line or file and the cause.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The database could not be read for the export or written by the import (the
    /// store's message, with its remedy).
    #[error("{0}")]
    Store(#[from] StoreError),
    /// Reading or writing the file's bytes failed (disk full, closed pipe, read error).
    #[error("writing the export failed: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a valid export: a line over 4 MiB, a line without its final
    /// newline, a record that is not JSON of the format, a missing or second manifest,
    /// another format or version, an unknown member type, data after the trailer, a
    /// trailer whose line count or SHA-256 does not match, no trailer (truncated), or
    /// counts that differ from the manifest's.
    #[error("line {line}: {reason}")]
    Invalid {
        /// The 1-based line number; 0 when the file is empty or the store refused a
        /// batch of records during import.
        line: u64,
        /// What is wrong there, in words for the admin.
        reason: String,
    },
    /// The file cannot be opened.
    /// (Its cause is part of the message, not a `source`: printed as an error
    /// chain, it would be said twice.)
    #[error("cannot read {}: {cause}", .path.display())]
    Open {
        /// The file that was asked for.
        path: std::path::PathBuf,
        /// Why it could not be opened (not found, permission denied, ...).
        cause: std::io::Error,
    },
    /// The file does not verify (damaged, tampered, truncated, another format).
    #[error("{} is not a valid export: {problem}", .path.display())]
    NotAnExport {
        /// The file that was checked.
        path: std::path::PathBuf,
        /// The first problem [`verify`] found (usually [`ExportError::Invalid`]);
        /// part of the message, not a `source`, so a chain does not repeat it.
        problem: Box<ExportError>,
    },
    /// Import only restores into an empty bridge.
    #[error("the directory is not empty: import restores an export into an empty bridge (use a new data directory)")]
    NotEmpty,
    /// The import transaction failed and was rolled back.
    #[error("import failed, nothing was imported: {0}")]
    ImportFailed(StoreError),
    /// Records a create would refuse: each is listed (up to [`MAX_LISTED`], then a
    /// count) and nothing is imported.
    #[error("{}", refused_text(.refused, *.more))]
    Refused {
        /// The refused records, in file order (at most [`MAX_LISTED`]).
        refused: Vec<RefusedRecord>,
        /// Refused records beyond the listed ones.
        more: u64,
    },
}

/// Most refused records an import lists one by one.
pub(crate) const MAX_LISTED: usize = 100;

/// The largest `meta.version` an import accepts: the largest integer JSON numbers
/// carry exactly (2^53 - 1), far from where the counter would wrap.
pub(crate) const MAX_VERSION: u64 = (1 << 53) - 1;

/// A record `import` refused: where it is, which resource, and the SCIM error a
/// create of it would get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedRecord {
    /// Line number in the file (the manifest is line 1).
    pub line: u64,
    /// `User`, `Group` or `membership`.
    pub kind: String,
    /// The record's id (a membership: `group → member`).
    pub id: String,
    /// userName or displayName, when the record has one.
    pub name: Option<String>,
    /// The refusal as a SCIM client would see it: status, scimType, detail.
    pub error: String,
}

fn refused_text(refused: &[RefusedRecord], more: u64) -> String {
    let total = refused.len() as u64 + more;
    let mut text = format!(
        "{total} record{} of the export would be refused by a create; nothing was imported \
         (fix them in the file's source and export again):",
        if total == 1 { "" } else { "s" }
    );
    for r in refused {
        let name = r
            .name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        text.push_str(&format!(
            "\n  line {}: {} {}{name}: {}",
            r.line, r.kind, r.id, r.error
        ));
    }
    if more > 0 {
        text.push_str(&format!("\n  and {more} more"));
    }
    text
}

/// An id as a create makes them and as URLs carry them: 1 to 128 characters
/// unreserved in a URI path segment (RFC 3986 §2.3), never the reserved word
/// `bulkId` (RFC 7643 §3.1).
fn check_id(id: &str) -> Result<(), ScimError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
        && id != "bulkId";
    if ok {
        Ok(())
    } else {
        Err(ScimError::invalid_value(format!(
            "the id \"{}\" is not one the bridge would assign: 1 to 128 of A-Z a-z 0-9 - . _ ~",
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// Checks one exported resource as a create of it would be checked (id, meta,
/// request limits, types, required attributes, unknown attributes, at most one
/// primary) and returns it in the form a create would store, with one note per
/// repair: extra primary values demoted (older exports), attributes a create drops
/// (`password`, read-only ones) removed. A repaired record's version moves on
/// (its representation changed). Errors are the SCIM error a create would answer.
pub(crate) fn check_record(
    rt: ResourceType,
    mut rec: Record,
    limits: &RequestLimits,
    now: Timestamp,
) -> Result<(Record, Vec<String>), ScimError> {
    check_id(&rec.id)?;
    for (what, t) in [
        ("meta.created", &rec.meta.created),
        ("meta.lastModified", &rec.meta.last_modified),
    ] {
        Timestamp::parse(t).map_err(|_| {
            ScimError::invalid_value(format!("{what} \"{t}\" is not an RFC 3339 time"))
        })?;
    }
    if !(1..=MAX_VERSION).contains(&rec.meta.version) {
        return Err(ScimError::invalid_value(format!(
            "meta.version {} is outside 1 to {MAX_VERSION}",
            rec.meta.version
        )));
    }
    let given = serde_json::Value::Object(std::mem::take(&mut rec.attributes));
    crate::scim::resource::check_request_limits(&given, limits)?;
    let serde_json::Value::Object(mut attrs) = given else {
        return Err(ScimError::internal());
    };
    let mut notes = Vec::new();
    let demoted = crate::scim::resource::demote_extra_primaries(rt, &mut attrs);
    if !demoted.is_empty() {
        notes.push(format!(
            "more than one primary value in {}; the first stays primary",
            demoted.join(", ")
        ));
    }
    let normalized =
        crate::scim::resource::normalize(rt, &serde_json::Value::Object(attrs.clone()))?;
    UnknownAttributes::Reject.check(&normalized.unknown)?;
    if rt == ResourceType::Group && normalized.attrs.contains_key("members") {
        return Err(ScimError::invalid_syntax(
            "a group record holds \"members\": an export lists members as membership lines",
        ));
    }
    if normalized.attrs != attrs {
        let removed: Vec<&str> = attrs
            .keys()
            .filter(|k| !normalized.attrs.keys().any(|n| n.eq_ignore_ascii_case(k)))
            .map(String::as_str)
            .collect();
        notes.push(if removed.is_empty() {
            "values stored in the form a create stores them".to_owned()
        } else {
            format!(
                "removed {} (a create does not store {})",
                removed.join(", "),
                if removed.len() == 1 { "it" } else { "them" }
            )
        });
    }
    rec.attributes = normalized.attrs;
    if !notes.is_empty() {
        rec.meta.version += 1;
        rec.meta.last_modified = now.to_rfc3339();
    }
    let name = rec
        .attributes
        .get(if rt == ResourceType::User {
            "userName"
        } else {
            "displayName"
        })
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    let notes = notes
        .into_iter()
        .map(|n| format!("{} {} \"{name}\": {n}", rt.name(), rec.id))
        .collect();
    Ok((rec, notes))
}

/// Turns file lines into import items, checking every record as a create would
/// ([`check_record`]); collects what it refuses instead of stopping at the first,
/// so that one run lists every bad record.
struct Checker<'a> {
    limits: &'a RequestLimits,
    now: Timestamp,
    refused: Vec<RefusedRecord>,
    more: u64,
    repaired: Vec<String>,
}

impl Checker<'_> {
    fn refuse(&mut self, line: u64, kind: &str, id: &str, name: Option<&str>, e: &ScimError) {
        if self.refused.len() >= MAX_LISTED {
            self.more += 1;
            return;
        }
        let scim_type = e
            .scim_type
            .map(|t| format!(" {}", t.as_str()))
            .unwrap_or_default();
        self.refused.push(RefusedRecord {
            line,
            kind: kind.to_owned(),
            id: id.chars().take(80).collect(),
            name: name.map(|n| n.chars().take(80).collect()),
            error: format!("{}{scim_type}: {}", e.status, e.detail),
        });
    }

    fn failed(&self) -> bool {
        !self.refused.is_empty()
    }

    /// The item for one line, `None` for the manifest, the trailer and refused records.
    fn item(&mut self, n: u64, line: Line) -> Result<Option<ImportItem>, ExportError> {
        let (rt, rec) = match line {
            Line::Manifest(_) | Line::Trailer { .. } => return Ok(None),
            Line::User(rec) => (ResourceType::User, rec),
            Line::Group(rec) => (ResourceType::Group, rec),
            Line::Membership {
                group,
                member,
                member_type: t,
                display,
            } => {
                let rt = member_type(n, &t)?;
                let id = format!("{group} → {member}");
                let checked = check_id(&group)
                    .and_then(|()| check_id(&member))
                    .and_then(|()| match &display {
                        Some(d) if d.len() > self.limits.max_value_bytes => {
                            Err(ScimError::invalid_value(format!(
                                "the member's display is {} bytes long; the limit is {} bytes",
                                d.len(),
                                self.limits.max_value_bytes
                            )))
                        }
                        _ => Ok(()),
                    });
                if let Err(e) = checked {
                    self.refuse(n, "membership", &id, None, &e);
                    return Ok(None);
                }
                return Ok(Some(ImportItem::Membership {
                    group,
                    member,
                    rt,
                    display,
                }));
            }
        };
        let id = rec.id.clone();
        let key = if rt == ResourceType::User {
            "userName"
        } else {
            "displayName"
        };
        let name = rec
            .attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .and_then(|(_, v)| v.as_str())
            .map(str::to_owned);
        match check_record(rt, rec, self.limits, self.now) {
            Ok((rec, notes)) => {
                self.repaired.extend(notes);
                Ok(Some(ImportItem::Resource(rt, stored(rec))))
            }
            Err(e) => {
                self.refuse(n, rt.name(), &id, name.as_deref(), &e);
                Ok(None)
            }
        }
    }

    fn into_result(self) -> Result<Vec<String>, ExportError> {
        if self.failed() {
            Err(ExportError::Refused {
                refused: self.refused,
                more: self.more,
            })
        } else {
            Ok(self.repaired)
        }
    }
}

/// Checks every record of an export file as `import` does, writing nothing: the
/// records refused (none for a good file). Does not verify the file's digest (see
/// [`verify`]); the fuzz target feeds it arbitrary bytes.
pub fn check_records<R: BufRead>(r: R, limits: &RequestLimits) -> Result<Vec<String>, ExportError> {
    let mut checker = Checker {
        limits,
        now: Timestamp::now(),
        refused: Vec::new(),
        more: 0,
        repaired: Vec::new(),
    };
    for_each_line(r, |n, _, line| checker.item(n, line).map(drop))?;
    checker.into_result()
}

fn invalid(line: u64, reason: impl Into<String>) -> ExportError {
    ExportError::Invalid {
        line,
        reason: reason.into(),
    }
}

struct HashingWriter<W: Write> {
    inner: W,
    digest: Context,
    lines: u64,
}

impl<W: Write> HashingWriter<W> {
    fn line(&mut self, line: &Line) -> Result<(), ExportError> {
        let mut bytes =
            serde_json::to_vec(line).map_err(|e| std::io::Error::other(e.to_string()))?;
        bytes.push(b'\n');
        self.bytes(&bytes)
    }

    /// One whole line, newline included.
    fn bytes(&mut self, bytes: &[u8]) -> Result<(), ExportError> {
        self.digest.update(bytes);
        self.lines += 1;
        self.inner.write_all(bytes)?;
        Ok(())
    }
}

/// Writes the line of a stored User or Group into `buf` (cleared first): the bytes
/// `Line::User`/`Line::Group` of the decoded record serialize to, with the
/// attributes copied as the text they are stored as instead of being parsed into a
/// tree and serialized again (most of the server's time in a 1M-user export,
/// issue 10).
fn record_line(rt: ResourceType, raw: RawResource<'_>, buf: &mut Vec<u8>) -> StoreResult<()> {
    let (id, meta, attrs) = raw.parts()?;
    buf.clear();
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(rt.name().as_bytes());
    buf.extend_from_slice(b"\",\"id\":");
    serde_json::to_writer(&mut *buf, &id)?;
    buf.extend_from_slice(b",\"meta\":");
    serde_json::to_writer(&mut *buf, &meta)?;
    buf.extend_from_slice(b",\"attributes\":");
    buf.extend_from_slice(attrs.get().as_bytes());
    buf.extend_from_slice(b"}\n");
    Ok(())
}

/// Streams the whole directory of `snapshot` to `out`. `progress(done, total)` is
/// called as records are written. Returns the counts.
pub(crate) fn write_export<W: Write>(
    snapshot: &Snapshot,
    out: W,
    exported_at: Timestamp,
    mut progress: impl FnMut(u64, u64),
) -> Result<Counts, ExportError> {
    let counts = Counts {
        users: snapshot.count(ResourceType::User)?,
        groups: snapshot.count(ResourceType::Group)?,
        memberships: snapshot.membership_count()?,
    };
    let total = counts.users + counts.groups + counts.memberships;
    let mut w = HashingWriter {
        inner: out,
        digest: Context::new(&SHA256),
        lines: 0,
    };
    w.line(&Line::Manifest(Manifest {
        format: FORMAT_NAME.into(),
        format_version: FORMAT_VERSION,
        source_version: env!("CARGO_PKG_VERSION").into(),
        exported_at,
        counts,
    }))?;
    let mut done = 0u64;
    let mut io_error: Option<ExportError> = None;
    // Writes one record line; a write error stops the scan and is returned after it.
    let mut emit = |w: &mut HashingWriter<W>, line: Result<&[u8], &Line>| -> bool {
        if io_error.is_some() {
            return false;
        }
        let written = match line {
            Ok(bytes) => w.bytes(bytes),
            Err(line) => w.line(line),
        };
        if let Err(e) = written {
            io_error = Some(e);
            return false;
        }
        done += 1;
        if done.is_multiple_of(1000) {
            progress(done, total);
        }
        true
    };
    let mut buf = Vec::new();
    for rt in ResourceType::ALL {
        snapshot.scan_raw_after(rt, None, |raw| {
            record_line(rt, raw, &mut buf)?;
            Ok(emit(&mut w, Ok(&buf)))
        })?;
    }
    snapshot.scan_memberships(|g, m, rt, display| {
        let line = Line::Membership {
            group: g.into(),
            member: m.into(),
            member_type: rt.name().into(),
            display,
        };
        Ok(emit(&mut w, Err(&line)))
    })?;
    if let Some(e) = io_error.take() {
        return Err(e);
    }
    let sha = hex(w.digest.clone().finish().as_ref());
    let lines = w.lines;
    let mut trailer = serde_json::to_vec(&Line::Trailer { sha256: sha, lines })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    trailer.push(b'\n');
    w.inner.write_all(&trailer)?;
    w.inner.flush()?;
    progress(total, total);
    Ok(counts)
}

/// Reads lines (each at most `MAX_LINE` bytes) and hands each parsed line, with the
/// raw bytes, to `f`.
fn for_each_line<R: BufRead>(
    r: R,
    mut f: impl FnMut(u64, &[u8], Line) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    for_each_raw_line(r, |n, raw| {
        let line: Line = serde_json::from_slice(&raw[..raw.len() - 1])
            .map_err(|e| invalid(n, format!("not a valid export record: {e}")))?;
        f(n, raw, line)
    })
}

/// Reads lines (each at most `MAX_LINE` bytes, each ending in `\n`) and hands each,
/// with its newline, to `f`.
fn for_each_raw_line<R: BufRead>(
    mut r: R,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        let read = std::io::Read::take(&mut r, MAX_LINE as u64 + 1).read_until(b'\n', &mut buf)?;
        if read == 0 {
            return Ok(());
        }
        n += 1;
        if buf.len() > MAX_LINE {
            return Err(invalid(n, "line too long"));
        }
        if buf.last() != Some(&b'\n') {
            return Err(invalid(n, TRUNCATED));
        }
        f(n, &buf)?;
    }
}

const TRUNCATED: &str = "the file is truncated (last line has no newline)";

fn member_type(line: u64, t: &str) -> Result<ResourceType, ExportError> {
    ResourceType::from_name(t).ok_or_else(|| invalid(line, format!("unknown member type \"{t}\"")))
}

/// Checks a whole file without writing anything: structure, manifest, counts and the
/// SHA-256 in the trailer (docs/EXPORT_FORMAT.md). Returns the manifest. Errors:
/// [`ExportError::Invalid`] naming the first bad line and why,
/// [`ExportError::Io`] when reading fails. Memory stays bounded by the longest line
/// (at most 4 MiB), whatever the file's size.
pub fn verify<R: BufRead>(r: R) -> Result<Manifest, ExportError> {
    let mut verifier = Verifier::default();
    for_each_raw_line(r, |n, raw| verifier.line(n, raw))?;
    verifier.finish()
}

/// The checks of [`verify`], one line at a time, so that a file can be checked while
/// it is written ([`VerifyingWriter`]) as well as read back.
#[derive(Default)]
struct Verifier {
    digest: Digest,
    manifest: Option<Manifest>,
    seen: Counts,
    trailer_ok: bool,
    /// Lines hashed so far (every line before the trailer).
    lines: u64,
}

/// The running SHA-256 (a newtype: `ring`'s context has no `Default`).
struct Digest(Context);

impl Default for Digest {
    fn default() -> Digest {
        Digest(Context::new(&SHA256))
    }
}

impl Verifier {
    /// Checks line `n` (1-based), `raw` with its final newline.
    fn line(&mut self, n: u64, raw: &[u8]) -> Result<(), ExportError> {
        let line = check::parse(&raw[..raw.len() - 1])
            .map_err(|e| invalid(n, format!("not a valid export record: {e}")))?;
        if self.trailer_ok {
            return Err(invalid(n, "data after the trailer"));
        }
        match line {
            check::Line::Manifest(m) => {
                if n != 1 {
                    return Err(invalid(n, "a second manifest"));
                }
                if m.format != FORMAT_NAME {
                    return Err(invalid(
                        n,
                        format!("not a scimbridge export (format \"{}\")", m.format),
                    ));
                }
                if m.format_version != FORMAT_VERSION {
                    return Err(invalid(
                        n,
                        format!("export format version {} is not supported (this scimbridge reads {FORMAT_VERSION})", m.format_version),
                    ));
                }
                self.manifest = Some(m);
            }
            _ if n == 1 => return Err(invalid(n, "the file does not start with a manifest")),
            check::Line::User => self.seen.users += 1,
            check::Line::Group => self.seen.groups += 1,
            check::Line::Membership { member_type: t } => {
                member_type(n, &t)?;
                self.seen.memberships += 1
            }
            check::Line::Trailer {
                sha256,
                lines: count,
            } => {
                let actual = hex(self.digest.0.clone().finish().as_ref());
                if count != self.lines {
                    return Err(invalid(
                        n,
                        format!(
                            "the trailer counts {count} lines, the file has {}",
                            self.lines
                        ),
                    ));
                }
                if sha256 != actual {
                    return Err(invalid(
                        n,
                        "the SHA-256 does not match the content: the file was changed or damaged",
                    ));
                }
                self.trailer_ok = true;
                return Ok(());
            }
        }
        self.digest.0.update(raw);
        self.lines += 1;
        Ok(())
    }

    /// The manifest once every line has been checked: the file must have ended
    /// with its trailer and hold the counts its manifest announced.
    fn finish(self) -> Result<Manifest, ExportError> {
        let manifest = self
            .manifest
            .ok_or_else(|| invalid(0, "the file is empty"))?;
        if !self.trailer_ok {
            return Err(invalid(
                self.lines,
                "the file has no trailer: it is truncated",
            ));
        }
        if self.seen != manifest.counts {
            return Err(invalid(
                self.lines,
                format!(
                    "the manifest announces {:?} but the file holds {:?}",
                    manifest.counts, self.seen
                ),
            ));
        }
        Ok(manifest)
    }
}

/// Writes an export to `inner` and checks it as it passes, line by line, with the
/// checks of [`verify`], so that a file is verified when its last byte is written
/// instead of being read back whole (issue 10). Lines may arrive split across
/// writes in any way. A line that fails a check fails that write (an
/// `io::Error` naming it) and [`VerifyingWriter::finish`] returns the check's
/// [`ExportError`].
pub(crate) struct VerifyingWriter<W: Write> {
    inner: W,
    verifier: Verifier,
    /// The line being received (without its newline yet).
    partial: Vec<u8>,
    /// Lines received whole.
    lines: u64,
    /// The first failed check; every later write fails with it.
    failed: Option<ExportError>,
}

impl<W: Write> VerifyingWriter<W> {
    pub(crate) fn new(inner: W) -> VerifyingWriter<W> {
        VerifyingWriter {
            inner,
            verifier: Verifier::default(),
            partial: Vec::new(),
            lines: 0,
            failed: None,
        }
    }

    /// Checks the bytes `buf` (already written through), line by line.
    fn check(&mut self, mut buf: &[u8]) -> Result<(), ExportError> {
        while let Some(end) = memchr::memchr(b'\n', buf) {
            let (line, rest) = buf.split_at(end + 1);
            buf = rest;
            self.lines += 1;
            if self.partial.is_empty() {
                self.one_line(line)?;
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                let r = self.one_line(&whole);
                self.partial = whole;
                self.partial.clear();
                r?;
            }
        }
        if self.partial.len() + buf.len() > MAX_LINE {
            return Err(invalid(self.lines + 1, "line too long"));
        }
        self.partial.extend_from_slice(buf);
        Ok(())
    }

    fn one_line(&mut self, line: &[u8]) -> Result<(), ExportError> {
        if line.len() > MAX_LINE {
            return Err(invalid(self.lines, "line too long"));
        }
        self.verifier.line(self.lines, line)
    }

    /// Whether a check has failed (and with it the write that brought the line).
    pub(crate) fn check_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Flushes and returns the inner writer with the file's manifest once everything
    /// written checks as [`verify`] would check the whole file; otherwise the first
    /// failed check.
    pub(crate) fn finish(mut self) -> Result<(W, Manifest), ExportError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if !self.partial.is_empty() {
            return Err(invalid(self.lines + 1, TRUNCATED));
        }
        self.inner.flush()?;
        let manifest = self.verifier.finish()?;
        Ok((self.inner, manifest))
    }
}

impl<W: Write> Write for VerifyingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(e) = &self.failed {
            return Err(std::io::Error::other(e.to_string()));
        }
        self.inner.write_all(buf)?;
        if let Err(e) = self.check(buf) {
            let message = e.to_string();
            self.failed = Some(e);
            return Err(std::io::Error::other(message));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads a verified file into import batches of at most `batch` records, each
/// checked as a create would check it. After the first refused record nothing more
/// is handed to `f`, but every record is still checked, so that the error lists
/// them all. Returns the repair notes.
fn read_items<R: BufRead>(
    r: R,
    batch: usize,
    checker: &mut Checker<'_>,
    mut f: impl FnMut(Vec<ImportItem>) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut items = Vec::with_capacity(batch);
    for_each_line(r, |n, _, line| {
        let Some(item) = checker.item(n, line)? else {
            return Ok(());
        };
        if checker.failed() {
            return Ok(());
        }
        items.push(item);
        if items.len() >= batch {
            f(std::mem::take(&mut items))?;
        }
        Ok(())
    })?;
    if !items.is_empty() && !checker.failed() {
        f(items)?;
    }
    Ok(())
}

fn stored(rec: Record) -> StoredResource {
    StoredResource {
        id: rec.id,
        meta: rec.meta,
        attrs: rec.attributes,
    }
}

/// What an import did: the file's manifest and one note per record it repaired
/// (an older export's extra primary values, userNames that are one name under the
/// caseless rule), rather than refusing the file.
#[derive(Debug, Clone)]
pub(crate) struct ImportReport {
    pub(crate) manifest: Manifest,
    pub(crate) repaired: Vec<String>,
}

/// Imports a verified export file into an empty directory, in one transaction.
/// Refuses a damaged or tampered file, and a non-empty directory, before writing.
/// Every record is checked as a create would check it, under `limits`
/// ([`check_record`]); if any is refused, the error lists each one and nothing is
/// imported. What older exports hold and the current rules forbid is repaired and
/// reported.
pub(crate) fn import_file(
    store: &crate::store::Store,
    path: &std::path::Path,
    limits: &RequestLimits,
    now: Timestamp,
) -> Result<ImportReport, ExportError> {
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|cause| ExportError::Open {
                path: path.to_owned(),
                cause,
            })
    };
    let manifest = verify(open()?).map_err(|e| ExportError::NotAnExport {
        path: path.to_owned(),
        problem: Box::new(e),
    })?;
    if !store.is_empty()? {
        return Err(ExportError::NotEmpty);
    }
    let reader = open()?;
    let limits = *limits;
    // The checker's verdict leaves the store's closure through this slot: a refused
    // record aborts the transaction, and the caller gets the list, not a string.
    let verdict = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = verdict.clone();
    let stored = store.import_blocking(crate::store::Actor::system("import"), now, move |sink| {
        let mut checker = Checker {
            limits: &limits,
            now,
            refused: Vec::new(),
            more: 0,
            repaired: Vec::new(),
        };
        let read = read_items(reader, 1000, &mut checker, |batch| {
            sink(batch).map_err(|e| ExportError::Invalid {
                line: 0,
                reason: e.to_string(),
            })
        });
        let outcome = read.and_then(|()| checker.into_result());
        let failed = outcome.as_ref().err().map(ToString::to_string);
        if let Ok(mut v) = slot.lock() {
            *v = Some(outcome);
        }
        failed.map_or(Ok(()), Err)
    });
    let checked = verdict.lock().ok().and_then(|mut v| v.take());
    match (stored, checked) {
        (Ok(mut store_notes), Some(Ok(mut repaired))) => {
            repaired.append(&mut store_notes);
            Ok(ImportReport { manifest, repaired })
        }
        (_, Some(Err(refused @ ExportError::Refused { .. }))) => Err(refused),
        (Err(e), _) => Err(ExportError::ImportFailed(e)),
        (Ok(_), _) => Err(ExportError::ImportFailed(StoreError::Aborted(
            "the import ended without a result".into(),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Actor, MemberRef, Store, StoreOptions};
    use serde_json::json;

    fn store(dir: &std::path::Path, name: &str) -> Store {
        Store::open(&dir.join(name), &StoreOptions::default()).unwrap()
    }

    fn fill(s: &Store) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut ids = Vec::new();
            for i in 0..30 {
                let a = json!({"userName": format!("u{i}@example.com"), "externalId": format!("e{i}"),
                               "emails": [{"value": format!("u{i}@example.com")}]});
                let r = s
                    .create(ResourceType::User, a.as_object().unwrap().clone(), vec![], Actor::system("t"), Timestamp::from_unix_ms(1_700_000_000_000 + i).unwrap(), None)
                    .await
                    .unwrap();
                ids.push(r.resource.id);
            }
            let members = ids.iter().take(10).map(|id| MemberRef { id: id.clone(), rt: None, display: None }).collect();
            let g = s
                .create(ResourceType::Group, json!({"displayName": "G"}).as_object().unwrap().clone(), members, Actor::system("t"), Timestamp::from_unix_ms(1_800_000_000_000).unwrap(), None)
                .await
                .unwrap();
            s.create(ResourceType::Group, json!({"displayName": "Outer"}).as_object().unwrap().clone(),
                     vec![MemberRef { id: g.resource.id, rt: Some(ResourceType::Group), display: None }], Actor::system("t"), Timestamp::from_unix_ms(1_800_000_000_001).unwrap(), None)
                .await
                .unwrap();
        });
    }

    fn export_bytes(s: &Store) -> Vec<u8> {
        let mut out = Vec::new();
        write_export(
            &s.snapshot().unwrap(),
            &mut out,
            Timestamp::parse("2026-02-02T00:00:00Z").unwrap(),
            |_, _| {},
        )
        .unwrap();
        out
    }

    #[test]
    fn export_import_export_is_identical() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path(), "a.redb");
        fill(&a);
        let first = export_bytes(&a);
        let m = verify(first.as_slice()).unwrap();
        assert_eq!(
            m.counts,
            Counts {
                users: 30,
                groups: 2,
                memberships: 11
            }
        );
        let file = dir.path().join("export.jsonl");
        std::fs::write(&file, &first).unwrap();
        let b = store(dir.path(), "b.redb");
        import_file(
            &b,
            &file,
            &RequestLimits::default(),
            Timestamp::parse("2026-02-03T00:00:00Z").unwrap(),
        )
        .unwrap();
        assert_eq!(export_bytes(&b), first);
        let snap = b.snapshot().unwrap();
        assert!(snap.find_by_user_name("U7@example.com").unwrap().is_some());
        assert_eq!(
            snap.find_by_external_id(ResourceType::User, "e3")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(snap.find_groups_by_name("outer").unwrap().len(), 1);
        // Importing again is refused: the directory is not empty.
        assert!(
            import_file(&b, &file, &RequestLimits::default(), Timestamp::now())
                .unwrap_err()
                .to_string()
                .contains("not empty")
        );
    }

    #[test]
    fn record_lines_copied_from_the_stored_text_are_those_of_the_format_type() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path(), "a.redb");
        fill(&a);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // A manager must be a user of the directory: the first one `fill` made.
        let mut boss = String::new();
        a.snapshot()
            .unwrap()
            .scan_raw_after(ResourceType::User, None, |raw| {
                boss = raw.decode()?.id;
                Ok(false)
            })
            .unwrap();
        let attrs = json!({"userName": "ünï\"code\\\u{1}@example.com", "title": "A/B <c>",
            "x509Certificates": [{"value": "TUlJ"}], "active": false,
            "name": {"givenName": "Zoë", "familyName": "O'Brien"},
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":
                {"department": "R&D", "manager": {"value": boss}}});
        rt.block_on(a.create(
            ResourceType::User,
            attrs.as_object().unwrap().clone(),
            vec![],
            Actor::system("t"),
            Timestamp::from_unix_ms(1_700_000_000_999).unwrap(),
            None,
        ))
        .unwrap();
        let snap = a.snapshot().unwrap();
        let mut checked = 0;
        for rt in ResourceType::ALL {
            snap.scan_raw_after(rt, None, |raw| {
                let mut copied = Vec::new();
                record_line(rt, raw, &mut copied).unwrap();
                let r = raw.decode().unwrap();
                let rec = Record {
                    id: r.id,
                    meta: r.meta,
                    attributes: r.attrs,
                };
                let line = match rt {
                    ResourceType::User => Line::User(rec),
                    ResourceType::Group => Line::Group(rec),
                };
                let mut serialized = serde_json::to_vec(&line).unwrap();
                serialized.push(b'\n');
                assert_eq!(
                    String::from_utf8(copied).unwrap(),
                    String::from_utf8(serialized).unwrap()
                );
                checked += 1;
                Ok(true)
            })
            .unwrap();
        }
        assert_eq!(checked, 33);
    }

    #[test]
    fn a_format_1_export_is_imported_with_its_records_repaired_and_reported() {
        // Written by the format-1 release (tests/fixtures/format1/make.sh): a user with
        // two primary emails, and two userNames that are one name under the caseless
        // rule ("straße" and "STRASSE").
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/format1/format1.jsonl");
        let dir = tempfile::tempdir().unwrap();
        let b = store(dir.path(), "b.redb");
        let imported = import_file(&b, &file, &RequestLimits::default(), Timestamp::now()).unwrap();
        assert_eq!(imported.manifest.format_version, 1);
        assert_eq!(imported.repaired.len(), 2, "{:?}", imported.repaired);
        assert!(
            imported.repaired[0].contains("emails") && imported.repaired[0].contains("primary")
        );
        assert!(imported.repaired[1].contains("STRASSE@example.com"));
        let snap = b.snapshot().unwrap();
        assert_eq!(snap.count(ResourceType::User).unwrap(), 5);
        let id = snap
            .find_by_user_name("two.primaries@example.com")
            .unwrap()
            .unwrap();
        let r = snap.get(ResourceType::User, &id).unwrap().unwrap();
        let primaries: Vec<bool> = r.attrs["emails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["primary"] == json!(true))
            .collect();
        assert_eq!(primaries, [true, false]);
        assert_eq!(r.meta.version, 2);
    }

    /// Writes `bytes` through a `VerifyingWriter` in pieces of `step` bytes: the
    /// manifest, or the message of the first failed check.
    fn written_through(bytes: &[u8], step: usize) -> Result<Manifest, String> {
        let mut w = VerifyingWriter::new(Vec::new());
        for piece in bytes.chunks(step) {
            if w.write_all(piece).is_err() {
                assert!(w.check_failed());
                break;
            }
        }
        match w.finish() {
            Ok((copy, manifest)) => {
                assert_eq!(copy, bytes);
                Ok(manifest)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    #[test]
    fn a_file_checked_while_written_gets_the_verdict_of_verify() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path(), "a.redb");
        fill(&a);
        let good = String::from_utf8(export_bytes(&a)).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let mut dropped = lines.clone();
        dropped.remove(5);
        let mut after_trailer = good.clone();
        after_trailer.push_str(lines[3]);
        after_trailer.push('\n');
        let long = format!("{good}{}\n", "x".repeat(MAX_LINE));
        let cases = [
            ("good", good.clone()),
            (
                "tampered",
                good.replacen("u3@example.com", "evil@example.com", 1),
            ),
            ("truncated", lines[..lines.len() - 1].join("\n") + "\n"),
            ("no newline", good.trim_end().to_owned()),
            ("dropped", dropped.join("\n") + "\n"),
            ("after the trailer", after_trailer),
            ("line too long", long),
            ("garbage", "{\"type\":\"manifest\"\n".to_owned()),
            ("empty", String::new()),
        ];
        for (name, text) in cases {
            let expected = verify(text.as_bytes()).map_err(|e| e.to_string());
            for step in [1, 7, 4096, 1 << 20] {
                if step == 1 && text.len() > 100_000 {
                    continue;
                }
                assert_eq!(
                    written_through(text.as_bytes(), step),
                    expected,
                    "{name}, pieces of {step}"
                );
            }
            assert_eq!(expected.is_ok(), name == "good", "{name}: {expected:?}");
        }
    }

    #[test]
    fn tampered_truncated_or_reordered_files_are_refused_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let a = store(dir.path(), "a.redb");
        fill(&a);
        let good = String::from_utf8(export_bytes(&a)).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        let tampered = good.replacen("u3@example.com", "evil@example.com", 1);
        let truncated = lines[..lines.len() - 1].join("\n") + "\n";
        let no_newline = good.trim_end().to_owned();
        let mut dropped = lines.clone();
        dropped.remove(5);
        let dropped = dropped.join("\n") + "\n";
        let garbage = "{\"type\":\"manifest\"\n".to_owned();
        for (name, bad) in [
            ("tampered", tampered),
            ("truncated", truncated),
            ("no newline", no_newline),
            ("dropped", dropped),
            ("garbage", garbage),
            ("empty", String::new()),
        ] {
            let file = dir.path().join("bad.jsonl");
            std::fs::write(&file, bad).unwrap();
            let b = store(dir.path(), &format!("{}.redb", name.replace(' ', "_")));
            let err = import_file(&b, &file, &RequestLimits::default(), Timestamp::now())
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a valid export"), "{name}: {err}");
            assert!(b.is_empty().unwrap(), "{name}: something was written");
        }
    }
}
