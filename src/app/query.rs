//! The query engine: runs a list query (RFC 7644 §3.4.2) on one read snapshot. It
//! asks the SCIM core for the index plan of the filter (`scim::query::plan`), fetches
//! the candidates from the store's indexes or scans the resource type, rewrites
//! Entra's membership check into membership-table lookups, evaluates the filter on
//! the rendered resource, and pages (by start index, or after a cursor id) and sorts.
//! Memory is bounded by the page; sorted queries keep (sort value, id) pairs of the
//! best `startIndex + count` matches, and `sortBy=userName` walks its index.
//! SCIM list responses, `.search` and the admin page's lists all come through here.
//! It knows neither HTTP nor redb.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::render::{refs_attr, render, with_references, DerivedText, Resource};
use crate::scim::error::ScimError;
use crate::scim::filter::{self, Filter, Prefilter};
use crate::scim::path::AttrPath;
use crate::scim::query::{self, ListParams, Lookup};
use crate::scim::resource::{Attributes, Projection};
use crate::scim::schema::ResourceType;
use crate::store::{RawResource, Snapshot, StoreResult, StoredResource, StoredText};

/// A list query: which resources, which page, which attributes.
#[derive(Debug, Clone)]
pub(crate) struct Query {
    /// The resource type listed; `None` lists every type (`POST /.search` at the
    /// root, RFC 7644 §3.4.3).
    pub rt: Option<ResourceType>,
    /// Filter, sort, start index and count, validated by `ListParams::parse`.
    pub params: ListParams,
    /// `attributes` / `excludedAttributes` (RFC 7644 §3.9).
    pub projection: Projection,
    pub paging: Paging,
}

/// How a query pages through its matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Paging {
    /// RFC 7644 §3.4.2.4: `params.start_index` (1-based) and `params.count`; the
    /// total number of matches is counted.
    Index,
    /// The first `params.count` matches whose id sorts after the given one (from the
    /// start when `None`), in id order: cost bounded by the page, whatever the page's
    /// depth, and no total. Only for one resource type and without `sortBy`.
    After(Option<String>),
    /// RFC 9865 `previousCursor`: the last `params.count` matches whose id sorts
    /// before the given one (the first id of the page the client goes back from), in
    /// id order; when no more than `count` matches precede it, the first page, as
    /// `After(None)` answers it (so going back from the second page lands on the
    /// first, with its total). Same restrictions as `After`.
    Before(String),
}

/// One page of a query's matches.
#[derive(Debug, Clone)]
pub(crate) struct Page {
    /// All matches (`totalResults`); with `Paging::After` and a filter only on the
    /// first page (which counts them; later pages stop after themselves and the
    /// edge's cursor carries the first page's count).
    pub total: Option<usize>,
    /// The 1-based index of the first resource (`startIndex`; 1 with a cursor).
    pub start_index: usize,
    /// The page, projected as asked.
    pub resources: Vec<Resource>,
    /// With cursor paging: the id to continue after when more matches follow
    /// (`nextCursor`).
    pub next_after: Option<String>,
    /// With cursor paging, on every page but the first: the id the previous page
    /// ends before (`previousCursor`, `Paging::Before`), i.e. this page's first id.
    pub prev_before: Option<String>,
}

/// Runs `q` on `snapshot`. `base` is the SCIM base URL for `meta.location` and
/// `$ref`. Errors: 400 `invalidFilter` for a filter the resource type does not
/// support, 400 `invalidValue` for a `sortBy` no listed type has
/// (`query::check_sort_by`), and for cursor paging over several types or with a sort;
/// storage errors as `StoreError`.
pub(crate) fn run(snapshot: &Snapshot, q: &Query, base: &str) -> StoreResult<Page> {
    let types: Vec<ResourceType> = match q.rt {
        Some(rt) => vec![rt],
        None => ResourceType::ALL.to_vec(),
    };
    if let (Some(f), [rt]) = (&q.params.filter, types.as_slice()) {
        filter::validate(f, *rt)?;
    }
    if let Some(path) = &q.params.sort_by {
        query::check_sort_by(path, &types)?;
    }
    match (&q.paging, q.rt, &q.params.sort_by) {
        (Paging::Index, _, _) => index_page(snapshot, &types, q, base),
        (Paging::After(after), Some(rt), None) => {
            after_page(snapshot, rt, after.as_deref(), q, base)
        }
        (Paging::Before(before), Some(rt), None) => before_page(snapshot, rt, before, q, base),
        _ => Err(ScimError::invalid_value(
            "cursor paging (RFC 9865) cannot be combined with sortBy, nor used on the service \
             root: its pages come in id order; drop sortBy, or page with startIndex",
        )
        .into()),
    }
}

/// Whether `q` reads at most one resource, and not a group's members: one type and
/// a filter whose index plan is an `id` or a `userName` (each names one resource),
/// alone or in an `and`. Such a query costs what a GET by id costs, so callers may
/// run it where they are, as a GET runs, without the hand-over to the blocking
/// pool (a thread wake-up per request: issue 10's `userName eq` lookups).
pub(crate) fn reads_at_most_one(q: &Query) -> bool {
    fn one(l: &Lookup) -> bool {
        match l {
            Lookup::Id(_) | Lookup::UserName(_) => true,
            Lookup::All(parts) => parts.iter().any(one),
            _ => false,
        }
    }
    let (Some(rt), Some(f)) = (q.rt, &q.params.filter) else {
        return false;
    };
    let members = rt == ResourceType::Group && q.projection.includes(rt, refs_attr(rt));
    !members && query::plan(f, rt).is_some_and(|l| one(&l))
}

