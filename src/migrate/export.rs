//! The export file: JSON Lines, streamed from one read snapshot in constant memory.
//! Line 1 is a manifest, then every User, every Group, every membership, and a
//! trailer with the SHA-256 of all preceding bytes. See docs/EXPORT_FORMAT.md.

use std::io::{BufRead, Write};

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::scim::resource::{Attributes, Meta};
use crate::scim::schema::ResourceType;
use crate::store::{hex, ImportItem, Snapshot, StoreError, StoredResource};

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
    #[error("cannot read {}: {source}", .path.display())]
    Open {
        /// The file that was asked for.
        path: std::path::PathBuf,
        /// Why it could not be opened (not found, permission denied, ...).
        source: std::io::Error,
    },
    /// The file does not verify (damaged, tampered, truncated, another format).
    #[error("{} is not a valid export: {source}", .path.display())]
    NotAnExport {
        /// The file that was checked.
        path: std::path::PathBuf,
        /// The first problem [`verify`] found (usually [`ExportError::Invalid`]).
        source: Box<ExportError>,
    },
    /// Import only restores into an empty bridge.
    #[error("the directory is not empty: import restores an export into an empty bridge (use a new data directory)")]
    NotEmpty,
    /// The import transaction failed and was rolled back.
    #[error("import failed, nothing was imported: {0}")]
    ImportFailed(StoreError),
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
        self.digest.update(&bytes);
        self.lines += 1;
        self.inner.write_all(&bytes)?;
        Ok(())
    }
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
    let mut emit = |line: Line| -> bool {
        if io_error.is_some() {
            return false;
        }
        if let Err(e) = w.line(&line) {
            io_error = Some(e);
            return false;
        }
        done += 1;
        if done.is_multiple_of(1000) {
            progress(done, total);
        }
        true
    };
    for rt in ResourceType::ALL {
        snapshot.scan(rt, |r| {
            let rec = Record {
                id: r.id,
                meta: r.meta,
                attributes: r.attrs,
            };
            Ok(emit(match rt {
                ResourceType::User => Line::User(rec),
                ResourceType::Group => Line::Group(rec),
            }))
        })?;
    }
    snapshot.scan_memberships(|g, m, rt, display| {
        Ok(emit(Line::Membership {
            group: g.into(),
            member: m.into(),
            member_type: rt.name().into(),
            display,
        }))
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
    mut r: R,
    mut f: impl FnMut(u64, &[u8], Line) -> Result<(), ExportError>,
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
            return Err(invalid(
                n,
                "the file is truncated (last line has no newline)",
            ));
        }
        let line: Line = serde_json::from_slice(&buf[..buf.len() - 1])
            .map_err(|e| invalid(n, format!("not a valid export record: {e}")))?;
        f(n, &buf, line)?;
    }
}

fn member_type(line: u64, t: &str) -> Result<ResourceType, ExportError> {
    ResourceType::from_name(t).ok_or_else(|| invalid(line, format!("unknown member type \"{t}\"")))
}

/// Checks a whole file without writing anything: structure, manifest, counts and the
/// SHA-256 in the trailer (docs/EXPORT_FORMAT.md). Returns the manifest. Errors:
/// [`ExportError::Invalid`] naming the first bad line and why,
/// [`ExportError::Io`] when reading fails. Memory stays bounded by the longest line
/// (at most 4 MiB), whatever the file's size.
pub fn verify<R: BufRead>(r: R) -> Result<Manifest, ExportError> {
    let mut digest = Context::new(&SHA256);
    let mut manifest: Option<Manifest> = None;
    let mut seen = Counts::default();
    let mut trailer_ok = false;
    let mut lines = 0u64;
    for_each_line(r, |n, raw, line| {
        if trailer_ok {
            return Err(invalid(n, "data after the trailer"));
        }
        match line {
            Line::Manifest(m) => {
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
                manifest = Some(m);
            }
            _ if n == 1 => return Err(invalid(n, "the file does not start with a manifest")),
            Line::User(_) => seen.users += 1,
            Line::Group(_) => seen.groups += 1,
            Line::Membership { member_type: t, .. } => {
                member_type(n, &t)?;
                seen.memberships += 1
            }
            Line::Trailer {
                sha256,
                lines: count,
            } => {
                let actual = hex(digest.clone().finish().as_ref());
                if count != lines {
                    return Err(invalid(
                        n,
                        format!("the trailer counts {count} lines, the file has {lines}"),
                    ));
                }
                if sha256 != actual {
                    return Err(invalid(
                        n,
                        "the SHA-256 does not match the content: the file was changed or damaged",
                    ));
                }
                trailer_ok = true;
                return Ok(());
            }
        }
        digest.update(raw);
        lines += 1;
        Ok(())
    })?;
    let manifest = manifest.ok_or_else(|| invalid(0, "the file is empty"))?;
    if !trailer_ok {
        return Err(invalid(lines, "the file has no trailer: it is truncated"));
    }
    if seen != manifest.counts {
        return Err(invalid(
            lines,
            format!(
                "the manifest announces {:?} but the file holds {:?}",
                manifest.counts, seen
            ),
        ));
    }
    Ok(manifest)
}

