//! The query language, one semantics for every backend: [`Filter`] (`$eq $ne $gt $gte $lt $lte
//! $in $nin $exists $and $or $nor $not $regex $text`, dotted paths, array membership),
//! [`Update`] (`$set $unset $inc $push $pull $addToSet`), [`Sort`] and [`Projection`].
//!
//! ```
//! use serde_json::json;
//! use zeroservices_core::query::{Filter, Update};
//!
//! let f = Filter::parse(&json!({"status": "pending", "value": {"$gte": 3}})).unwrap();
//! let mut doc = json!({"status": "pending", "value": 7});
//! assert!(f.matches(&doc));
//! Update::parse(&json!({"$set": {"status": "done"}, "$inc": {"value": 1}})).unwrap().apply(&mut doc).unwrap();
//! assert_eq!(doc, json!({"status": "done", "value": 8}));
//! ```

mod filter;
mod path;
mod update;

pub use self::filter::Filter;
pub use self::path::{cmp_values, values_equal};
#[cfg(feature = "embedded")]
pub(crate) use self::path::{first as first_value, resolve as resolve_values};
pub use self::update::Update;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Deepest nesting of objects and arrays a resource may have. Deeper documents are refused at
/// create and patch: they could be written, but not read back (JSON parsers, serde's
/// included, stop at 128 levels), so one of them would make its whole collection unreadable.
pub const MAX_NESTING: usize = 100;

/// How deeply `v` nests objects and arrays (a scalar is 0, `{}` is 1).
pub fn nesting(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Object(o) => Box::new(o.values()),
            Value::Array(a) => Box::new(a.iter()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// `BadRequest` when `v` nests deeper than [`MAX_NESTING`].
pub fn check_nesting(v: &Value) -> Result<()> {
    let n = nesting(v);
    if n > MAX_NESTING {
        return Err(Error::BadRequest(format!(
            "resource data nests {n} levels deep (at most {MAX_NESTING})"
        )));
    }
    Ok(())
}

/// One sort key: a dotted path and a direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SortKey {
    /// Dotted path.
    pub path: String,
    /// `true` for descending.
    pub descending: bool,
}

/// Sort order, parsed from `value,-created` (leading `-` = descending).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sort(pub Vec<SortKey>);

impl Sort {
    /// Parses `a,-b.c`. Empty keys are an error.
    pub fn parse(s: &str) -> Result<Sort> {
        if s.trim().is_empty() {
            return Ok(Sort::default());
        }
        let mut keys = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (path, descending) = match part.strip_prefix('-') {
                Some(p) => (p, true),
                None => (part.strip_prefix('+').unwrap_or(part), false),
            };
            check_path(path)?;
            keys.push(SortKey {
                path: path.to_owned(),
                descending,
            });
        }
        Ok(Sort(keys))
    }

    /// Compares two resources' data by this order (ties broken by `id_a`/`id_b`).
    pub fn compare(&self, a: &Value, id_a: &str, b: &Value, id_b: &str) -> std::cmp::Ordering {
        self.compare_data(a, b).then_with(|| id_a.cmp(id_b))
    }

    /// Compares two resources' data by this order's keys only (`Equal` on a tie).
    pub fn compare_data(&self, a: &Value, b: &Value) -> std::cmp::Ordering {
        for k in &self.0 {
            let va = path::first(a, &k.path);
            let vb = path::first(b, &k.path);
            let o = cmp_values(va.unwrap_or(&Value::Null), vb.unwrap_or(&Value::Null));
            let o = if k.descending { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    }
}

/// A projection: the dotted paths to keep (empty = everything).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Projection(pub Vec<String>);

impl Projection {
    /// Parses `value,status.code`.
    pub fn parse(s: &str) -> Result<Projection> {
        if s.trim().is_empty() {
            return Ok(Projection::default());
        }
        let fields: Vec<String> = s.split(',').map(|p| p.trim().to_owned()).collect();
        for f in &fields {
            check_path(f)?;
        }
        Ok(Projection(fields))
    }

    /// Keeps only the projected paths of `data`.
    pub fn apply(&self, data: Value) -> Value {
        if self.0.is_empty() {
            return data;
        }
        let mut out = Value::Object(Map::new());
        for p in &self.0 {
            if let Some(v) = path::first(&data, p) {
                // Paths were checked at parse time and `out` only holds objects on the way.
                let _ = path::set(&mut out, p, v.clone());
            }
        }
        out
    }
}

/// Checks a dotted field path: non-empty segments, none starting with `$`, at most 1 KiB
/// (`BadRequest` otherwise).
pub fn check_path(p: &str) -> Result<()> {
    if p.is_empty() || p.split('.').any(|s| s.is_empty() || s.starts_with('$')) || p.len() > 1024 {
        return Err(Error::BadRequest(format!("invalid field path {p:?}")));
    }
    Ok(())
}

/// Everything `list` takes. The filter is parsed where the query is made or arrives
/// (deserializing one parses its `where`), so every layer below gets it checked and typed.
///
/// ```
/// use serde_json::json;
/// use zeroservices_core::query::ListQuery;
///
/// let q = ListQuery::filtered(&json!({"status": "pending"}))?;
/// assert!(q.filter.matches(&json!({"status": "pending", "value": 3})));
/// // From the wire: an invalid filter does not get past deserialization.
/// assert!(serde_json::from_value::<ListQuery>(json!({"where": {"v": {"$bogus": 1}}})).is_err());
/// # Ok::<(), zeroservices_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// Filter (its document is `where` on the wire; `{}` or absent matches everything).
    #[serde(default, rename = "where")]
    pub filter: Filter,
    /// Sort order.
    #[serde(default)]
    pub sort: Sort,
    /// Matches to skip.
    #[serde(default)]
    pub skip: u64,
    /// Maximum matches returned (`None`: all).
    #[serde(default)]
    pub limit: Option<u64>,
    /// Projection.
    #[serde(default)]
    pub fields: Projection,
}

impl ListQuery {
    /// Everything matching the filter document `doc` (parsed here: an invalid one is a
    /// `BadRequest`).
    pub fn filtered(doc: &Value) -> Result<ListQuery> {
        Ok(ListQuery {
            filter: Filter::parse(doc)?,
            ..ListQuery::default()
        })
    }
}