/// Index paging: counts every match and keeps the page. Unsorted, the matches come in
/// id order; sorted by the User's `userName`, in the order of its index; sorted by
/// anything else, only the sort value and id of the best `startIndex + count`
/// matches are kept, and the page is rendered at the end. Memory is bounded by
/// `startIndex + count` small pairs, never by the directory.
fn index_page(
    snapshot: &Snapshot,
    types: &[ResourceType],
    q: &Query,
    base: &str,
) -> StoreResult<Page> {
    let p = &q.params;
    let start = p.start_index - 1;
    let end = start.saturating_add(p.count);
    let (page, total) = match (&p.sort_by, types) {
        (Some(path), [rt]) if query::sorts_by_user_name(*rt, path) => {
            user_name_order(snapshot, q, base, start, end)?
        }
        (Some(path), _) => best_sorted(snapshot, types, q, path, base, start, end)?,
        (None, _) => id_order(snapshot, types, q, base, start, end)?,
    };
    let resources = page.into_iter().map(|r| r.project(&q.projection)).collect();
    Ok(Page {
        total: Some(total),
        start_index: p.start_index,
        resources,
        next_after: None,
        prev_before: None,
    })
}

/// Unsorted: matches in id order; without a filter the table's length is the total
/// and the rows before the page are skipped by key.
fn id_order(
    snapshot: &Snapshot,
    types: &[ResourceType],
    q: &Query,
    base: &str,
    start: usize,
    end: usize,
) -> StoreResult<(Vec<Resource>, usize)> {
    let mut page = Vec::new();
    if let ([rt], None) = (types, &q.params.filter) {
        let total = snapshot.count(*rt)? as usize;
        let eval = Evaluator::new(snapshot, *rt, q, base);
        let take = end.min(total).saturating_sub(start);
        if take > 0 {
            snapshot.scan_skipping(*rt, start, |r| {
                page.push(eval.finish(Match::Stored(r))?);
                Ok(page.len() < take)
            })?;
        }
        return Ok((page, total));
    }
    let mut matched = 0usize;
    each_match(snapshot, types, q, base, &mut |eval, _, m| {
        offer(eval, m, &mut matched, start..end, &mut page)
    })?;
    Ok((page, matched))
}

/// Counts one more match and renders it into `page` when its position (0-based,
/// in match order) falls in `window`.
fn offer(
    eval: &Evaluator<'_>,
    m: Match,
    matched: &mut usize,
    window: std::ops::Range<usize>,
    page: &mut Vec<Resource>,
) -> StoreResult<()> {
    if window.contains(matched) {
        page.push(eval.finish(m)?);
    }
    *matched += 1;
    Ok(())
}

/// Sorted by userName: walks the userName index (lowercased, the order caseExact
/// false asks for), reading a user only when the filter or the page needs it.
fn user_name_order(
    snapshot: &Snapshot,
    q: &Query,
    base: &str,
    start: usize,
    end: usize,
) -> StoreResult<(Vec<Resource>, usize)> {
    let rt = ResourceType::User;
    let eval = Evaluator::new(snapshot, rt, q, base);
    let descending = q.params.descending;
    let mut page = Vec::new();
    if q.params.filter.is_none() {
        let total = snapshot.count(rt)? as usize;
        let take = end.min(total).saturating_sub(start);
        if take > 0 {
            snapshot.users_by_name(descending, start, |id| {
                if let Some(r) = snapshot.get_raw(rt, id, |raw| eval.finish(eval.whole(raw)?))? {
                    page.push(r);
                }
                Ok(page.len() < take)
            })?;
        }
        return Ok((page, total));
    }
    let mut matched = 0usize;
    snapshot.users_by_name(descending, 0, |id| {
        snapshot.get_raw(rt, id, |raw| {
            if let Some(m) = eval.matching(raw)? {
                offer(&eval, m, &mut matched, start..end, &mut page)?;
            }
            Ok(())
        })?;
        Ok(true)
    })?;
    Ok((page, matched))
}

/// A match kept for sorting: its sort value and where to find it again.
type Ranked = (Option<Value>, ResourceType, String);

/// Sorted by anything else: keeps the sort value and id of the best `end` matches
/// (sorting and cutting whenever twice that many have gathered; ties keep id
/// order, as a stable sort of every match would), then reads and renders the page.
fn best_sorted(
    snapshot: &Snapshot,
    types: &[ResourceType],
    q: &Query,
    path: &AttrPath,
    base: &str,
    start: usize,
    end: usize,
) -> StoreResult<(Vec<Resource>, usize)> {
    let descending = q.params.descending;
    let order = |a: &Ranked, b: &Ranked| {
        query::compare_sort_values(a.1, a.0.as_ref(), b.0.as_ref(), path, descending)
    };
    let mut best: Vec<Ranked> = Vec::new();
    let mut matched = 0usize;
    each_match(snapshot, types, q, base, &mut |eval, rt, m| {
        matched += 1;
        if end == 0 {
            return Ok(());
        }
        let (value, id) = eval.sort_value(m, path)?;
        best.push((value, rt, id));
        if best.len() >= end.saturating_mul(2).max(64) {
            best.sort_by(order);
            best.truncate(end);
        }
        Ok(())
    })?;
    best.sort_by(order);
    best.truncate(end);
    let mut page = Vec::new();
    for (_, rt, id) in best.into_iter().skip(start) {
        let eval = Evaluator::new(snapshot, rt, q, base);
        if let Some(r) = snapshot.get_raw(rt, &id, |raw| eval.finish(eval.whole(raw)?))? {
            page.push(r);
        }
    }
    Ok((page, matched))
}

