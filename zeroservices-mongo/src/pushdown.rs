//! What of a list query MongoDB runs: the translation of filters, sorts and projections into
//! server queries, exact or not at all. docs/architecture.md ("MongoDB: what runs in the
//! database") has the table; in short, a condition is sent to the server where MongoDB's
//! semantics are the shared ones and the suite passes on the test server (nx-27017) too:
//! - on a top-level field (dotted paths are rechecked in the node: nx-27017 does not descend
//!   arrays of documents nor index arrays by position);
//! - equality, `$eq`, `$in` with booleans, strings and numbers that are 64-bit integers or
//!   doubles (not null: nx-27017's `{"f": null}` misses absent fields; not arrays or documents:
//!   MongoDB compares documents' fields in stored order);
//! - `$gt`/`$gte`/`$lt`/`$lte` with a number, string or boolean (MongoDB compares within one
//!   type, as the shared semantics do);
//! - `$and` / `$or` of translated parts.
//!
//! Rechecked in the node: `$nor` (nx-27017 does not match an absent field under it), `$ne`,
//! `$nin` (on arrays nx-27017 differs), `$exists` (its count and
//! find disagree), `$not` (missing), `$regex` (Rust regex syntax is not PCRE), `$text`
//! (MongoDB needs a text index and stems words), comparisons with null, documents or arrays
//! (the shared semantics match nothing), paths through `_id` / `_v`.
//!
//! The top-level conjuncts that translate are sent as the server's filter; when all of them do
//! the filter is exact, and only then are sort, skip, limit, projection and count sent too.

use mongodb::bson::{doc, Bson, Document};
use serde_json::Value;

use crate::convert::VERSION;
use zeroservices_core::query::{nesting, Projection, Sort, MAX_NESTING};

/// A filter as sent to the server.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pushed {
    /// The server's filter: every match of the whole filter matches it.
    pub filter: Document,
    /// It matches exactly the matches of the whole filter.
    pub exact: bool,
}

/// Translates what can be of a (valid) filter document.
pub(crate) fn filter(f: &Value) -> Pushed {
    let mut parts = Vec::new();
    let mut exact = true;
    conjuncts(f, &mut parts, &mut exact);
    Pushed {
        filter: merge(parts),
        exact,
    }
}

/// One document for single-key conjuncts: the operators on one path in one operator document
/// (the form every server plans best; nx-27017 runs `$and` in Python); what would collide
/// (a path both equal to a value and compared, two `$or`) goes under `$and`.
fn merge(parts: Vec<Document>) -> Document {
    let mut merged = Document::new();
    let mut rest = Vec::new();
    for part in parts {
        let mut entries = part.into_iter();
        let (Some((k, v)), None) = (entries.next(), entries.next()) else {
            continue; // conjuncts are single-key documents
        };
        match (merged.get_mut(&k), v) {
            (None, v) => {
                merged.insert(k, v);
            }
            (Some(Bson::Document(ops)), Bson::Document(more))
                if is_ops(ops) && is_ops(&more) && more.keys().all(|o| !ops.contains_key(o)) =>
            {
                ops.extend(more);
            }
            (Some(_), v) => rest.push(doc! { k: v }),
        }
    }
    if rest.is_empty() {
        merged
    } else {
        rest.insert(0, merged);
        doc! {"$and": rest}
    }
}

fn is_ops(d: &Document) -> bool {
    !d.is_empty() && d.keys().all(|k| k.starts_with('$'))
}

/// The translated top-level conjuncts of `f` (`$and` flattened); `exact` is cleared for each
/// one left out.
fn conjuncts(f: &Value, out: &mut Vec<Document>, exact: &mut bool) {
    let Some(obj) = f.as_object() else {
        *exact = false;
        return;
    };
    for (k, v) in obj {
        if k == "$and" {
            for sub in v.as_array().into_iter().flatten() {
                conjuncts(sub, out, exact);
            }
            continue;
        }
        match entry(k, v) {
            Some(d) => out.extend(d),
            None => *exact = false,
        }
    }
}

