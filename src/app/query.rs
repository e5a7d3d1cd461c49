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

/// Runs `q` on `snapshot` on this thread. `base` is the SCIM base URL for
/// `meta.location` and `$ref`. Errors: 400 `invalidFilter` for a filter the resource
/// type does not support, 400 `invalidValue` for a `sortBy` no listed type has
/// (`query::check_sort_by`), and for cursor paging over several types or with a sort;
/// storage errors as `StoreError`.
pub(crate) fn run(snapshot: &Snapshot, q: &Query, base: &str) -> StoreResult<Page> {
    run_on(snapshot, q, base, Threads::One)
}

/// How many threads a query may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Threads {
    One,
    /// A query that reads every row of one type (a filter without an index plan, or
    /// a sort by anything but `userName`) splits the rows between this thread and
    /// one more (`Snapshot::scan_raw_halves`); the answer is the one-thread answer.
    Two,
}

/// Whether `q` reads every row of one resource type (and counts its matches): the
/// queries `Threads::Two` splits. A filter with an index plan, `sortBy=userName`,
/// cursor pages after the first and unfiltered offset pages read less.
pub(crate) fn scans_a_table(q: &Query) -> bool {
    let Some(rt) = q.rt else {
        return false;
    };
    let filtered = match &q.params.filter {
        Some(f) => query::plan(f, rt).is_none(),
        None => false,
    };
    match (&q.paging, &q.params.sort_by) {
        (Paging::Index, Some(path)) => {
            !query::sorts_by_user_name(rt, path) && (filtered || q.params.filter.is_none())
        }
        (Paging::Index, None) | (Paging::After(None), None) => filtered,
        _ => false,
    }
}

