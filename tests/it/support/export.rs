//! Export files written by the tests (docs/EXPORT_FORMAT.md, format version 1): a
//! manifest, the Users, the Groups, the memberships and a SHA-256 trailer. Large
//! directories are seeded with `scimbridge import` of such a file (one transaction)
//! instead of thousands of requests. Every release must import format 1, so a file
//! written here stays valid; `generated_export_imports_like_the_api_stores` in
//! `export_import` checks that an import gives what the API would have stored.

use std::path::Path;

use ring::digest::{Context, SHA256};
use serde_json::{json, Value};

/// Creation and modification time of every generated resource.
const CREATED: &str = "2026-01-05T08:00:00Z";

/// A directory to import: resources with the ids they will keep, and memberships.
#[derive(Default)]
pub struct ExportFile {
    users: Vec<(String, Value)>,
    groups: Vec<(String, Value)>,
    /// (group id, member id, "User" or "Group")
    memberships: Vec<(String, String, &'static str)>,
    /// `meta` of the resources that do not have the default one.
    metas: std::collections::HashMap<String, Value>,
}

impl ExportFile {
    /// Adds a User with these attributes (as stored: canonical names, extension
    /// attributes under their URN, no `schemas`); returns the id it will have.
    pub fn user(&mut self, attributes: Value) -> String {
        let id = format!("00000000-0000-7000-8000-{:012x}", self.users.len());
        self.users.push((id.clone(), attributes));
        id
    }

    /// Adds a User with this id and `meta` as they are (for files a create would
    /// refuse: a bad id, a version about to wrap).
    pub fn user_as(&mut self, id: &str, meta: Value, attributes: Value) {
        self.users.push((id.to_owned(), attributes));
        self.metas.insert(id.to_owned(), meta);
    }

    /// Adds a Group (attributes without `members`); returns the id it will have.
    pub fn group(&mut self, attributes: Value) -> String {
        let id = format!("00000000-0000-7000-9000-{:012x}", self.groups.len());
        self.groups.push((id.clone(), attributes));
        id
    }

    /// Makes `member` (a User id, or a Group id when `member_type` is "Group") a direct
    /// member of `group`.
    pub fn member(&mut self, group: &str, member: &str, member_type: &'static str) {
        self.memberships
            .push((group.to_owned(), member.to_owned(), member_type));
    }

    /// Writes the file: manifest, Users, Groups (each in id order, as `export` writes
    /// them), memberships, trailer with the SHA-256 of every preceding byte.
    pub fn write(&self, path: &Path) {
        let meta = json!({"created": CREATED, "lastModified": CREATED, "version": 1});
        let mut lines = vec![json!({"type": "manifest", "format": "scimbridge-export",
            "formatVersion": 1, "sourceVersion": "tests", "exportedAt": CREATED,
            "counts": {"users": self.users.len(), "groups": self.groups.len(),
                       "memberships": self.memberships.len()}})];
        for (kind, list) in [("User", &self.users), ("Group", &self.groups)] {
            lines.extend(list.iter().map(|(id, attributes)| {
                let meta = self.metas.get(id).unwrap_or(&meta);
                json!({"type": kind, "id": id, "meta": meta, "attributes": attributes})
            }));
        }
        lines.extend(self.memberships.iter().map(|(group, member, t)| {
            json!({"type": "membership", "group": group, "member": member, "memberType": t})
        }));
        let mut body = Vec::new();
        for line in &lines {
            serde_json::to_writer(&mut body, line).expect("JSON");
            body.push(b'\n');
        }
        let mut digest = Context::new(&SHA256);
        digest.update(&body);
        let sha256: String = digest
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        serde_json::to_writer(
            &mut body,
            &json!({"type": "trailer", "sha256": sha256, "lines": lines.len()}),
        )
        .expect("JSON");
        body.push(b'\n');
        std::fs::write(path, body).expect("write the export file");
    }
}