/// Cursor paging: the matches after `after`, in id order, one more looked at to know
/// whether a next page exists.
fn after_page(
    snapshot: &Snapshot,
    rt: ResourceType,
    after: Option<&str>,
    q: &Query,
    base: &str,
) -> StoreResult<Page> {
    let count = q.params.count;
    let eval = Evaluator::new(snapshot, rt, q, base);
    let mut page: Vec<Resource> = Vec::new();
    let mut more = false;
    // The first page of a filtered listing counts every match (as an index page
    // does), once: the edge carries that total in its cursors (RFC 9865 §2: an
    // accurate totalResults, or an estimate).
    let counting = q.params.filter.is_some() && after.is_none();
    let mut matched = 0usize;
    let window = after.map_or(Window::All, Window::After);
    candidates(snapshot, rt, q.params.filter.as_ref(), window, &mut |r| {
        let Some(m) = eval.matching(r)? else {
            return Ok(true);
        };
        matched += 1;
        if page.len() == count {
            more = true;
            return Ok(counting);
        }
        page.push(eval.finish(m)?);
        Ok(true)
    })?;
    let next_after = if more {
        page.last().map(|r| r.id().to_owned())
    } else {
        None
    };
    // A page reached by a cursor can go back (RFC 9865 §2.2), the first cannot.
    let prev_before = after.and(page.first()).map(|r| r.id().to_owned());
    // Unfiltered, the table knows the total without counting; filtered, the first
    // page counted it and later pages leave it to the cursor.
    let total = match (&q.params.filter, after) {
        (None, _) => Some(snapshot.count(rt)? as usize),
        (Some(_), None) => Some(matched),
        (Some(_), Some(_)) => None,
    };
    Ok(Page {
        total,
        start_index: 1,
        resources: page.into_iter().map(|r| r.project(&q.projection)).collect(),
        next_after,
        prev_before,
    })
}

/// `Paging::Before`: walks back from `before` over the matches (the index plan's
/// candidates, or the table's rows in reverse key order), keeping the first `count`
/// it meets and stopping at the one after them; when it reaches the start first, the
/// answer is the first page. Costs what the forward page costs: the rows between
/// the page and the `count + 1`-th match back, and one match forward for
/// `nextCursor`. The total is the table's length when unfiltered and left to the
/// cursor otherwise (as on any later page).
fn before_page(
    snapshot: &Snapshot,
    rt: ResourceType,
    before: &str,
    q: &Query,
    base: &str,
) -> StoreResult<Page> {
    let count = q.params.count;
    let filter = q.params.filter.as_ref();
    let eval = Evaluator::new(snapshot, rt, q, base);
    let mut page: Vec<Resource> = Vec::new();
    let mut more_before = false;
    candidates(snapshot, rt, filter, Window::Before(before), &mut |r| {
        let Some(m) = eval.matching(r)? else {
            return Ok(true);
        };
        if page.len() == count {
            more_before = true;
            return Ok(false);
        }
        page.push(eval.finish(m)?);
        Ok(true)
    })?;
    let (Some(first), Some(last), true) = (page.last(), page.first(), more_before) else {
        return after_page(snapshot, rt, None, q, base);
    };
    // Walked backwards: `page` is newest first.
    let (first, last) = (first.id().to_owned(), last.id().to_owned());
    let mut more_after = false;
    candidates(snapshot, rt, filter, Window::After(&last), &mut |r| {
        more_after = eval.matching(r)?.is_some();
        Ok(!more_after)
    })?;
    page.reverse();
    Ok(Page {
        total: match filter {
            None => Some(snapshot.count(rt)? as usize),
            Some(_) => None,
        },
        start_index: 1,
        resources: page.into_iter().map(|r| r.project(&q.projection)).collect(),
        next_after: more_after.then_some(last),
        prev_before: Some(first),
    })
}

