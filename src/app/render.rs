//! How stored resources become what clients see: `render` builds the SCIM
//! representation of a stored resource (`schemas`, `id`, attributes, the references
//! of `members` / `groups`, `meta` with location and version) and `Resource` carries
//! it, projected, to the edges. Directory operations and the query engine both
//! render through here, so a different rendering (say, bytes cached per version)
//! changes this file and not its callers. It knows neither HTTP nor redb.

use serde_json::{Map, Value};

use crate::scim::resource::{add_references, Projection};
use crate::scim::schema::ResourceType;
use crate::store::{Snapshot, StoreResult, StoredResource};

/// A resource rendered for a client (`schemas`, attributes, references, `meta`).
/// Edges serialize it; how it is built is this layer's business.
#[derive(Debug, Clone)]
pub(crate) struct Resource {
    pub(super) rt: ResourceType,
    pub(super) full: Map<String, Value>,
}

impl Resource {
    pub(crate) fn rt(&self) -> ResourceType {
        self.rt
    }

    /// The resource's `id`.
    pub(crate) fn id(&self) -> &str {
        self.full.get("id").and_then(Value::as_str).unwrap_or("")
    }

    /// The representation's top-level members.
    pub(crate) fn attributes(&self) -> &Map<String, Value> {
        &self.full
    }

    /// A top-level attribute of the representation (canonical name).
    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.full.get(name)
    }

    pub(crate) fn into_json(self) -> Value {
        Value::Object(self.full)
    }

    /// Keeps what `projection` returns (RFC 7644 §3.9).
    pub(super) fn project(self, projection: &Projection) -> Resource {
        Resource {
            full: projection.apply(self.rt, self.full),
            rt: self.rt,
        }
    }
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
/// its representation has (a user's version and lastModified follow its groups).
pub(super) fn render(
    snapshot: &Snapshot,
    rt: ResourceType,
    mut r: StoredResource,
    with_refs: bool,
    base: &str,
) -> StoreResult<Map<String, Value>> {
    snapshot.derive_meta(rt, &mut r)?;
    let refs = if with_refs {
        Some(snapshot.references(rt, &r.id)?)
    } else {
        None
    };
    Ok(crate::scim::resource::render(
        rt,
        &r.id,
        r.attrs,
        &r.meta,
        refs.as_deref(),
        base,
    ))
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
