//! How stored resources become what clients see: `render` builds the SCIM
//! representation of a stored resource (`schemas`, `id`, attributes, the references
//! of `members` / `groups`, `meta` with location and version) and `Resource` carries
//! it, projected, to the edges. Directory operations and the query engine both
//! render through here, so a different rendering (say, bytes cached per version)
//! changes this file and not its callers. It knows neither HTTP nor redb.

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::scim::resource::{add_references, write_reference, Meta, Projection, Reference};
use crate::scim::schema::ResourceType;
use crate::store::{Created, Snapshot, StoreResult, StoredResource, StoredText};

/// A representation sent in pieces: the JSON text of one resource, in order, as it
/// is made on a blocking thread from one snapshot. An `Err` (why, for the log) means
/// the text stopped part-way and must not be completed. At most
/// [`STREAM_DEPTH`] pieces wait at a time, so the memory is bounded whatever the size.
pub(crate) type JsonChunks = tokio::sync::mpsc::Receiver<Result<Bytes, String>>;

/// Pieces a streamed representation may have waiting for the client.
pub(super) const STREAM_DEPTH: usize = 4;
/// Members per piece of a streamed group (about 170 bytes each, so about 680 KB a
/// piece and 2.7 MB waiting at most). 4,000 rather than 1,000: a 100,000-member
/// read took 10-25 % less wall and CPU time (fewer hand-overs between the blocking
/// writer and the connection; docs/PERFORMANCE.md, eighth session).
const MEMBERS_PER_CHUNK: usize = 4000;
/// Bytes reserved for a piece: [`MEMBERS_PER_CHUNK`] members of about 170 bytes,
/// so that a piece is rarely copied to grow.
const CHUNK_CAPACITY: usize = MEMBERS_PER_CHUNK * 192;

/// A resource rendered for a client (`schemas`, attributes, references, `meta`).
/// Edges serialize it; how it is built is this layer's business.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub(super) rt: ResourceType,
    body: Rendered,
}

/// A representation as a `Value` tree, or as the JSON text a read without a
/// projection writes straight from the stored text (issue 10), parsed only if an
/// edge asks for its members.
#[derive(Debug, Clone)]
enum Rendered {
    Tree(Map<String, Value>),
    Text {
        id: String,
        json: Vec<u8>,
        tree: OnceLock<Map<String, Value>>,
    },
}

impl Resource {
    pub(super) fn tree(rt: ResourceType, full: Map<String, Value>) -> Resource {
        Resource {
            rt,
            body: Rendered::Tree(full),
        }
    }

    /// `json`: the representation's JSON text (an object), as `render_text` writes it.
    pub(super) fn text(rt: ResourceType, id: String, json: Vec<u8>) -> Resource {
        Resource {
            rt,
            body: Rendered::Text {
                id,
                json,
                tree: OnceLock::new(),
            },
        }
    }

    pub(crate) fn rt(&self) -> ResourceType {
        self.rt
    }

    /// The resource's `id`.
    pub(crate) fn id(&self) -> &str {
        match &self.body {
            Rendered::Tree(full) => full.get("id").and_then(Value::as_str).unwrap_or(""),
            Rendered::Text { id, .. } => id,
        }
    }

    /// The representation's top-level members.
    pub(crate) fn attributes(&self) -> &Map<String, Value> {
        match &self.body {
            Rendered::Tree(full) => full,
            Rendered::Text { json, tree, .. } => tree.get_or_init(|| parse_object(json)),
        }
    }

    /// A top-level attribute of the representation (canonical name).
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.attributes().get(name)
    }

    /// Whether the representation was written as text (not built as a tree).
    #[cfg(test)]
    pub(super) fn is_text(&self) -> bool {
        matches!(self.body, Rendered::Text { .. })
    }

    /// Appends the representation's JSON text to `out`.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) {
        match &self.body {
            // A Value always serializes.
            Rendered::Tree(full) => {
                let _ = serde_json::to_writer(&mut *out, full);
            }
            Rendered::Text { json, .. } => out.extend_from_slice(json),
        }
    }

    fn into_map(self) -> Map<String, Value> {
        match self.body {
            Rendered::Tree(full) => full,
            Rendered::Text { json, tree, .. } => {
                tree.into_inner().unwrap_or_else(|| parse_object(&json))
            }
        }
    }

    /// Keeps what `projection` returns (RFC 7644 §3.9).
    pub(super) fn project(self, projection: &Projection) -> Resource {
        if projection.returns_default() {
            return self;
        }
        let rt = self.rt;
        Resource::tree(rt, projection.apply(rt, self.into_map()))
    }
}

