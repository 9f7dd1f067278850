//! Secondary indexes of the embedded store: which entries a record gives an indexed path, and
//! which key ranges answer a filter.
//!
//! An index on `path` is a table of keys `encode(value) ++ id` (see [`super::keys`]), each
//! flagged as a *filter* entry, a *sort* entry or both:
//! - filter entries: every scalar the filter language compares at `path` (the values found there,
//!   the elements of arrays found there), or `null` when nothing is found there (`{"f": null}`
//!   matches a missing field);
//! - one sort entry: the value sorting uses (the value at `path`, `null` when missing).
//!
//! A path that ever held several values for one record (an array, or an array of objects on the
//! way) is *multikey*: its range conditions cannot be intersected (`[1, 20]` matches
//! `{"$gt": 3, "$lt": 10}` with no element in the range), exactly as in MongoDB.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::keys::{encode, successor, type_bounds};
use crate::query::{first_value, resolve_values};

/// The entry is a candidate for filters.
pub(super) const FILTER: u8 = 1;
/// The entry is the record's sort value.
pub(super) const SORT: u8 = 2;

/// What the store remembers of one index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct IndexMeta {
    /// The dotted path indexed.
    pub path: String,
    /// Some record held several values at `path`.
    pub multikey: bool,
}

/// The name of the table of the index on `path` of the collection stored in `records`.
pub(super) fn table_name(records: &str, path: &str) -> String {
    format!("index:{}", serde_json::json!([records, path]))
}

/// The entries of a record for the index on `path` (encoded value → flags), and whether the
/// record holds several values there.
pub(super) fn entries(data: &Value, path: &str) -> (BTreeMap<Vec<u8>, u8>, bool) {
    let found = resolve_values(data, path);
    let mut out: BTreeMap<Vec<u8>, u8> = BTreeMap::new();
    let mut add = |v: &Value, flag: u8| *out.entry(encode(v)).or_default() |= flag;
    if found.is_empty() {
        add(&Value::Null, FILTER);
    }
    for v in &found {
        match v {
            Value::Array(items) => {
                for item in items.iter().filter(|i| is_scalar(i)) {
                    add(item, FILTER);
                }
            }
            v if is_scalar(v) => add(v, FILTER),
            _ => {}
        }
    }
    add(first_value(data, path).unwrap_or(&Value::Null), SORT);
    // Single-valued: at most one filter entry, and it is the sort value (ranges of such an index
    // intersect, and its order is the sort order of the matches).
    let filters: Vec<u8> = out.values().copied().filter(|f| f & FILTER != 0).collect();
    let single = filters.is_empty() || (filters.len() == 1 && filters[0] == FILTER | SORT);
    (out, !single)
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// A half-open range of encoded values: `[low, high)`, `high` `None` meaning unbounded.
pub(super) type KeyRange = (Vec<u8>, Option<Vec<u8>>);

/// How an index answers a filter.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Plan {
    /// The indexed path.
    pub path: String,
    /// Every record matching the filter has a filter entry in one of these (sorted, disjoint).
    pub ranges: Vec<KeyRange>,
    /// The records with a filter entry in `ranges` are exactly the matches.
    pub exact: bool,
}

/// Conditions of one path that an index can express: each a union of ranges (all of them must
/// hold), and whether every condition on the path is one of them.
#[derive(Debug, Default)]
struct PathConds {
    usable: Vec<Vec<KeyRange>>,
    all_usable: bool,
}

/// The best plan for `filter` among `indexes` (`None`: no index helps).
pub(super) fn plan(filter: &Value, indexes: &[IndexMeta]) -> Option<Plan> {
    let mut conjuncts = Vec::new();
    let mut other = false;
    flatten(filter, &mut conjuncts, &mut other);
    let mut best: Option<Plan> = None;
    for meta in indexes {
        let mut conds = PathConds {
            all_usable: true,
            ..PathConds::default()
        };
        for (path, cond) in &conjuncts {
            if *path == meta.path {
                add_condition(cond, &mut conds);
            }
        }
        if conds.usable.is_empty() {
            continue;
        }
        let single = conds.usable.len() == 1;
        let ranges = if meta.multikey {
            // Any one condition's ranges hold every match; prefer the narrowest kind (equality).
            conds
                .usable
                .iter()
                .min_by_key(|r| r.iter().filter(|(_, h)| h.is_none()).count())
                .cloned()
                .unwrap_or_default()
        } else {
            conds
                .usable
                .iter()
                .skip(1)
                .fold(conds.usable[0].clone(), |acc, r| intersect(&acc, r))
        };
        let exact = !other
            && conds.all_usable
            && (single || !meta.multikey)
            && conjuncts.iter().all(|(p, _)| *p == meta.path);
        let candidate = Plan {
            path: meta.path.clone(),
            ranges: normalize(ranges),
            exact,
        };
        if best.as_ref().is_none_or(|b| !b.exact && candidate.exact) {
            best = Some(candidate);
        }
    }
    best
}

/// Top-level conjuncts `(path, condition)` of a filter, `$and` flattened; `other` is set when
/// something else ($or, $nor, $text) also constrains it.
fn flatten<'a>(filter: &'a Value, out: &mut Vec<(&'a str, &'a Value)>, other: &mut bool) {
    let Some(obj) = filter.as_object() else {
        return;
    };
    for (k, v) in obj {
        match k.as_str() {
            "$and" => v
                .as_array()
                .into_iter()
                .flatten()
                .for_each(|f| flatten(f, out, other)),
            k if k.starts_with('$') => *other = true,
            path => out.push((path, v)),
        }
    }
}

