//! A list sorted by `meta.lastModified` without rendering every resource (trial 7
//! item 17: the admin page's Users list sorted by "Last modified" took 1.1–1.3 s at
//! 20,000 users on every load, as the query engine rendered each user to read its
//! sort value). `App::query` sends every unfiltered query of one type sorted so
//! (the admin lists and the SCIM API's `sortBy=meta.lastModified` alike) here. The
//! order is decided from each row's stored meta alone (its `lastModified` is the one
//! every view shows: a resource's own last change), keeping the (sort value, id)
//! pairs of the best `start + count` rows, as the engine's bounded sort does; the
//! page itself is then read by the query engine as an `id eq` lookup of those ids
//! with the same sort, so its projection and order are the SCIM API's. Knows
//! neither HTTP nor redb.

use serde_json::{json, Map, Value};

use super::query::{self, Page, Paging, Query};
use crate::scim::path::AttrPath;
use crate::scim::query::{compare_sort_values, sort_value, ListParams};
use crate::scim::schema::ResourceType;
use crate::store::{Snapshot, StoreResult};

/// The sort attribute, RFC 7643 §3.1.
const LAST_MODIFIED: &str = "meta.lastModified";

/// Whether `q` is one this module answers: one type, no filter, index paging, sorted
/// by `meta.lastModified` as RFC 7644 §3.4.2.3 spells it (unqualified, any case).
/// `App::query` sends it here, so the SCIM API and the admin lists take the same path.
pub(super) fn answers(q: &Query) -> Option<ResourceType> {
    let path = q.params.sort_by.as_ref()?;
    let last_modified = path.urn.is_none()
        && path.attr.eq_ignore_ascii_case("meta")
        && path
            .sub
            .as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("lastModified"));
    (last_modified && q.params.filter.is_none() && q.paging == Paging::Index)
        .then_some(q.rt)
        .flatten()
}

/// The page of `rt` that `q` asks for (see [`answers`]), rendered with `base`: the
/// query engine's answer to the same query, with every resource of the type as its
/// total. Cost: one pass over the type's rows parsing only `id` and `meta`, and
/// `q.params.count` renders. Blocking: callers run it off the async workers.
pub(super) fn page(snap: &Snapshot, rt: ResourceType, q: &Query, base: &str) -> StoreResult<Page> {
    let (descending, start, count) = (
        q.params.descending,
        q.params.start_index.max(1),
        q.params.count,
    );
    let path = AttrPath::parse(LAST_MODIFIED)?;
    let total = usize::try_from(snap.count(rt)?).unwrap_or(usize::MAX);
    let end = start.saturating_sub(1).saturating_add(count);
    let ids = best_ids(snap, rt, &path, descending, end)?;
    let ids: Vec<String> = ids.into_iter().skip(start - 1).collect();
    let resources = if ids.is_empty() {
        Vec::new()
    } else {
        let any = ids
            .iter()
            .map(|id| format!("id eq {}", json!(id)))
            .collect::<Vec<_>>()
            .join(" or ");
        let q = Query {
            rt: Some(rt),
            params: ListParams {
                filter: Some(crate::scim::filter::parse(&any)?),
                sort_by: Some(path),
                descending,
                start_index: 1,
                count: ids.len(),
            },
            projection: q.projection.clone(),
            paging: Paging::Index,
        };
        query::run(snap, &q, base)?.resources
    };
    Ok(Page {
        total: Some(total),
        start_index: start,
        resources,
        next_after: None,
        prev_before: None,
    })
}

/// The ids of the first `end` rows of `rt` in `meta.lastModified` order (ties in id
/// order, as the engine's stable sort of the id-ordered scan keeps them).
fn best_ids(
    snap: &Snapshot,
    rt: ResourceType,
    path: &AttrPath,
    descending: bool,
    end: usize,
) -> StoreResult<Vec<String>> {
    type Ranked = (Option<Value>, String);
    let order = |a: &Ranked, b: &Ranked| {
        compare_sort_values(rt, a.0.as_ref(), b.0.as_ref(), path, descending)
            .then_with(|| a.1.cmp(&b.1))
    };
    let mut best: Vec<Ranked> = Vec::new();
    if end == 0 {
        return Ok(Vec::new());
    }
    snap.scan_raw_after(rt, None, |raw| {
        let text = raw.text()?;
        let mut shown = Map::new();
        shown.insert(
            "meta".into(),
            json!({"lastModified": text.meta.last_modified}),
        );
        best.push((sort_value(rt, &shown, path), text.id));
        if best.len() >= end.saturating_mul(2).max(64) {
            best.sort_by(order);
            best.truncate(end);
        }
        Ok(true)
    })?;
    best.sort_by(order);
    best.truncate(end);
    Ok(best.into_iter().map(|(_, id)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::resource::Projection;
    use crate::store::{Actor, Store};

    /// The same page as the query engine's sorted scan, in either order and at any
    /// depth, including ties (users created within one millisecond).
    #[test]
    fn pages_match_the_engines_sorted_scan() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("db"), &Default::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let base = crate::clock::Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        rt.block_on(async {
            for i in 0..40i64 {
                // Out of id order, with ties every third user.
                let at = base.saturating_add(time::Duration::seconds((i * 7) % 13));
                let attrs = json!({"userName": format!("u{i:02}@example.com")});
                store
                    .create(
                        ResourceType::User,
                        attrs.as_object().unwrap().clone(),
                        vec![],
                        Actor::system("test"),
                        at,
                        None,
                    )
                    .await
                    .unwrap();
            }
        });
        let snap = store.snapshot().unwrap();
        let projection = Projection::parse(None, Some("groups")).unwrap_or_default();
        for descending in [false, true] {
            for (start, count) in [(1, 10), (11, 10), (35, 10), (41, 5), (1, 0)] {
                let q = Query {
                    rt: Some(ResourceType::User),
                    params: ListParams {
                        filter: None,
                        sort_by: Some(AttrPath::parse(LAST_MODIFIED).unwrap()),
                        descending,
                        start_index: start,
                        count,
                    },
                    projection: projection.clone(),
                    paging: Paging::Index,
                };
                assert_eq!(answers(&q), Some(ResourceType::User));
                let fast = page(&snap, ResourceType::User, &q, "").unwrap();
                let engine = query::run(&snap, &q, "").unwrap();
                let ids = |p: &Page| {
                    p.resources
                        .iter()
                        .map(|r| r.id().to_owned())
                        .collect::<Vec<_>>()
                };
                assert_eq!(ids(&fast), ids(&engine), "{descending} {start} {count}");
                assert_eq!(fast.total, engine.total);
            }
        }
    }
}