/// The members of a JSON object written by `render_text` (always an object; an
/// empty map if it were not).
fn parse_object(json: &[u8]) -> Map<String, Value> {
    serde_json::from_slice(json).unwrap_or_default()
}

/// The attribute that holds a resource's references: a group's `members`, a user's
/// `groups`.
pub(super) fn refs_attr(rt: ResourceType) -> &'static str {
    match rt {
        ResourceType::Group => "members",
        ResourceType::User => "groups",
    }
}

/// Renders a stored resource, with its references when `with_refs`, and the meta
/// its representation has (a user's version follows its groups).
pub(super) fn render(
    snapshot: &Snapshot,
    rt: ResourceType,
    r: StoredResource,
    with_refs: bool,
    base: &str,
) -> StoreResult<Map<String, Value>> {
    Derived::new(snapshot, rt, r, with_refs)?.render(snapshot, with_refs, base)
}

/// A stored resource with the meta its representation has, derived once: a user's
/// groups are walked once for its version and, when asked, its `groups` (issue 10:
/// a read walked them up to four times). Lets a reader compare the version
/// (`If-None-Match`) before anything is rendered.
pub(super) struct Derived {
    rt: ResourceType,
    r: StoredResource,
    /// A user's `groups`, found by the same walk; `None` for a group or when the
    /// references are not asked for.
    user_groups: Option<Vec<Reference>>,
}

impl Derived {
    pub(super) fn new(
        snapshot: &Snapshot,
        rt: ResourceType,
        mut r: StoredResource,
        with_refs: bool,
    ) -> StoreResult<Derived> {
        let user_groups = snapshot.derive_meta_with_groups(rt, &r.id, &mut r.meta, with_refs)?;
        Ok(Derived { rt, r, user_groups })
    }

    /// The representation's ETag (`meta.version`).
    pub(super) fn version(&self) -> String {
        self.r.meta.etag()
    }

    pub(super) fn id(&self) -> &str {
        &self.r.id
    }

    pub(super) fn rt(&self) -> ResourceType {
        self.rt
    }

    /// The representation, with its references when `with_refs` (a group's members
    /// are read here, after the version was compared).
    pub(super) fn render(
        self,
        snapshot: &Snapshot,
        with_refs: bool,
        base: &str,
    ) -> StoreResult<Map<String, Value>> {
        let Derived { rt, r, user_groups } = self;
        let refs = references(snapshot, rt, &r.id, with_refs, user_groups)?;
        Ok(crate::scim::resource::render(
            rt,
            &r.id,
            r.attrs,
            &r.meta,
            refs.as_deref(),
            base,
        ))
    }
}

/// The references a representation shows when `with_refs`: a user's groups found
/// while its meta was derived, or a group's members read now.
fn references(
    snapshot: &Snapshot,
    rt: ResourceType,
    id: &str,
    with_refs: bool,
    user_groups: Option<Vec<Reference>>,
) -> StoreResult<Option<Vec<Reference>>> {
    Ok(match (with_refs, user_groups) {
        (false, _) => None,
        (true, Some(groups)) => Some(groups),
        (true, None) => Some(snapshot.references(rt, id)?),
    })
}

/// [`Derived`] of a resource read as text ([`StoredText`]): rendered straight to
/// JSON text, for reads that ask for no projection (issue 10).
pub(super) struct DerivedText<'a> {
    rt: ResourceType,
    r: StoredText<'a>,
    user_groups: Option<Vec<Reference>>,
}