/// Which ids of a type [`candidates`] considers, and in which order.
#[derive(Debug, Clone, Copy)]
enum Window<'a> {
    /// Every id, ascending.
    All,
    /// The ids after this one, ascending.
    After(&'a str),
    /// The ids before this one, descending.
    Before(&'a str),
}

/// Calls `f` with every resource of `types` that matches `q`'s filter (each type's
/// filter candidates, in id order), with the type's evaluator and the type.
fn each_match(
    snapshot: &Snapshot,
    types: &[ResourceType],
    q: &Query,
    base: &str,
    f: &mut dyn FnMut(&Evaluator<'_>, ResourceType, Match<'_>) -> StoreResult<()>,
) -> StoreResult<()> {
    for &rt in types {
        let eval = Evaluator::new(snapshot, rt, q, base);
        candidates(
            snapshot,
            rt,
            q.params.filter.as_ref(),
            Window::All,
            &mut |r| {
                if let Some(m) = eval.matching(r)? {
                    f(&eval, rt, m)?;
                }
                Ok(true)
            },
        )?;
    }
    Ok(())
}

/// Feeds `f` the rows of `rt` that the filter may match, undecoded, in id order
/// (descending for `Window::Before`): the index plan's candidates when the filter
/// has one, else every row of the table. Only ids in `window` are considered.
/// Stops when `f` returns false.
fn candidates(
    snapshot: &Snapshot,
    rt: ResourceType,
    filter: Option<&Filter>,
    window: Window<'_>,
    f: &mut dyn FnMut(RawResource<'_>) -> StoreResult<bool>,
) -> StoreResult<()> {
    match filter.and_then(|f| query::plan(f, rt)) {
        Some(lookup) => {
            let mut ids = execute(snapshot, rt, &lookup)?;
            ids.sort();
            ids.dedup();
            let ids: Box<dyn Iterator<Item = &String>> = match window {
                Window::All => Box::new(ids.iter()),
                Window::After(a) => Box::new(ids.iter().filter(move |id| id.as_str() > a)),
                Window::Before(b) => Box::new(ids.iter().rev().filter(move |id| id.as_str() < b)),
            };
            for id in ids {
                if snapshot.get_raw(rt, id, &mut *f)? == Some(false) {
                    break;
                }
            }
            Ok(())
        }
        None => match window {
            Window::All => snapshot.scan_raw_after(rt, None, f),
            Window::After(a) => snapshot.scan_raw_after(rt, Some(a), f),
            Window::Before(b) => snapshot.scan_raw_before(rt, b, f),
        },
    }
}

/// Runs an index plan: the candidate ids (unsorted, possibly repeated).
fn execute(snapshot: &Snapshot, rt: ResourceType, lookup: &Lookup) -> StoreResult<Vec<String>> {
    Ok(match lookup {
        Lookup::Id(id) => vec![id.clone()],
        Lookup::UserName(n) => snapshot.find_by_user_name(n)?.into_iter().collect(),
        Lookup::ExternalId(e) => snapshot.find_by_external_id(rt, e)?,
        Lookup::GroupName(n) => snapshot.find_groups_by_name(n)?,
        Lookup::Email(e) => snapshot.find_users_by_email(e)?,
        Lookup::All(parts) => {
            let mut sets = parts.iter().map(|p| execute(snapshot, rt, p));
            let mut acc = match sets.next() {
                Some(s) => s?,
                None => Vec::new(),
            };
            // Linear in the sizes of the sets (a scan of one list per id of the
            // other made an `and` of two 50,000-id terms take seconds).
            for s in sets {
                let s: std::collections::HashSet<String> = s?.into_iter().collect();
                acc.retain(|id| s.contains(id));
            }
            acc
        }
        Lookup::Any(parts) => {
            let mut acc = Vec::new();
            for p in parts {
                acc.extend(execute(snapshot, rt, p)?);
            }
            acc
        }
    })
}

/// A candidate that passed the filter, as far as it was decoded to decide.
enum Match<'r> {
    /// Decoded whole.
    Stored(StoredResource),
    /// Read as text, with only the attributes the filter and the sort read parsed
    /// (`Evaluator::keys`): rendered from that text when the page needs no
    /// projection, else decoded whole from the row.
    Text {
        raw: RawResource<'r>,
        text: StoredText<'r>,
        attrs: Attributes,
    },
    Rendered {
        full: Map<String, Value>,
        with_refs: bool,
        id: String,
    },
}

/// Decides, for one resource type, whether a candidate matches, rendering it (and
/// loading its references) only as far as the filter and the page need.
struct Evaluator<'a> {
    snapshot: &'a Snapshot,
    rt: ResourceType,
    filter: Option<&'a Filter>,
    /// The filter names `members` (Group) or `groups` (User).
    refs_in_filter: bool,
    /// The projection returns `members` / `groups`.
    wants_refs: bool,
    /// The filter can be evaluated on the stored attributes (see `matching`).
    on_stored_form: bool,
    /// What a scanned row's bytes must contain to possibly match (`on_stored_form`
    /// filters only): rows without it are never decoded.
    prefilter: Option<Prefilter>,
    /// The only top-level attributes the filter and the sort read, when both can do
    /// with stored attributes: rows are read as text and only these parsed.
    keys: Option<Vec<&'static str>>,
    /// The page is rendered without a projection: straight from the stored text.
    as_text: bool,
    base: &'a str,
}