/// Reads a verified file into import batches of at most `batch` records.
pub(crate) fn read_items<R: BufRead>(
    r: R,
    batch: usize,
    mut f: impl FnMut(Vec<ImportItem>) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let mut items = Vec::with_capacity(batch);
    for_each_line(r, |n, _, line| {
        let item = match line {
            Line::Manifest(_) | Line::Trailer { .. } => return Ok(()),
            Line::User(rec) => ImportItem::Resource(ResourceType::User, stored(rec)),
            Line::Group(rec) => ImportItem::Resource(ResourceType::Group, stored(rec)),
            Line::Membership {
                group,
                member,
                member_type: t,
                display,
            } => ImportItem::Membership {
                group,
                member,
                rt: member_type(n, &t)?,
                display,
            },
        };
        items.push(item);
        if items.len() >= batch {
            f(std::mem::take(&mut items))?;
        }
        Ok(())
    })?;
    if !items.is_empty() {
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
pub(crate) fn import_file(
    store: &crate::store::Store,
    path: &std::path::Path,
    now: Timestamp,
) -> Result<ImportReport, ExportError> {
    let open = || {
        std::fs::File::open(path)
            .map(std::io::BufReader::new)
            .map_err(|source| ExportError::Open {
                path: path.to_owned(),
                source,
            })
    };
    let manifest = verify(open()?).map_err(|e| ExportError::NotAnExport {
        path: path.to_owned(),
        source: Box::new(e),
    })?;
    if !store.is_empty()? {
        return Err(ExportError::NotEmpty);
    }
    let reader = open()?;
    let repaired = store
        .import_blocking(crate::store::Actor::system("import"), now, move |sink| {
            read_items(reader, 1000, |batch| {
                sink(batch).map_err(|e| ExportError::Invalid {
                    line: 0,
                    reason: e.to_string(),
                })
            })
            .map_err(|e| e.to_string())
        })
        .map_err(ExportError::ImportFailed)?;
    Ok(ImportReport { manifest, repaired })
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
                    .create(ResourceType::User, a.as_object().unwrap().clone(), vec![], Actor::system("t"), Timestamp::from_unix_ms(1_700_000_000_000 + i).unwrap())
                    .await
                    .unwrap();
                ids.push(r.id);
            }
            let members = ids.iter().take(10).map(|id| MemberRef { id: id.clone(), rt: None, display: None }).collect();
            let g = s
                .create(ResourceType::Group, json!({"displayName": "G"}).as_object().unwrap().clone(), members, Actor::system("t"), Timestamp::from_unix_ms(1_800_000_000_000).unwrap())
                .await
                .unwrap();
            s.create(ResourceType::Group, json!({"displayName": "Outer"}).as_object().unwrap().clone(),
                     vec![MemberRef { id: g.id, rt: Some(ResourceType::Group), display: None }], Actor::system("t"), Timestamp::from_unix_ms(1_800_000_000_001).unwrap())
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
        import_file(&b, &file, Timestamp::parse("2026-02-03T00:00:00Z").unwrap()).unwrap();
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
        assert!(import_file(&b, &file, Timestamp::now())
            .unwrap_err()
            .to_string()
            .contains("not empty"));
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
        let imported = import_file(&b, &file, Timestamp::now()).unwrap();
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
            let err = import_file(&b, &file, Timestamp::now())
                .unwrap_err()
                .to_string();
            assert!(err.contains("not a valid export"), "{name}: {err}");
            assert!(b.is_empty().unwrap(), "{name}: something was written");
        }
    }
}
