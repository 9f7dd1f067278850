//! What of a list query MongoDB runs: the translation of filters, sorts and projections into
//! server queries, exact or not at all. docs/architecture.md ("MongoDB: what runs in the
//! database") has the table; in short, a condition is sent to the server only where every
//! server the suite runs on (MongoDB, and nx-27017 in the test script) gives the shared
//! semantics:
//! - on a top-level field (dotted paths are rechecked in the node: nx-27017 does not descend
//!   arrays of documents nor index arrays by position);
//! - equality, `$eq`, `$in` with booleans, strings and numbers that are 64-bit integers or
//!   doubles (not null: nx-27017's `{"f": null}` misses absent fields; not arrays or documents);
//! - `$gt`/`$gte`/`$lt`/`$lte` with a number, string or boolean;
//! - `$and` / `$or` / `$nor` of translated parts.
//!
//! Rechecked in the node: `$ne`, `$nin` (on arrays nx-27017 differs), `$exists` (its count and
//! find disagree), `$not` (missing), `$regex` (Rust regex syntax is not PCRE), `$text`
//! (MongoDB needs a text index and stems words), comparisons with null, documents or arrays
//! (the shared semantics match nothing), paths through `_id` / `_v`.
//!
//! The top-level conjuncts that translate are sent as the server's filter; when all of them do
//! the filter is exact, and only then are sort, skip, limit, projection and count sent too.

use mongodb::bson::{doc, Bson, Document};
use serde_json::Value;

use crate::convert::VERSION;
use zeroservices_core::query::{Projection, Sort};

/// A filter as sent to the server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pushed {
    /// The server's filter: every match of the whole filter matches it.
    pub filter: Document,
    /// It matches exactly the matches of the whole filter.
    pub exact: bool,
    /// Documents on which a server could evaluate `filter` otherwise than the shared semantics
    /// (`None`: there are none): a value at a compared field of another type than the value
    /// it is compared with. A server without MongoDB's type bracketing (nx-27017 compares
    /// `false < 1`) would match them; when one exists, the filter must not be sent.
    pub hazards: Option<Document>,
}

/// BSON type aliases of the JSON values a field can hold.
const TYPES: [&str; 5] = ["number", "string", "bool", "array", "object"];

/// Translates what can be of a (valid) filter document.
pub(crate) fn filter(f: &Value) -> Pushed {
    let mut t = Translator::default();
    let mut parts = Vec::new();
    let mut exact = true;
    t.conjuncts(f, &mut parts, &mut exact);
    let filter = match parts.len() {
        0 => Document::new(),
        1 => parts.remove(0),
        _ => doc! {"$and": parts},
    };
    let hazards: Vec<Bson> = t
        .compared
        .iter()
        .flat_map(|(path, kind)| {
            TYPES
                .iter()
                .filter(move |t| *t != kind)
                .map(move |t| Bson::Document(doc! { path.clone(): {"$type": *t} }))
        })
        .collect();
    Pushed {
        filter,
        exact,
        hazards: (!hazards.is_empty()).then(|| doc! {"$or": hazards}),
    }
}

/// Translation of one filter, remembering which fields it compares with which type.
#[derive(Default)]
struct Translator {
    compared: std::collections::BTreeSet<(String, &'static str)>,
}

impl Translator {
    /// The translated top-level conjuncts of `f` (`$and` flattened); `exact` is cleared for
    /// each one left out.
    fn conjuncts(&mut self, f: &Value, out: &mut Vec<Document>, exact: &mut bool) {
        let Some(obj) = f.as_object() else {
            *exact = false;
            return;
        };
        for (k, v) in obj {
            if k == "$and" {
                for sub in v.as_array().into_iter().flatten() {
                    self.conjuncts(sub, out, exact);
                }
                continue;
            }
            match self.entry(k, v) {
                Some(d) => out.push(d),
                None => *exact = false,
            }
        }
    }

    /// A whole filter document, or `None` if any part of it does not translate.
    fn whole(&mut self, f: &Value) -> Option<Document> {
        let mut d = Document::new();
        for (k, v) in f.as_object()? {
            d.extend(self.entry(k, v)?);
        }
        Some(d)
    }