impl<'a> DerivedText<'a> {
    pub(super) fn new(
        snapshot: &Snapshot,
        rt: ResourceType,
        mut r: StoredText<'a>,
        with_refs: bool,
    ) -> StoreResult<DerivedText<'a>> {
        let user_groups = snapshot.derive_meta_with_groups(rt, &r.id, &mut r.meta, with_refs)?;
        Ok(DerivedText { rt, r, user_groups })
    }

    /// The representation's ETag (`meta.version`).
    pub(super) fn version(&self) -> String {
        self.r.meta.etag()
    }

    /// The representation as JSON text (the same text as serializing [`render`]'s
    /// result); `None` when the stored attributes need [`render`] (see
    /// `scim::resource::render_text`).
    pub(super) fn render(
        self,
        snapshot: &Snapshot,
        with_refs: bool,
        base: &str,
    ) -> StoreResult<Option<Vec<u8>>> {
        let DerivedText { rt, r, user_groups } = self;
        let refs = references(snapshot, rt, &r.id, with_refs, user_groups)?;
        Ok(crate::scim::resource::render_text(
            rt,
            &r.id,
            &r.attrs,
            &r.meta,
            refs.as_deref(),
            base,
        ))
    }
}

/// The representation of a resource just created, written from its record's text
/// (`Created::text`) without reading it back: a new resource is in no group (its id
/// is new), so its meta is the stored one (version 1, no groups digest) and a user
/// shows no `groups`; a group created with members needs their references and is
/// not rendered here. The same text as [`DerivedText::render`] gives from a snapshot
/// right after the commit. `None` where `render_text` leaves the attributes to
/// [`render`].
pub(super) fn created_text(
    rt: ResourceType,
    created: &Created,
    base: &str,
) -> StoreResult<Option<(String, Meta, Vec<u8>)>> {
    let r = created.text()?;
    let json = crate::scim::resource::render_text(rt, &r.id, &r.attrs, &r.meta, None, base);
    Ok(json.map(|json| (r.id, r.meta, json)))
}

/// Adds references to a rendered resource (used by the query engine when the
/// filter did not need them but the page does).
pub(super) fn with_references(
    snapshot: &Snapshot,
    rt: ResourceType,
    full: &mut Map<String, Value>,
    id: &str,
    base: &str,
) -> StoreResult<()> {
    let refs = snapshot.references(rt, id)?;
    add_references(rt, full, &refs, base);
    Ok(())
}

/// Sends a group's representation into `tx` in pieces: `head` (the group rendered
/// and projected without its members) first, then its members [`MEMBERS_PER_CHUNK`]
/// at a time, projected as the request asked, read from the membership rows of
/// `snapshot` and written as text straight from them (`write_reference`: the bytes
/// serializing `references_value` projected gives, without a `Value` per member).
/// Stops early when the receiver is gone (the client left). Runs on a blocking
/// thread: `blocking_send` waits while the client reads.
pub(super) fn stream_group(
    snapshot: &Snapshot,
    id: &str,
    head: Map<String, Value>,
    projection: &Projection,
    base: &str,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, String>>,
) {
    let mut text = match serde_json::to_vec(&Value::Object(head)) {
        Ok(t) => t,
        Err(e) => {
            let _ = tx.blocking_send(Err(e.to_string()));
            return;
        }
    };
    // The head is an object: its closing brace comes after the members.
    text.pop();
    let Some(fields) = projection.reference_fields(ResourceType::Group) else {
        text.push(b'}');
        let _ = tx.blocking_send(Ok(Bytes::from(text)));
        return;
    };
    let mut in_chunk = 0;
    let mut opened = false;
    let mut gone = false;
    let visited = snapshot.visit_member_texts(id, |r| {
        text.extend_from_slice(if opened { b"," } else { b",\"members\":[" });
        opened = true;
        write_reference(&mut text, ResourceType::Group, fields, r, base);
        in_chunk += 1;
        if in_chunk < MEMBERS_PER_CHUNK {
            return true;
        }
        in_chunk = 0;
        let full = std::mem::replace(&mut text, Vec::with_capacity(CHUNK_CAPACITY));
        gone = tx.blocking_send(Ok(Bytes::from(full))).is_err();
        !gone
    });
    if gone {
        return;
    }
    if let Err(e) = visited {
        let _ = tx.blocking_send(Err(e.to_string()));
        return;
    }
    if opened {
        text.push(b']');
    }
    text.push(b'}');
    let _ = tx.blocking_send(Ok(Bytes::from(text)));
}
