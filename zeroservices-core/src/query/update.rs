//! Parsed update documents and their application.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::check_path;
use super::filter::Filter;
use super::path::{entry, set, unset, values_equal};
use crate::error::{Error, Result};

/// A parsed update document. A document without any `$` operator is a `$set` of its fields.
#[derive(Debug, Clone)]
pub struct Update {
    ops: Vec<Op>,
    doc: Value,
    check: Option<Check>,
}

/// A condition on a document: `Ok` when it may be written.
type CheckFn = dyn Fn(&Value) -> Result<()> + Send + Sync;

/// A condition the updated document must meet, checked where the update is applied.
#[derive(Clone)]
struct Check(Arc<CheckFn>);

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Check(..)")
    }
}

#[derive(Debug, Clone)]
enum Op {
    Set(String, Value),
    Unset(String),
    Inc(String, Value),
    Push(String, Vec<Value>),
    AddToSet(String, Vec<Value>),
    Pull(String, PullCond),
}

#[derive(Debug, Clone)]
enum PullCond {
    Equal(Value),
    Matching(Filter),
    Cond(Filter),
}

fn bad(msg: impl Into<String>) -> Error {
    Error::BadRequest(msg.into())
}

fn each(v: &Value) -> Vec<Value> {
    match v
        .as_object()
        .and_then(|o| o.get("$each"))
        .and_then(Value::as_array)
    {
        Some(list) if v.as_object().is_some_and(|o| o.len() == 1) => list.clone(),
        _ => vec![v.clone()],
    }
}

impl Update {
    /// Parses an update document; unknown operators and malformed operands are errors.
    pub fn parse(doc: &Value) -> Result<Update> {
        let obj = doc
            .as_object()
            .ok_or_else(|| bad("an update must be a JSON object"))?;
        let has_ops = obj.keys().any(|k| k.starts_with('$'));
        if has_ops && obj.keys().any(|k| !k.starts_with('$')) {
            return Err(bad("cannot mix update operators and plain fields"));
        }
        let mut ops = Vec::new();
        let mut paths: Vec<String> = Vec::new();
        let groups: Vec<(&str, &Map<String, Value>)> = if has_ops {
            obj.iter()
                .map(|(op, fields)| {
                    let f = fields
                        .as_object()
                        .ok_or_else(|| bad(format!("{op} takes an object")))?;
                    Ok((op.as_str(), f))
                })
                .collect::<Result<_>>()?
        } else {
            vec![("$set", obj)]
        };
        for (op, fields) in groups {
            if !matches!(
                op,
                "$set" | "$unset" | "$inc" | "$push" | "$addToSet" | "$pull"
            ) {
                return Err(bad(format!("unknown update operator {op}")));
            }
            for (path, arg) in fields {
                check_path(path)?;
                paths.push(path.clone());
                ops.push(match op {
                    "$set" => Op::Set(path.clone(), arg.clone()),
                    "$unset" => Op::Unset(path.clone()),
                    "$inc" => {
                        if !arg.is_number() {
                            return Err(bad(format!("$inc of {path:?} takes a number")));
                        }
                        Op::Inc(path.clone(), arg.clone())
                    }
                    "$push" => Op::Push(path.clone(), each(arg)),
                    "$addToSet" => Op::AddToSet(path.clone(), each(arg)),
                    "$pull" => {
                        let cond = match arg {
                            Value::Object(o)
                                if o.keys().all(|k| k.starts_with('$')) && !o.is_empty() =>
                            {
                                PullCond::Cond(Filter::parse(&serde_json::json!({ "v": arg }))?)
                            }
                            Value::Object(_) => PullCond::Matching(Filter::parse(arg)?),
                            other => PullCond::Equal(other.clone()),
                        };
                        Op::Pull(path.clone(), cond)
                    }
                    other => return Err(bad(format!("unknown update operator {other}"))),
                });
            }
        }
        // Two operators on one path (or on a path and its parent) would depend on their order.
        paths.sort();
        for w in paths.windows(2) {
            if w[0] == w[1] || w[1].starts_with(&format!("{}.", w[0])) {
                return Err(bad(format!(
                    "conflicting updates of {:?} and {:?}",
                    w[0], w[1]
                )));
            }
        }
        let doc = if has_ops {
            doc.clone()
        } else {
            serde_json::json!({ "$set": doc })
        };
        Ok(Update {
            ops,
            doc,
            check: None,
        })
    }