    /// One `key: value` of a filter document.
    fn entry(&mut self, k: &str, v: &Value) -> Option<Document> {
        match k {
            "$and" | "$or" | "$nor" => {
                let subs = v
                    .as_array()?
                    .iter()
                    .map(|s| self.whole(s).map(Bson::Document))
                    .collect::<Option<Vec<_>>>()?;
                Some(doc! { k: subs })
            }
            k if k.starts_with('$') => None,
            path if !pushable_path(path) => None,
            path => Some(doc! { path: self.condition(path, v)? }),
        }
    }

    /// The condition on one path: an operator document or a value to equal.
    fn condition(&mut self, path: &str, v: &Value) -> Option<Bson> {
        if !is_operator_doc(v) {
            return self.operand(path, v);
        }
        let mut d = Document::new();
        for (op, arg) in v.as_object()? {
            let b = match op.as_str() {
                "$eq" | "$gt" | "$gte" | "$lt" | "$lte" => self.operand(path, arg)?,
                "$in" => Bson::Array(
                    arg.as_array()?
                        .iter()
                        .map(|a| self.operand(path, a))
                        .collect::<Option<Vec<_>>>()?,
                ),
                _ => return None,
            };
            d.insert(op.clone(), b);
        }
        Some(Bson::Document(d))
    }

    /// A value compared with the field `path` (for equality or order): a boolean, a string or
    /// a number that is a 64-bit integer or a double.
    fn operand(&mut self, path: &str, v: &Value) -> Option<Bson> {
        let (b, kind) = match v {
            Value::Bool(b) => (Bson::Boolean(*b), "bool"),
            Value::String(s) => (Bson::String(s.clone()), "string"),
            Value::Number(n) => match (n.as_i64(), n.is_f64()) {
                (Some(i), _) => (Bson::Int64(i), "number"),
                (None, true) => (Bson::Double(n.as_f64()?), "number"),
                // An integer beyond i64 would become an inexact double.
                (None, false) => return None,
            },
            Value::Null | Value::Array(_) | Value::Object(_) => return None,
        };
        self.compared.insert((path.to_owned(), kind));
        Some(b)
    }
}

/// A top-level field of the resource data (not `_id` or the version field).
pub(crate) fn pushable_path(path: &str) -> bool {
    !path.contains('.') && path != "_id" && path != VERSION
}

fn is_operator_doc(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| !o.is_empty() && o.keys().all(|k| k.starts_with('$')))
}

/// The server's sort for `sort` (ties by `_id`), or `None` when a key names no resource data.
pub(crate) fn sort(sort: &Sort) -> Option<Document> {
    let mut d = Document::new();
    for k in &sort.0 {
        if !pushable_path(&k.path) {
            return None;
        }
        d.insert(k.path.clone(), if k.descending { -1 } else { 1 });
    }
    d.insert("_id", 1);
    Some(d)
}

/// A filter matching documents on which a server could order `sort` differently from the
/// shared order: an array at a key (MongoDB sorts by an array's smallest or largest element),
/// an embedded document (fields compared in stored order) or a boolean (nx-27017 orders it
/// as a number). `None`: no sort keys.
pub(crate) fn sort_hazards(sort: &Sort) -> Option<Document> {
    let any: Vec<Bson> = sort
        .0
        .iter()
        .flat_map(|k| {
            ["array", "object", "bool"]
                .map(|t| Bson::Document(doc! { k.path.clone(): {"$type": t} }))
        })
        .collect();
    (!any.is_empty()).then(|| doc! {"$or": any})
}