/// A whole filter document (its conjuncts), or `None` if any part of it does not translate.
fn whole(f: &Value) -> Option<Document> {
    let mut parts = Vec::new();
    for (k, v) in f.as_object()? {
        parts.extend(entry(k, v)?);
    }
    Some(merge(parts))
}

/// One `key: value` of a filter document, as conjuncts.
fn entry(k: &str, v: &Value) -> Option<Vec<Document>> {
    match k {
        "$and" | "$or" => {
            let subs = v
                .as_array()?
                .iter()
                .map(|s| whole(s).map(Bson::Document))
                .collect::<Option<Vec<_>>>()?;
            Some(vec![doc! { k: subs }])
        }
        k if k.starts_with('$') => None,
        path if !pushable_path(path) => None,
        path => condition(path, v),
    }
}

/// The conditions on one path, one conjunct per operator.
fn condition(path: &str, v: &Value) -> Option<Vec<Document>> {
    if !is_operator_doc(v) {
        return Some(vec![doc! { path: operand(v)? }]);
    }
    let mut parts = Vec::new();
    for (op, arg) in v.as_object()? {
        let b = match op.as_str() {
            // `{"f": v}` rather than `$eq`: nx-27017's `$eq` misses array members.
            "$eq" => {
                parts.push(doc! { path: operand(arg)? });
                continue;
            }
            "$gt" | "$gte" | "$lt" | "$lte" => operand(arg)?,
            "$in" => Bson::Array(
                arg.as_array()?
                    .iter()
                    .map(operand)
                    .collect::<Option<Vec<_>>>()?,
            ),
            _ => return None,
        };
        parts.push(doc! { path: { op.clone(): b } });
    }
    Some(parts)
}

