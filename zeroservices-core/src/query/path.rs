//! Dotted paths into JSON documents and the total order and equality used by queries.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Every value reached by `path`, descending into arrays as MongoDB does (`tags.name` reaches
/// the `name` of each element of `tags`; a numeric segment indexes an array).
pub(crate) fn resolve<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let segs: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    walk(v, &segs, &mut out);
    out
}

fn walk<'a>(v: &'a Value, segs: &[&str], out: &mut Vec<&'a Value>) {
    let Some((head, rest)) = segs.split_first() else {
        out.push(v);
        return;
    };
    match v {
        Value::Object(m) => {
            if let Some(x) = m.get(*head) {
                walk(x, rest, out);
            }
        }
        Value::Array(items) => {
            if let Ok(i) = head.parse::<usize>() {
                if let Some(x) = items.get(i) {
                    walk(x, rest, out);
                }
            }
            for item in items.iter().filter(|i| i.is_object()) {
                walk(item, segs, out);
            }
        }
        _ => {}
    }
}

/// The value at `path` following objects only (what sort and projection use).
pub(crate) fn first<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Mutable access to the parent object of `path`, creating missing objects on the way.
fn parent_mut<'a>(v: &'a mut Value, path: &str) -> Result<(&'a mut Map<String, Value>, String)> {
    let mut segs: Vec<&str> = path.split('.').collect();
    let last = segs.pop().unwrap_or_default().to_owned();
    let mut cur = v;
    for seg in segs {
        let obj = cur.as_object_mut().ok_or_else(|| {
            Error::BadRequest(format!("cannot descend into a non-object at {path:?}"))
        })?;
        cur = obj
            .entry(seg.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let obj = cur.as_object_mut().ok_or_else(|| {
        Error::BadRequest(format!("cannot set a field of a non-object at {path:?}"))
    })?;
    Ok((obj, last))
}

/// Sets `path` to `value`, creating intermediate objects.
pub(crate) fn set(v: &mut Value, path: &str, value: Value) -> Result<()> {
    let (obj, last) = parent_mut(v, path)?;
    obj.insert(last, value);
    Ok(())
}

/// Removes `path` if present.
pub(crate) fn unset(v: &mut Value, path: &str) {
    let mut segs: Vec<&str> = path.split('.').collect();
    let Some(last) = segs.pop() else { return };
    let mut cur = v;
    for seg in segs {
        match cur.as_object_mut().and_then(|m| m.get_mut(seg)) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// Mutable reference to the value at `path`, inserting `Null` when missing.
pub(crate) fn entry<'a>(v: &'a mut Value, path: &str) -> Result<&'a mut Value> {
    let (obj, last) = parent_mut(v, path)?;
    Ok(obj.entry(last).or_insert(Value::Null))
}

fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Number(_) => 1,
        Value::String(_) => 2,
        Value::Object(_) => 3,
        Value::Array(_) => 4,
        Value::Bool(_) => 5,
    }
}

/// Total order over JSON values: null < numbers < strings < objects < arrays < booleans (the
/// MongoDB order); numbers compare by value whatever their representation.
pub fn cmp_values(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i.cmp(&j),
            _ => {
                let (f, g) = (
                    x.as_f64().unwrap_or(f64::NAN),
                    y.as_f64().unwrap_or(f64::NAN),
                );
                f.partial_cmp(&g).unwrap_or(Ordering::Equal)
            }
        },
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Array(x), Value::Array(y)) => {
            for (i, j) in x.iter().zip(y) {
                let o = cmp_values(i, j);
                if o.is_ne() {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Object(x), Value::Object(y)) => {
            for ((ka, va), (kb, vb)) in x.iter().zip(y) {
                let o = ka.cmp(kb).then_with(|| cmp_values(va, vb));
                if o.is_ne() {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// Equality with numbers compared by value (`1 == 1.0`).
pub fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => cmp_values(a, b).is_eq(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(i, j)| values_equal(i, j))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| values_equal(v, w)))
        }
        _ => a == b,
    }
}