/// Adds what an index can use of one condition (`{"$gt": 3, "$ne": 5}`, or a plain value).
fn add_condition(cond: &Value, conds: &mut PathConds) {
    let ops: Map<String, Value> = match cond.as_object() {
        Some(o) if !o.is_empty() && o.keys().all(|k| k.starts_with('$')) => o.clone(),
        _ => std::iter::once(("$eq".to_owned(), cond.clone())).collect(),
    };
    for (op, arg) in &ops {
        match op_ranges(op, arg) {
            Some(r) => conds.usable.push(r),
            None => conds.all_usable = false,
        }
    }
}

/// The ranges holding exactly the values `op arg` matches, when an index can tell.
fn op_ranges(op: &str, arg: &Value) -> Option<Vec<KeyRange>> {
    let comparable = matches!(arg, Value::Number(_) | Value::String(_) | Value::Bool(_));
    match op {
        "$eq" => eq_range(arg).map(|r| vec![r]),
        "$in" => arg.as_array()?.iter().map(eq_range).collect(),
        // A comparison with null, an object or an array matches nothing.
        "$gt" | "$gte" | "$lt" | "$lte" if !comparable => Some(Vec::new()),
        "$gt" | "$gte" | "$lt" | "$lte" => {
            let (type_low, type_high) = type_bounds(arg);
            let at = encode(arg);
            let after = successor(&at);
            Some(vec![match op {
                "$gt" => (after?, Some(type_high)),
                "$gte" => (at, Some(type_high)),
                "$lt" => (type_low, Some(at)),
                _ => (type_low, after),
            }])
        }
        _ => None,
    }
}

fn eq_range(v: &Value) -> Option<KeyRange> {
    if !is_scalar(v) {
        return None;
    }
    let at = encode(v);
    let after = successor(&at);
    Some((at, after))
}

fn high_cmp(a: &Option<Vec<u8>>, b: &Option<Vec<u8>>) -> std::cmp::Ordering {
    match (a, b) {
        (None, None) => std::cmp::Ordering::Equal,
        (None, _) => std::cmp::Ordering::Greater,
        (_, None) => std::cmp::Ordering::Less,
        (Some(a), Some(b)) => a.cmp(b),
    }
}

fn intersect(a: &[KeyRange], b: &[KeyRange]) -> Vec<KeyRange> {
    let mut out = Vec::new();
    for (la, ha) in a {
        for (lb, hb) in b {
            let low = la.max(lb).clone();
            let high = if high_cmp(ha, hb).is_le() { ha } else { hb }.clone();
            if high.as_ref().is_none_or(|h| low < *h) {
                out.push((low, high));
            }
        }
    }
    out
}

/// Sorted, with overlapping ranges merged (so no record is visited twice for one value).
fn normalize(mut ranges: Vec<KeyRange>) -> Vec<KeyRange> {
    ranges.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<KeyRange> = Vec::with_capacity(ranges.len());
    for (low, high) in ranges {
        if let Some(last) = out.last_mut() {
            if last.1.as_ref().is_none_or(|h| low <= *h) {
                if high_cmp(&high, &last.1).is_gt() {
                    last.1 = high;
                }
                continue;
            }
        }
        out.push((low, high));
    }
    out
}

/// The bounds of index keys whose value lies in `range`.
pub(super) fn key_bounds(range: &KeyRange) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (
        Bound::Included(range.0.as_slice()),
        match &range.1 {
            Some(h) => Bound::Excluded(h.as_slice()),
            None => Bound::Unbounded,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(path: &str, multikey: bool) -> Vec<IndexMeta> {
        vec![IndexMeta {
            path: path.into(),
            multikey,
        }]
    }

    #[test]
    fn equality_and_in_are_exact() {
        let p = plan(&json!({"status": "pending"}), &meta("status", false)).unwrap();
        assert!(p.exact);
        assert_eq!(p.ranges.len(), 1);
        let p = plan(
            &json!({"status": {"$in": ["a", "b"]}}),
            &meta("status", true),
        )
        .unwrap();
        assert!(p.exact);
        assert_eq!(p.ranges.len(), 2);
    }

    #[test]
    fn ranges_intersect_only_without_multikey() {
        let f = json!({"v": {"$gt": 3, "$lt": 10}});
        let p = plan(&f, &meta("v", false)).unwrap();
        assert!(p.exact);
        assert_eq!(p.ranges.len(), 1);
        assert_eq!(p.ranges[0].0, successor(&encode(&json!(3))).unwrap());
        assert_eq!(p.ranges[0].1, Some(encode(&json!(10))));
        let p = plan(&f, &meta("v", true)).unwrap();
        assert!(!p.exact, "a multikey range needs a recheck");
    }

    #[test]
    fn other_conditions_need_a_recheck() {
        let p = plan(
            &json!({"status": "a", "n": {"$regex": "x"}}),
            &meta("status", false),
        )
        .unwrap();
        assert!(!p.exact);
        let p = plan(
            &json!({"status": {"$eq": "a", "$ne": "b"}}),
            &meta("status", false),
        )
        .unwrap();
        assert!(!p.exact);
        assert!(plan(&json!({"$or": [{"status": "a"}]}), &meta("status", false)).is_none());
        assert!(plan(&json!({"status": {"$regex": "a"}}), &meta("status", false)).is_none());
    }

    #[test]
    fn entries_cover_what_filters_compare() {
        let (e, multi) = entries(&json!({"tags": ["a", "b", {"x": 1}]}), "tags");
        assert!(multi);
        assert_eq!(e.get(&encode(&json!("a"))), Some(&FILTER));
        assert_eq!(e.get(&encode(&json!([]))), Some(&SORT));
        let (e, multi) = entries(&json!({"other": 1}), "status");
        assert!(!multi);
        assert_eq!(e.get(&encode(&Value::Null)), Some(&(FILTER | SORT)));
    }
}