/// `run` with up to `threads` threads (see `Threads`).
pub(crate) fn run_on(
    snapshot: &Snapshot,
    q: &Query,
    base: &str,
    threads: Threads,
) -> StoreResult<Page> {
    let split = threads == Threads::Two && scans_a_table(q);
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
        (Paging::Index, _, _) => index_page(snapshot, &types, q, base, split),
        (Paging::After(after), Some(rt), None) => {
            after_page(snapshot, rt, after.as_deref(), q, base, split)
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
    split: bool,
) -> StoreResult<Page> {
    let p = &q.params;
    let start = p.start_index - 1;
    let end = start.saturating_add(p.count);
    let (page, total) = match (&p.sort_by, types) {
        (Some(path), [rt]) if query::sorts_by_user_name(*rt, path) => {
            user_name_order(snapshot, q, base, start, end)?
        }
        (Some(path), _) => {
            let (best, matched) = match types {
                [rt] if split => best_sorted_halves(snapshot, *rt, q, path, base, end)?,
                _ => best_sorted(snapshot, types, q, path, base, end)?,
            };
            (render_best(snapshot, q, base, best, start)?, matched)
        }
        (None, [rt]) if split => id_order_halves(snapshot, *rt, q, base, start, end)?,
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

/// The best `end` matches of a sorted query seen so far, and how many matched:
/// sorted and cut whenever twice that many have gathered. Ties are ordered by type
/// (in `ResourceType::ALL` order) and then id, the order the rows are walked in, so
/// the result is that of a stable sort of every match however the rows were shared
/// out (`best_sorted_halves`).
struct Best<'q> {
    kept: Vec<Ranked>,
    matched: usize,
    end: usize,
    path: &'q AttrPath,
    descending: bool,
}

impl<'q> Best<'q> {
    fn new(q: &'q Query, path: &'q AttrPath, end: usize) -> Self {
        Best {
            kept: Vec::new(),
            matched: 0,
            end,
            path,
            descending: q.params.descending,
        }
    }

    /// Counts one more match and keeps its sort value and id if it may be among
    /// the best `end`.
    fn offer(&mut self, eval: &Evaluator<'_>, rt: ResourceType, m: Match<'_>) -> StoreResult<()> {
        self.matched += 1;
        if self.end == 0 {
            return Ok(());
        }
        let (value, id) = eval.sort_value(m, self.path)?;
        self.kept.push((value, rt, id));
        if self.kept.len() >= self.end.saturating_mul(2).max(64) {
            self.cut();
        }
        Ok(())
    }

    fn cut(&mut self) {
        let (path, descending) = (self.path, self.descending);
        self.kept.sort_by(|a, b| {
            query::compare_sort_values(a.1, a.0.as_ref(), b.0.as_ref(), path, descending)
                .then(a.1.cmp(&b.1))
                .then_with(|| a.2.cmp(&b.2))
        });
        self.kept.truncate(self.end);
    }

    /// Adds what `other` kept and counted (the other half of a split scan).
    fn merge(&mut self, other: Best<'_>) {
        self.matched += other.matched;
        self.kept.extend(other.kept);
    }

    /// The best `end` (sort value, type, id) in order, and the number of matches.
    fn finish(mut self) -> (Vec<Ranked>, usize) {
        self.cut();
        (self.kept, self.matched)
    }
}

/// Sorted by anything else: keeps the sort value and id of the best `end` matches
/// (`Best`), then reads and renders the page.
fn best_sorted(
    snapshot: &Snapshot,
    types: &[ResourceType],
    q: &Query,
    path: &AttrPath,
    base: &str,
    end: usize,
) -> StoreResult<(Vec<Ranked>, usize)> {
    let mut best = Best::new(q, path, end);
    each_match(snapshot, types, q, base, &mut |eval, rt, m| {
        best.offer(eval, rt, m)
    })?;
    Ok(best.finish())
}

/// `best_sorted` of one type's every row, split over two threads
/// (`Snapshot::scan_raw_halves`): each side keeps its own best, then they are merged.
fn best_sorted_halves(
    snapshot: &Snapshot,
    rt: ResourceType,
    q: &Query,
    path: &AttrPath,
    base: &str,
    end: usize,
) -> StoreResult<(Vec<Ranked>, usize)> {
    let eval = Evaluator::new(snapshot, rt, q, base);
    let (mut lower, mut upper) = (Best::new(q, path, end), Best::new(q, path, end));
    let side = |best: &mut Best<'_>, r: RawResource<'_>| -> StoreResult<()> {
        match eval.matching(r)? {
            Some(m) => best.offer(&eval, rt, m),
            None => Ok(()),
        }
    };
    snapshot.scan_raw_halves(rt, |r| side(&mut lower, r), |r| side(&mut upper, r))?;
    lower.merge(upper);
    Ok(lower.finish())
}

/// The page of a sorted query: the resources of `best` from `start` on, read again
/// and rendered.
fn render_best(
    snapshot: &Snapshot,
    q: &Query,
    base: &str,
    best: Vec<Ranked>,
    start: usize,
) -> StoreResult<Vec<Resource>> {
    let mut page = Vec::new();
    for (_, rt, id) in best.into_iter().skip(start) {
        let eval = Evaluator::new(snapshot, rt, q, base);
        if let Some(r) = snapshot.get_raw(rt, &id, |raw| eval.finish(eval.whole(raw)?))? {
            page.push(r);
        }
    }
    Ok(page)
}

/// `id_order` of one type's every row (a filter without an index plan), split over
/// two threads (`Snapshot::scan_raw_halves`). The lower half counts its matches and
/// renders those in the window, as the one-thread walk does; the upper half counts
/// its own and keeps the ids of its first `end`, from which the page is completed
/// once the lower half's count is known: read again, evaluated again and rendered
/// as the one-thread walk would. Memory: at most `end` ids beyond the page.
fn id_order_halves(
    snapshot: &Snapshot,
    rt: ResourceType,
    q: &Query,
    base: &str,
    start: usize,
    end: usize,
) -> StoreResult<(Vec<Resource>, usize)> {
    let eval = Evaluator::new(snapshot, rt, q, base);
    let (mut page, mut lower_matched) = (Vec::new(), 0usize);
    let (mut upper_ids, mut upper_matched) = (Vec::new(), 0usize);
    snapshot.scan_raw_halves(
        rt,
        |r| match eval.matching(r)? {
            Some(m) => offer(&eval, m, &mut lower_matched, start..end, &mut page),
            None => Ok(()),
        },
        |r| {
            if let Some(m) = eval.matching(r)? {
                upper_matched += 1;
                if upper_ids.len() < end {
                    upper_ids.push(m.id().to_owned());
                }
            }
            Ok(())
        },
    )?;
    for (i, id) in upper_ids.into_iter().enumerate() {
        if !(start..end).contains(&(lower_matched + i)) {
            continue;
        }
        let rendered = snapshot.get_raw(rt, &id, |raw| {
            eval.matching(raw)?.map(|m| eval.finish(m)).transpose()
        })?;
        page.extend(rendered.flatten());
    }
    Ok((page, lower_matched + upper_matched))
}

/// Cursor paging: the matches after `after`, in id order, one more looked at to know
/// whether a next page exists.
fn after_page(
    snapshot: &Snapshot,
    rt: ResourceType,
    after: Option<&str>,
    q: &Query,
    base: &str,
    split: bool,
) -> StoreResult<Page> {
    let count = q.params.count;
    // The first page of a filtered listing counts every match (as an index page
    // does), once: the edge carries that total in its cursors (RFC 9865 §2: an
    // accurate totalResults, or an estimate). Over a whole table with two threads,
    // that is the first index page.
    let (page, matched, more) = if split {
        let (page, matched) = id_order_halves(snapshot, rt, q, base, 0, count)?;
        (page, matched, matched > count)
    } else {
        let eval = Evaluator::new(snapshot, rt, q, base);
        let mut page: Vec<Resource> = Vec::new();
        let mut more = false;
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
        (page, matched, more)
    };
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
        return after_page(snapshot, rt, None, q, base, false);
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

impl Match<'_> {
    fn id(&self) -> &str {
        match self {
            Match::Stored(r) => &r.id,
            Match::Text { text, .. } => &text.id,
            Match::Rendered { id, .. } => id,
        }
    }
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

    /// Users `0..n` imported in one transaction under scrambled ids (id order is
    /// neither import nor userName order), user `i` holding `attrs(i)`.
    fn imported(
        n: usize,
        attrs: impl Fn(usize) -> Value + Send + 'static,
    ) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), &StoreOptions::default()).unwrap();
        store
            .import_blocking(Actor::system("test"), Timestamp::now(), move |sink| {
                let items = (0..n)
                    .map(|i| {
                        let mut a = attrs(i);
                        a["userName"] = json!(format!("user{i:05}"));
                        let r = json!({
                            "id": format!("{:08x}-{i}", (i as u64 * 2_654_435_761) % (1 << 32)),
                            "meta": {"created": "2026-01-01T00:00:00Z",
                                     "lastModified": "2026-01-01T00:00:00Z", "version": 1},
                            "attrs": a,
                        });
                        let r = serde_json::from_value(r).unwrap();
                        crate::store::ImportItem::Resource(ResourceType::User, r)
                    })
                    .collect();
                sink(items).map_err(|e| e.to_string())
            })
            .unwrap();
        (dir, store)
    }

    /// Runs `q` on one thread and split over two, asserts the answers are the same
    /// (resources byte for byte, total, cursors) and returns it.
    fn same_on_two_threads(snap: &Snapshot, q: &Query) -> Page {
        let base = "https://h/scim/v2";
        let one = run_on(snap, q, base, Threads::One).unwrap();
        let two = run_on(snap, q, base, Threads::Two).unwrap();
        let bytes = |p: &Page| {
            p.resources
                .iter()
                .map(|r| {
                    let mut out = Vec::new();
                    r.write_json(&mut out);
                    String::from_utf8(out).unwrap()
                })
                .collect::<Vec<_>>()
        };
        let what = format!("{:?} {:?}", q.params, q.paging);
        assert_eq!(bytes(&two), bytes(&one), "{what}");
        assert_eq!(
            (
                two.total,
                two.start_index,
                &two.next_after,
                &two.prev_before
            ),
            (
                one.total,
                one.start_index,
                &one.next_after,
                &one.prev_before
            ),
            "{what}"
        );
        one
    }

    fn params(
        filter: Option<&str>,
        sort: Option<(&str, &str)>,
        start: usize,
        count: usize,
    ) -> ListParams {
        ListParams::parse(
            filter,
            sort.map(|s| s.0),
            sort.map(|s| s.1),
            Some(&start.to_string()),
            Some(&count.to_string()),
            10,
            2000,
        )
        .unwrap()
    }

    /// 1,500 users: "Engineer" in the titles of every seventh, of those whose
    /// index is a multiple of 5 ("engineering lead", another case) and of the last
    /// hundred, so matches lie all over both halves of the id order; display names
    /// repeat (ties for sorting).
    fn spread_matches() -> (tempfile::TempDir, Store) {
        imported(1500, |i| {
            let title = match i {
                _ if i % 7 == 3 || i >= 1400 => "Senior Engineer",
                _ if i % 5 == 0 => "engineering lead",
                _ => "Manager",
            };
            let mut a = json!({"title": title, "displayName": format!("D{}", i % 37),
                               "active": i % 2 == 0});
            if i == 0 || i == 1499 {
                a["nickName"] = json!(if i == 0 { "first" } else { "last" });
            }
            a
        })
    }

    #[test]
    fn a_scan_split_over_two_threads_answers_as_one_thread_at_every_start_index() {
        let (_d, store) = spread_matches();
        let snap = store.snapshot().unwrap();
        let co = r#"title co "Engineer""#;
        let all = query(Some(co), 1, Paging::Index);
        let mut q = all.clone();
        q.params = params(Some(co), None, 1, 2000);
        assert!(scans_a_table(&q));
        let every = same_on_two_threads(&snap, &q);
        let total = every.total.unwrap();
        assert_eq!(every.resources.len(), total);
        assert!(total > 500, "{total} matches");
        // Pages over the whole range, each start in turn at a different offset from
        // wherever the two sides met.
        for (start, count) in (1..=total + 2).step_by(23).map(|s| (s, 25)).chain([
            (1, 0),
            (total, 1),
            (total - 3, 10),
            (total + 1, 5),
            (1, total),
        ]) {
            q.params = params(Some(co), None, start, count);
            let page = same_on_two_threads(&snap, &q);
            let want: Vec<&str> = every
                .resources
                .iter()
                .skip(start - 1)
                .take(count)
                .map(|r| r.id())
                .collect();
            let got: Vec<&str> = page.resources.iter().map(|r| r.id()).collect();
            assert_eq!(got, want, "startIndex={start} count={count}");
        }
        // Filters matching one row at either end, none, or needing a full decode
        // (`or` of a scanned attribute), and a projection.
        for filter in [
            r#"nickName eq "first""#,
            r#"nickName eq "last""#,
            r#"title co "nobody""#,
            r#"title co "Engineer" or active eq true"#,
            r#"not (title sw "Senior")"#,
        ] {
            q.params = params(Some(filter), None, 1, 2000);
            assert!(scans_a_table(&q), "{filter}");
            same_on_two_threads(&snap, &q);
        }
        q.params = params(Some(co), None, 40, 30);
        q.projection = Projection::parse(Some("userName,title"), None).unwrap();
        same_on_two_threads(&snap, &q);
        q.projection = Projection::parse(None, Some("title")).unwrap();
        same_on_two_threads(&snap, &q);
    }

    #[test]
    fn a_sort_split_over_two_threads_answers_as_one_thread() {
        let (_d, store) = spread_matches();
        let snap = store.snapshot().unwrap();
        let mut q = query(None, 1, Paging::Index);
        for filter in [None, Some(r#"title co "Engineer""#)] {
            for sort in [
                ("displayName", "ascending"),
                ("displayName", "descending"),
                ("title", "ascending"),
            ] {
                for (start, count) in [(1, 10), (1, 0), (100, 50), (700, 40), (1490, 20), (1, 1600)]
                {
                    q.params = params(filter, Some(sort), start, count);
                    assert!(scans_a_table(&q));
                    same_on_two_threads(&snap, &q);
                }
            }
        }
        // The userName index and an indexed filter are not whole-table scans.
        q.params = params(None, Some(("userName", "ascending")), 1, 10);
        assert!(!scans_a_table(&q));
        q.params = params(
            Some(r#"userName eq "user00007""#),
            Some(("title", "ascending")),
            1,
            10,
        );
        assert!(!scans_a_table(&q));
    }

    #[test]
    fn cursor_pages_of_a_split_scan_follow_the_one_thread_pages() {
        let (_d, store) = spread_matches();
        let snap = store.snapshot().unwrap();
        let co = r#"title co "Engineer""#;
        let mut q = query(Some(co), 1, Paging::Index);
        q.params = params(Some(co), None, 1, 2000);
        let every: Vec<String> = run(&snap, &q, "")
            .unwrap()
            .resources
            .iter()
            .map(|r| r.id().to_owned())
            .collect();
        for count in [0, 1, 37, every.len() - 1, every.len(), every.len() + 1] {
            q.params = params(Some(co), None, 1, count);
            q.paging = Paging::After(None);
            assert!(scans_a_table(&q));
            let mut page = same_on_two_threads(&snap, &q);
            assert_eq!(page.total, Some(every.len()), "count={count}");
            let mut walked: Vec<String> = Vec::new();
            loop {
                walked.extend(page.resources.iter().map(|r| r.id().to_owned()));
                let Some(next) = page.next_after.clone() else {
                    break;
                };
                q.paging = Paging::After(Some(next));
                assert!(!scans_a_table(&q), "later pages stop after themselves");
                page = same_on_two_threads(&snap, &q);
            }
            if count > 0 {
                assert_eq!(walked, every, "count={count}");
            }
        }
    }
}