    /// The same update, refused (with `check`'s error, nothing written) when the document it
    /// produces fails `check`. Stores apply updates inside their atomic write, so the check
    /// sees the document actually written, whatever patches run at the same time: a schema
    /// cannot be bypassed by concurrent patches.
    pub fn with_check(
        mut self,
        check: impl Fn(&Value) -> Result<()> + Send + Sync + 'static,
    ) -> Update {
        self.check = Some(Check(Arc::new(check)));
        self
    }

    /// The update in operator form (`{"$set": ...}` for a plain document).
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// Every field path the update changes, with its operator (`"$set"`, `"$unset"`, ...) and,
    /// for `$set`, the value set: what a check of "who may change which field" reads.
    ///
    /// ```
    /// use serde_json::json;
    /// use zeroservices_core::query::Update;
    ///
    /// let u = Update::parse(&json!({"owner": "bob"})).unwrap();
    /// let changes: Vec<_> = u.changes().collect();
    /// assert_eq!(changes, [("$set", "owner", Some(&json!("bob")))]);
    /// ```
    pub fn changes(&self) -> impl Iterator<Item = (&'static str, &str, Option<&Value>)> {
        self.ops.iter().map(|op| match op {
            Op::Set(p, v) => ("$set", p.as_str(), Some(v)),
            Op::Unset(p) => ("$unset", p.as_str(), None),
            Op::Inc(p, _) => ("$inc", p.as_str(), None),
            Op::Push(p, _) => ("$push", p.as_str(), None),
            Op::AddToSet(p, _) => ("$addToSet", p.as_str(), None),
            Op::Pull(p, _) => ("$pull", p.as_str(), None),
        })
    }

    /// Whether the updated document must pass a check ([`Update::with_check`]): a store must
    /// then apply the update itself, where it can run the check before writing.
    pub fn is_checked(&self) -> bool {
        self.check.is_some()
    }

    /// Applies the update to `data` (which must be an object). On error `data` is unchanged.
    pub fn apply(&self, data: &mut Value) -> Result<()> {
        let mut work = data.clone();
        for op in &self.ops {
            apply_op(op, &mut work)?;
        }
        super::check_nesting(&work)?;
        if let Some(Check(check)) = &self.check {
            check(&work)?;
        }
        *data = work;
        Ok(())
    }
}

fn array_at<'a>(data: &'a mut Value, path: &str) -> Result<&'a mut Vec<Value>> {
    let slot = entry(data, path)?;
    if slot.is_null() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut()
        .ok_or_else(|| bad(format!("{path:?} is not an array")))
}

fn apply_op(op: &Op, data: &mut Value) -> Result<()> {
    match op {
        Op::Set(p, v) => set(data, p, v.clone())?,
        Op::Unset(p) => unset(data, p),
        Op::Inc(p, by) => {
            let slot = entry(data, p)?;
            let new = match (&*slot, by) {
                (Value::Null, b) => b.clone(),
                (Value::Number(a), Value::Number(b)) => match (a.as_i64(), b.as_i64()) {
                    (Some(x), Some(y)) => match x.checked_add(y) {
                        Some(s) => Value::from(s),
                        None => Value::from(x as f64 + y as f64),
                    },
                    _ => {
                        let s = a.as_f64().unwrap_or(0.0) + b.as_f64().unwrap_or(0.0);
                        serde_json::Number::from_f64(s)
                            .map(Value::Number)
                            .ok_or_else(|| bad("$inc overflow"))?
                    }
                },
                _ => return Err(bad(format!("$inc of non-number {p:?}"))),
            };
            *slot = new;
        }
        Op::Push(p, items) => array_at(data, p)?.extend(items.iter().cloned()),
        Op::AddToSet(p, items) => {
            let arr = array_at(data, p)?;
            for i in items {
                if !arr.iter().any(|x| values_equal(x, i)) {
                    arr.push(i.clone());
                }
            }
        }
        Op::Pull(p, cond) => {
            let slot = entry(data, p)?;
            match slot {
                Value::Null => unset(data, p),
                Value::Array(arr) => arr.retain(|x| match cond {
                    PullCond::Equal(v) => !values_equal(x, v),
                    PullCond::Matching(f) => !f.matches(x),
                    PullCond::Cond(f) => !f.matches(&serde_json::json!({ "v": x })),
                }),
                _ => return Err(bad(format!("$pull of non-array {p:?}"))),
            }
        }
    }
    Ok(())
}