/// A value compared with a field (for equality or order): a boolean, a string or a number that
/// is a 64-bit integer or a double.
fn operand(v: &Value) -> Option<Bson> {
    match v {
        Value::Bool(b) => Some(Bson::Boolean(*b)),
        Value::String(s) => Some(Bson::String(s.clone())),
        Value::Number(n) => match (n.as_i64(), n.is_f64()) {
            (Some(i), _) => Some(Bson::Int64(i)),
            (None, true) => n.as_f64().map(Bson::Double),
            // An integer beyond i64 would become an inexact double.
            (None, false) => None,
        },
        Value::Null | Value::Array(_) | Value::Object(_) => None,
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

/// A patch MongoDB applies itself in one atomic write.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServerUpdate {
    /// Added to the document's id filter: where the document does not match it, the server
    /// would do otherwise than the shared semantics (`$inc` of a non-number, of an absent or
    /// null field, or past the 64-bit range), and the node applies the patch itself.
    pub guard: Document,
    /// The server's update, with `$inc` of the version field.
    pub update: Document,
}

/// The server's form of an update (in operator form), when its operators mean there what they
/// mean in the shared semantics: `$set` (of values without booleans) and `$unset` of top-level
/// fields, `$inc` of a top-level field by a 64-bit integer. `$push`, `$addToSet`, `$pull`,
/// dotted paths and `$inc` by a fraction stay compare-and-swap writes applied by the node.
pub(crate) fn update(doc: &Value) -> Option<ServerUpdate> {
    let (mut set, mut unset, mut inc, mut guard) = (
        Document::new(),
        Document::new(),
        Document::new(),
        Document::new(),
    );
    for (op, fields) in doc.as_object()? {
        for (path, arg) in fields.as_object()? {
            if !pushable_path(path) {
                return None;
            }
            match op.as_str() {
                "$set" if nesting(arg) < MAX_NESTING => {
                    set.insert(path.clone(), stored(arg)?);
                }
                "$unset" => {
                    unset.insert(path.clone(), "");
                }
                "$inc" => {
                    let by = arg.as_i64()?;
                    // MongoDB compares numbers only with numbers: the guard also says "a number".
                    let room = if by >= 0 {
                        doc! {"$lte": i64::MAX - by}
                    } else {
                        doc! {"$gte": i64::MIN - by}
                    };
                    guard.insert(path.clone(), room);
                    inc.insert(path.clone(), by);
                }
                _ => return None,
            }
        }
    }
    inc.insert(VERSION, 1_i64);
    let mut update = doc! {"$inc": inc};
    if !set.is_empty() {
        update.insert("$set", set);
    }
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    Some(ServerUpdate { guard, update })
}

/// A JSON value as stored, when storing it is exact: numbers that are 64-bit integers or
/// doubles, field names the server takes as they are (no leading `$`, no `.`), and no
/// booleans (nx-27017 stores a boolean given to `$set` as a number).
fn stored(v: &Value) -> Option<Bson> {
    Some(match v {
        Value::Null => Bson::Null,
        Value::Bool(_) => return None,
        Value::Array(items) => Bson::Array(items.iter().map(stored).collect::<Option<_>>()?),
        Value::Object(o) => {
            let mut d = Document::new();
            for (k, x) in o {
                if k.starts_with('$') || k.contains('.') {
                    return None;
                }
                d.insert(k.clone(), stored(x)?);
            }
            Bson::Document(d)
        }
        scalar => operand(scalar)?,
    })
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
            doc! {"status": "pending", "value": {"$gt": 3_i64, "$lte": 9.5}}
        );
        let p = pushed(json!({"tags": {"$in": ["a", 2, true]}, "ok": {"$eq": false}}));
        assert!(p.exact);
        assert_eq!(
            p.filter,
            doc! {"tags": {"$in": ["a", 2_i64, true]}, "ok": false}
        );
        let p = pushed(json!({"$or": [{"a": 1}, {"b": {"$lt": "m"}}], "$nor": [{"c": 2}]}));
        assert!(!p.exact, "$nor stays in the node");
        assert_eq!(p.filter, doc! {"$or": [{"a": 1_i64}, {"b": {"$lt": "m"}}]});
        let p = pushed(json!({}));
        assert_eq!((p.filter, p.exact), (doc! {}, true));
        let p = pushed(json!({"$or": [{"v": {"$gt": 1, "$lt": 5}}, {"w": "x"}]}));
        assert_eq!(
            p.filter,
            doc! {"$or": [{"v": {"$gt": 1_i64, "$lt": 5_i64}}, {"w": "x"}]}
        );
        let p = pushed(json!({"v": {"$eq": 2, "$gt": 1}, "$and": [{"v": {"$lt": 5}}]}));
        assert_eq!(
            p.filter,
            doc! {"$and": [{"v": 2_i64}, {"v": {"$gt": 1_i64}}, {"v": {"$lt": 5_i64}}]}
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
        assert_eq!(p.filter, doc! {"a": 1_i64, "c": {"$gte": "k"}});
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

    #[test]
    fn updates_the_server_applies() {
        let u = update(&json!({"$set": {"status": "done", "r": {"x": [1, null]}}, "$inc": {"n": 2}, "$unset": {"old": ""}}))
            .expect("pushed");
        assert_eq!(u.guard, doc! {"n": {"$lte": i64::MAX - 2}});
        assert_eq!(
            u.update,
            doc! {
                "$inc": {"n": 2_i64, "_v": 1_i64},
                "$set": {"status": "done", "r": {"x": [1_i64, Bson::Null]}},
                "$unset": {"old": ""},
            }
        );
        let u = update(&json!({"$inc": {"n": -1}})).expect("pushed");
        assert_eq!(u.guard, doc! {"n": {"$gte": i64::MIN + 1}});
        for kept in [
            json!({"$inc": {"n": 0.5}}),
            json!({"$set": {"a.b": 1}}),
            json!({"$set": {"_v": 1}}),
            json!({"$set": {"a": {"$x": 1}}}),
            json!({"$set": {"a": 18446744073709551615u64}}),
            json!({"$set": {"a": [true]}}),
            json!({"$push": {"a": 1}}),
            json!({"$pull": {"a": 1}}),
            json!({"$addToSet": {"a": 1}}),
        ] {
            assert_eq!(update(&kept), None, "{kept}");
        }
    }
}