/// The server's projection, when every path is a top-level field (the server then keeps at
/// least what the shared projection reads; dotted paths are projected in the node).
pub(crate) fn projection(p: &Projection) -> Option<Document> {
    if p.0.is_empty() || !p.0.iter().all(|a| pushable_path(a)) {
        return None;
    }
    let mut d = Document::new();
    for path in &p.0 {
        d.insert(path.clone(), 1);
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pushed(f: Value) -> Pushed {
        filter(&f)
    }

    #[test]
    fn equalities_comparisons_and_sets_translate_exactly() {
        let p = pushed(json!({"status": "pending", "value": {"$gt": 3, "$lte": 9.5}}));
        assert!(p.exact);
        assert_eq!(
            p.filter,
            doc! {"$and": [
                {"status": "pending"},
                {"value": {"$gt": 3_i64, "$lte": 9.5}},
            ]}
        );
        let p = pushed(json!({"tags": {"$in": ["a", 2, true]}, "ok": {"$eq": false}}));
        assert!(p.exact);
        assert_eq!(
            p.filter,
            doc! {"$and": [{"tags": {"$in": ["a", 2_i64, true]}}, {"ok": {"$eq": false}}]}
        );
        let p = pushed(json!({"$or": [{"a": 1}, {"b": {"$lt": "m"}}], "$nor": [{"c": 2}]}));
        assert!(p.exact);
        assert_eq!(
            p.filter,
            doc! {"$and": [
                {"$or": [{"a": 1_i64}, {"b": {"$lt": "m"}}]},
                {"$nor": [{"c": 2_i64}]},
            ]}
        );
        let p = pushed(json!({}));
        assert_eq!((p.filter, p.exact, p.hazards), (doc! {}, true, None));
        let p = pushed(json!({"n": {"$lt": 1}}));
        assert_eq!(
            p.hazards,
            Some(doc! {"$or": [
                {"n": {"$type": "string"}},
                {"n": {"$type": "bool"}},
                {"n": {"$type": "array"}},
                {"n": {"$type": "object"}},
            ]})
        );
    }

    #[test]
    fn what_does_not_translate_is_left_to_the_node() {
        // A regex conjunct stays in the node; the rest narrows on the server.
        let p = pushed(json!({"status": "a", "name": {"$regex": "^x"}}));
        assert!(!p.exact);
        assert_eq!(p.filter, doc! {"status": "a"});
        // Inside $or, one untranslatable branch keeps the whole $or in the node.
        let p = pushed(json!({"$or": [{"a": 1}, {"b": {"$regex": "x"}}]}));
        assert!(!p.exact);
        assert_eq!(p.filter, doc! {});
        for f in [
            json!({"a": {"x": 1}}),
            json!({"a": null}),
            json!({"a": [1, 2]}),
            json!({"a": {"$gt": null}}),
            json!({"a": {"$lt": [1]}}),
            json!({"a": {"$ne": 1}}),
            json!({"a": {"$nin": [1]}}),
            json!({"a": {"$exists": true}}),
            json!({"a": {"$not": {"$gt": 1}}}),
            json!({"a": {"$in": [null]}}),
            json!({"a": 18446744073709551615u64}),
            json!({"a.b": 1}),
            json!({"_id": "x"}),
            json!({"_v": 1}),
            json!({"$text": {"$search": "w"}}),
        ] {
            let p = pushed(f.clone());
            assert!(!p.exact, "{f}");
            assert_eq!(p.filter, doc! {}, "{f}");
        }
        let p = pushed(json!({"$and": [{"a": 1}, {"b": {"$regex": "x"}}], "c": {"$gte": "k"}}));
        assert!(!p.exact);
        assert_eq!(
            p.filter,
            doc! {"$and": [{"a": 1_i64}, {"c": {"$gte": "k"}}]}
        );
    }

    #[test]
    fn sorts_projections_and_hazards() {
        let s = Sort::parse("value,-name").unwrap();
        assert_eq!(sort(&s), Some(doc! {"value": 1, "name": -1, "_id": 1}));
        assert_eq!(sort(&Sort::default()), Some(doc! {"_id": 1}));
        assert_eq!(sort(&Sort::parse("_id").unwrap()), None);
        assert_eq!(sort(&Sort::parse("a.b").unwrap()), None);
        assert_eq!(
            sort_hazards(&Sort::parse("a").unwrap()),
            Some(doc! {"$or": [
                {"a": {"$type": "array"}},
                {"a": {"$type": "object"}},
                {"a": {"$type": "bool"}},
            ]})
        );
        assert_eq!(sort_hazards(&Sort::default()), None);
        assert_eq!(
            projection(&Projection::parse("value,name").unwrap()),
            Some(doc! {"value": 1, "name": 1})
        );
        assert_eq!(projection(&Projection::parse("addr.city").unwrap()), None);
        assert_eq!(projection(&Projection::default()), None);
    }
}