impl<'a> Evaluator<'a> {
    fn new(snapshot: &'a Snapshot, rt: ResourceType, q: &'a Query, base: &'a str) -> Self {
        let filter = q.params.filter.as_ref();
        let names = |n: &str| filter.is_some_and(|f| query::mentions(f, n));
        let not_stored = ["id", "meta", "schemas", refs_attr(rt)];
        let on_stored_form = !not_stored.iter().any(|n| names(n));
        let filter_keys = match filter {
            None => Some(Vec::new()),
            Some(f) if on_stored_form => query::filter_keys(f, rt),
            Some(_) => None,
        };
        let sort_key = match &q.params.sort_by {
            None => Some(None),
            Some(path) => query::top_level_key(rt, path)
                .filter(|k| !not_stored.iter().any(|n| n.eq_ignore_ascii_case(k)))
                .map(Some),
        };
        let keys = match (filter_keys, sort_key) {
            (Some(mut keys), Some(sort)) => {
                keys.extend(sort.filter(|k| !keys.contains(k)));
                Some(keys)
            }
            _ => None,
        };
        Evaluator {
            snapshot,
            rt,
            filter,
            refs_in_filter: names(refs_attr(rt)),
            on_stored_form,
            prefilter: filter
                .filter(|_| on_stored_form)
                .and_then(|f| Prefilter::new(f, rt)),
            keys,
            wants_refs: q.projection.includes(rt, refs_attr(rt)),
            as_text: q.projection.returns_default(),
            base,
        }
    }

    /// A row the page shows whatever the filter (it matched already, or there is
    /// none): read as text when it will be rendered from it.
    fn whole<'r>(&self, raw: RawResource<'r>) -> StoreResult<Match<'r>> {
        Ok(if self.as_text {
            Match::Text {
                raw,
                text: raw.text()?,
                attrs: Attributes::new(),
            }
        } else {
            Match::Stored(raw.decode()?)
        })
    }

    /// The candidate if the filter matches it. A filter that names neither `id`,
    /// `meta`, `schemas` nor the references is evaluated on the stored attributes,
    /// which have the rendered shape for every other attribute, so a scan renders
    /// only what it returns; the row is first checked by the prefilter on its
    /// bytes, then read as text with only the attributes the filter and sort read
    /// parsed.
    fn matching<'r>(&self, raw: RawResource<'r>) -> StoreResult<Option<Match<'r>>> {
        if let Some(p) = &self.prefilter {
            if !p.may_match(raw.bytes()) {
                return Ok(None);
            }
        }
        if let Some(keys) = &self.keys {
            let text = raw.text()?;
            let attrs = text.values_of(keys)?;
            let matched = self
                .filter
                .is_none_or(|f| filter::matches(f, self.rt, &attrs));
            return Ok(matched.then_some(Match::Text { raw, text, attrs }));
        }
        let r = raw.decode()?;
        let Some(f) = self.filter else {
            return Ok(Some(Match::Stored(r)));
        };
        if self.on_stored_form {
            return Ok(filter::matches(f, self.rt, &r.attrs).then_some(Match::Stored(r)));
        }
        // Evaluate without loading references when the filter can do without: a
        // group's `members[value eq "X"]` becomes one membership-table lookup.
        let resolved: Option<Cow<'_, Filter>> = if !self.refs_in_filter {
            Some(Cow::Borrowed(f))
        } else if self.rt == ResourceType::Group {
            let mut err = None;
            let resolved = query::resolve_member_checks(f, &mut |m| {
                self.snapshot.is_member(&r.id, m).unwrap_or_else(|e| {
                    err = Some(e);
                    false
                })
            });
            if let Some(e) = err {
                return Err(e);
            }
            resolved.map(Cow::Owned)
        } else {
            None
        };
        let (with_refs, filter) = match resolved {
            Some(r) => (false, r),
            None => (true, Cow::Borrowed(f)),
        };
        let id = r.id.clone();
        let full = render(self.snapshot, self.rt, r, with_refs, self.base)?;
        Ok(
            filter::matches(&filter, self.rt, &full).then_some(Match::Rendered {
                full,
                with_refs,
                id,
            }),
        )
    }

    /// A match's sort value and id (rendered without references to find the value).
    fn sort_value(&self, m: Match<'_>, path: &AttrPath) -> StoreResult<(Option<Value>, String)> {
        Ok(match m {
            Match::Stored(r) => {
                let id = r.id.clone();
                let full = render(self.snapshot, self.rt, r, false, self.base)?;
                (query::sort_value(self.rt, &full, path), id)
            }
            Match::Text { text, attrs, .. } => (query::sort_value(self.rt, &attrs, path), text.id),
            Match::Rendered { full, id, .. } => (query::sort_value(self.rt, &full, path), id),
        })
    }

    /// The match rendered with the references the projection wants.
    fn finish(&self, m: Match<'_>) -> StoreResult<Resource> {
        let full = match m {
            Match::Stored(r) => render(self.snapshot, self.rt, r, self.wants_refs, self.base)?,
            Match::Text { raw, text, .. } => {
                if self.as_text {
                    let id = text.id.clone();
                    let derived = DerivedText::new(self.snapshot, self.rt, text, self.wants_refs)?;
                    if let Some(json) = derived.render(self.snapshot, self.wants_refs, self.base)? {
                        return Ok(Resource::text(self.rt, id, json));
                    }
                }
                // A projection, or attributes `render_text` leaves to `render`.
                render(
                    self.snapshot,
                    self.rt,
                    raw.decode()?,
                    self.wants_refs,
                    self.base,
                )?
            }
            Match::Rendered {
                mut full,
                with_refs,
                id,
            } => {
                if self.wants_refs && !with_refs {
                    with_references(self.snapshot, self.rt, &mut full, &id, self.base)?;
                }
                full
            }
        };
        Ok(Resource::tree(self.rt, full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::store::{Actor, Store, StoreOptions};
    use serde_json::json;

    fn store_with_users(n: usize) -> (tempfile::TempDir, Store) {
        store_with(
            n,
            |i| json!({"userName": format!("u{i:02}@example.com"), "active": i % 2 == 0}),
        )
    }

    /// A store with users `0..n`, user `i` holding `attrs(i)`.
    fn store_with(n: usize, attrs: impl Fn(usize) -> Value) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), &StoreOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..n {
            let attrs = attrs(i);
            rt.block_on(store.create(
                ResourceType::User,
                attrs.as_object().unwrap().clone(),
                vec![],
                Actor::system("test"),
                Timestamp::now(),
                None,
            ))
            .unwrap();
        }
        (dir, store)
    }

    fn query(filter: Option<&str>, count: usize, paging: Paging) -> Query {
        Query {
            rt: Some(ResourceType::User),
            params: ListParams::parse(filter, None, None, None, Some(&count.to_string()), 10, 100)
                .unwrap(),
            projection: Projection::default(),
            paging,
        }
    }

    fn names(page: &Page) -> Vec<String> {
        page.resources
            .iter()
            .map(|r| r.get("userName").unwrap().as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_lookup_without_projection_is_written_from_the_stored_text_with_the_trees_bytes() {
        let (_dir, store) = store_with_users(5);
        let snapshot = store.snapshot().unwrap();
        let base = "https://h/scim/v2";
        let q = query(Some(r#"userName eq "U03@example.com""#), 10, Paging::Index);
        assert!(reads_at_most_one(&q));
        let page = run(&snapshot, &q, base).unwrap();
        let r = &page.resources[0];
        assert!(r.is_text());
        let mut text = Vec::new();
        r.write_json(&mut text);
        let stored = snapshot.get(ResourceType::User, r.id()).unwrap().unwrap();
        let tree = render(&snapshot, ResourceType::User, stored, true, base).unwrap();
        assert_eq!(
            String::from_utf8(text).unwrap(),
            serde_json::to_string(&tree).unwrap()
        );
        assert_eq!(names(&page), ["u03@example.com"]);
        // A projection renders the tree and applies it.
        let mut q = q;
        q.projection = Projection::parse(None, Some("active")).unwrap();
        let page = run(&snapshot, &q, base).unwrap();
        assert!(!page.resources[0].is_text());
        assert_eq!(names(&page), ["u03@example.com"]);
        assert_eq!(page.resources[0].get("active"), None);
        // The filter is still evaluated on what the index found.
        let q = query(
            Some(r#"userName eq "u03@example.com" and active eq true"#),
            10,
            Paging::Index,
        );
        assert!(reads_at_most_one(&q));
        assert_eq!(run(&snapshot, &q, base).unwrap().resources.len(), 0);
    }

    #[test]
    fn only_lookups_of_one_resource_without_a_groups_members_read_at_most_one() {
        let at_most_one = |rt, filter: Option<&str>, excluded: Option<&str>| {
            let mut q = query(filter, 10, Paging::Index);
            q.rt = rt;
            q.projection = Projection::parse(None, excluded).unwrap();
            reads_at_most_one(&q)
        };
        let (user, group) = (Some(ResourceType::User), Some(ResourceType::Group));
        assert!(at_most_one(user, Some(r#"id eq "a""#), None));
        assert!(at_most_one(
            user,
            Some(r#"emails eq "e" and userName eq "a""#),
            None
        ));
        assert!(at_most_one(group, Some(r#"id eq "g""#), Some("members")));
        assert!(!at_most_one(group, Some(r#"id eq "g""#), None));
        assert!(!at_most_one(user, Some(r#"emails eq "e""#), None));
        assert!(!at_most_one(
            user,
            Some(r#"userName eq "a" or id eq "b""#),
            None
        ));
        assert!(!at_most_one(user, Some(r#"title co "x""#), None));
        assert!(!at_most_one(user, None, None));
        assert!(!at_most_one(None, Some(r#"id eq "a""#), None));
    }

    #[test]
    fn an_and_of_indexed_terms_intersects_the_candidates() {
        // Users 0..12: even ones share one email, every third one an externalId;
        // the `and` of the two index lookups is users 0 and 6, whatever the order of
        // the terms.
        let (_d, store) = store_with(12, |i| {
            let mut attrs = json!({"userName": format!("u{i:02}@example.com")});
            if i % 2 == 0 {
                attrs["emails"] = json!([{"value": "shared@example.com"}]);
            }
            if i % 3 == 0 {
                attrs["externalId"] = json!("e");
            }
            attrs
        });
        let snap = store.snapshot().unwrap();
        for filter in [
            "emails.value eq \"shared@example.com\" and externalId eq \"e\"",
            "externalId eq \"e\" and emails.value eq \"shared@example.com\"",
        ] {
            let parsed = crate::scim::filter::parse(filter).unwrap();
            assert!(
                matches!(
                    query::plan(&parsed, ResourceType::User),
                    Some(query::Lookup::All(_))
                ),
                "{filter} is not planned as an intersection"
            );
            let page = run(&snap, &query(Some(filter), 100, Paging::Index), "").unwrap();
            assert_eq!(
                names(&page),
                ["u00@example.com", "u06@example.com"],
                "{filter}"
            );
        }
    }

    #[test]
    fn cursor_pages_follow_id_order_without_a_total() {
        let (_d, store) = store_with_users(7);
        let snap = store.snapshot().unwrap();
        let first = run(&snap, &query(None, 3, Paging::After(None)), "").unwrap();
        assert_eq!(
            names(&first),
            ["u00@example.com", "u01@example.com", "u02@example.com"]
        );
        assert_eq!(first.total, Some(7));
        let next = first.next_after.clone().unwrap();
        assert_eq!(next, first.resources[2].id());
        let second = run(&snap, &query(None, 3, Paging::After(Some(next))), "").unwrap();
        assert_eq!(names(&second)[0], "u03@example.com");
        let last = run(
            &snap,
            &query(None, 3, Paging::After(second.next_after.clone())),
            "",
        )
        .unwrap();
        assert_eq!(names(&last), ["u06@example.com"]);
        assert_eq!(last.next_after, None);
    }

    #[test]
    fn cursor_pages_apply_the_filter() {
        let (_d, store) = store_with_users(9);
        let snap = store.snapshot().unwrap();
        let q = |after| query(Some("active eq true"), 2, Paging::After(after));
        let first = run(&snap, &q(None), "").unwrap();
        assert_eq!(names(&first), ["u00@example.com", "u02@example.com"]);
        let second = run(&snap, &q(first.next_after.clone()), "").unwrap();
        assert_eq!(names(&second), ["u04@example.com", "u06@example.com"]);
        let third = run(&snap, &q(second.next_after.clone()), "").unwrap();
        assert_eq!(names(&third), ["u08@example.com"]);
        assert_eq!(third.next_after, None);
        // The first page counts the matches; later ones leave it to the cursor.
        assert_eq!(first.total, Some(5));
        assert_eq!(second.total, None);
        // An indexed filter pages the same way.
        let one = query(
            Some("userName eq \"u05@example.com\""),
            2,
            Paging::After(None),
        );
        assert_eq!(names(&run(&snap, &one, "").unwrap()), ["u05@example.com"]);
    }

    #[test]
    fn before_pages_walk_back_over_scanned_and_indexed_candidates() {
        // Even users share an email (an index plan), `active eq true` the same ones
        // by scan: both walk back alike.
        let (_d, store) = store_with(9, |i| {
            let mut attrs =
                json!({"userName": format!("u{i:02}@example.com"), "active": i % 2 == 0});
            if i % 2 == 0 {
                attrs["emails"] = json!([{"value": "even@example.com"}]);
            }
            attrs
        });
        let snap = store.snapshot().unwrap();
        for filter in ["active eq true", "emails.value eq \"even@example.com\""] {
            let q = |paging| query(Some(filter), 2, paging);
            let first = run(&snap, &q(Paging::After(None)), "").unwrap();
            let second = run(&snap, &q(Paging::After(first.next_after.clone())), "").unwrap();
            let third = run(&snap, &q(Paging::After(second.next_after.clone())), "").unwrap();
            assert_eq!(names(&third), ["u08@example.com"], "{filter}");
            assert_eq!(first.prev_before, None, "the first page does not go back");
            let back = run(
                &snap,
                &q(Paging::Before(third.prev_before.clone().unwrap())),
                "",
            )
            .unwrap();
            assert_eq!(
                names(&back),
                ["u04@example.com", "u06@example.com"],
                "{filter}"
            );
            assert_eq!(back.next_after, second.next_after, "{filter}");
            assert_eq!(back.prev_before, second.prev_before, "{filter}");
            assert_eq!(back.total, None, "left to the cursor");
            let start = run(&snap, &q(Paging::Before(back.prev_before.unwrap())), "").unwrap();
            assert_eq!(names(&start), names(&first), "{filter}");
            assert_eq!(
                (start.total, start.prev_before),
                (Some(5), None),
                "{filter}"
            );
        }
        // Unfiltered, the table's length; count 0 gives the empty first page.
        let all = |paging| query(None, 0, paging);
        let none = run(&snap, &all(Paging::Before("~".into())), "").unwrap();
        assert_eq!((none.resources.len(), none.total), (0, Some(9)));
        assert_eq!((none.next_after, none.prev_before), (None, None));
    }

    #[test]
    fn index_paging_counts_every_match() {
        let (_d, store) = store_with_users(9);
        let snap = store.snapshot().unwrap();
        let mut q = query(Some("active eq false"), 2, Paging::Index);
        q.params.start_index = 2;
        let page = run(&snap, &q, "").unwrap();
        assert_eq!(page.total, Some(4));
        assert_eq!(names(&page), ["u03@example.com", "u05@example.com"]);
        let all = run(&snap, &query(None, 0, Paging::Index), "").unwrap();
        assert_eq!(all.total, Some(9));
        assert!(all.resources.is_empty());
    }

    fn sorted(filter: Option<&str>, by: &str, order: &str, start: usize, count: usize) -> Query {
        let mut q = query(filter, count, Paging::Index);
        q.params = ListParams::parse(
            filter,
            Some(by),
            Some(order),
            Some(&start.to_string()),
            Some(&count.to_string()),
            10,
            100,
        )
        .unwrap();
        q
    }

    #[test]
    fn sorting_by_user_name_walks_the_index_in_either_order() {
        let (_d, store) = store_with_users(7);
        let snap = store.snapshot().unwrap();
        let page = run(&snap, &sorted(None, "userName", "descending", 2, 3), "").unwrap();
        assert_eq!(page.total, Some(7));
        assert_eq!(
            names(&page),
            ["u05@example.com", "u04@example.com", "u03@example.com"]
        );
        let page = run(
            &snap,
            &sorted(Some("active eq true"), "USERNAME", "ascending", 2, 2),
            "",
        )
        .unwrap();
        assert_eq!(page.total, Some(4));
        assert_eq!(names(&page), ["u02@example.com", "u04@example.com"]);
        let past = run(&snap, &sorted(None, "userName", "ascending", 9, 3), "").unwrap();
        assert!(past.resources.is_empty());
    }

    #[test]
    fn scans_decode_only_what_they_read_and_render_the_page_whole() {
        // Titles: "Senior Engineer" (i % 3 == 0), the Kelvin sign (U+212A, which
        // folds to "k": the prefilter must keep its non-ASCII row), "Accountant".
        let (_d, store) = store_with(30, |i| {
            let title = match i % 3 {
                0 => "Senior Engineer",
                1 => "\u{212A}iosk lead",
                _ => "Accountant",
            };
            json!({"userName": format!("u{i:02}@example.com"), "title": title,
                   "displayName": format!("User {i}")})
        });
        let snap = store.snapshot().unwrap();
        let eval_for = |f: &str| {
            let q = query(Some(f), 5, Paging::Index);
            let e = Evaluator::new(&snap, ResourceType::User, &q, "");
            (e.prefilter.is_some(), e.keys.clone())
        };
        assert_eq!(
            eval_for(r#"title co "engineer""#),
            (true, Some(vec!["title"]))
        );
        assert_eq!(eval_for(r#"meta.version pr"#), (false, None));

        let page = run(
            &snap,
            &query(Some(r#"title co "ENGINEER""#), 5, Paging::Index),
            "",
        )
        .unwrap();
        assert_eq!(page.total, Some(10));
        assert_eq!(
            names(&page),
            [
                "u00@example.com",
                "u03@example.com",
                "u06@example.com",
                "u09@example.com",
                "u12@example.com"
            ]
        );
        // The page is the whole resource, not the attributes the filter read.
        let first = page.resources[0].attributes();
        assert_eq!(first["displayName"], "User 0");
        assert_eq!(first["meta"]["resourceType"], "User");
        let page = run(
            &snap,
            &query(Some(r#"title sw "k""#), 100, Paging::Index),
            "",
        )
        .unwrap();
        assert_eq!(
            page.total,
            Some(10),
            "the Kelvin-sign titles match caselessly"
        );
        let page = run(
            &snap,
            &query(Some(r#"title co "eng""#), 4, Paging::After(None)),
            "",
        )
        .unwrap();
        assert_eq!(page.resources.len(), 4);
        assert_eq!(page.resources[3].get("displayName").unwrap(), "User 9");
        assert!(page.next_after.is_some());
    }

    #[test]
    fn other_sort_keys_keep_only_the_best_and_break_ties_by_id() {
        let (_d, store) = store_with_users(150);
        let snap = store.snapshot().unwrap();
        // active: false sorts before true; equal values stay in id (creation) order,
        // across the cuts the bounded selection makes every 64 matches.
        let page = run(&snap, &sorted(None, "active", "ascending", 74, 4), "").unwrap();
        assert_eq!(page.total, Some(150));
        assert_eq!(
            names(&page),
            [
                "u147@example.com",
                "u149@example.com",
                "u00@example.com",
                "u02@example.com"
            ]
        );
        let page = run(
            &snap,
            &sorted(Some("userName sw \"u1\""), "active", "descending", 1, 3),
            "",
        )
        .unwrap();
        assert_eq!(page.total, Some(60));
        assert_eq!(
            names(&page),
            ["u10@example.com", "u12@example.com", "u14@example.com"]
        );
    }

    #[test]
    fn offset_pages_skip_to_the_start_index() {
        let (_d, store) = store_with_users(9);
        let snap = store.snapshot().unwrap();
        let mut q = query(None, 2, Paging::Index);
        q.params.start_index = 8;
        let page = run(&snap, &q, "").unwrap();
        assert_eq!(page.total, Some(9));
        assert_eq!(names(&page), ["u07@example.com", "u08@example.com"]);
        q.params.start_index = 10;
        assert!(run(&snap, &q, "").unwrap().resources.is_empty());
    }

    #[test]
    fn a_cursor_with_a_sort_or_several_types_is_refused() {
        let (_d, store) = store_with_users(1);
        let snap = store.snapshot().unwrap();
        let mut sorted = query(None, 2, Paging::After(None));
        sorted.params.sort_by = Some(crate::scim::path::AttrPath::parse("userName").unwrap());
        let mut every_type = query(None, 2, Paging::After(None));
        every_type.rt = None;
        for q in [sorted, every_type] {
            match run(&snap, &q, "") {
                Err(crate::store::StoreError::Scim(e)) => assert_eq!(e.status, 400),
                other => panic!("{other:?}"),
            }
        }
    }
}
