//! The arguments of the standard actions, parsed once into types. Every node that checks a
//! request (an API node applying a read rule) and the node that applies it parse with the same
//! function, so a check runs on exactly what the store will apply.
//!
//! Arguments are a JSON object (or `null`, read as "none", for the actions that need none).
//! An array is refused: serde would otherwise read `[filter, sort, skip, limit, fields]` as a
//! struct, field by field, past any check made on the object form.
//!
//! ```
//! use serde_json::json;
//! use zeroservices_core::resources::{Action, StandardArgs};
//!
//! let args = StandardArgs::parse(&Action::List, json!({"where": {"owner": "alice"}})).unwrap();
//! assert!(matches!(args, StandardArgs::List(_)));
//! assert!(StandardArgs::parse(&Action::List, json!([{"owner": "alice"}])).is_err());
//! ```

use serde::Deserialize;
use serde_json::{Map, Value};

use super::Action;
use crate::error::{Error, Result};
use crate::query::{ListQuery, Update};

/// The parsed arguments of one standard action.
#[derive(Debug, Clone)]
pub enum StandardArgs {
    /// `list`: the query (its filter checked).
    List(ListQuery),
    /// `create`: a client-chosen id, if any, and the data.
    Create {
        /// The client-chosen id.
        resource_id: Option<String>,
        /// The new resource's data.
        resource_data: Value,
    },
    /// `get` (no arguments).
    Get,
    /// `patch`: the parsed update.
    Patch(Update),
    /// `delete` (no arguments).
    Delete,
    /// `add_link`.
    AddLink(LinkArgs),
}

/// The arguments of `add_link`.
#[derive(Debug, Clone, Deserialize)]
pub struct LinkArgs {
    /// Relation name (a field path under `_links`).
    pub relation: String,
    /// `[collection, resource_id]` of the target.
    pub target: (String, String),
    /// A title for the link.
    #[serde(default)]
    pub title: Option<String>,
}

#[derive(Deserialize)]
struct PatchArgs {
    patch: Value,
}

fn bad(action: &Action, msg: impl std::fmt::Display) -> Error {
    Error::BadRequest(format!("invalid {action} arguments: {msg}"))
}

/// The arguments as an object; `null` is an empty one.
fn object(action: &Action, args: Value) -> Result<Map<String, Value>> {
    match args {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Map::new()),
        other => Err(bad(
            action,
            format_args!("expected a JSON object, got {}", kind_of(&other)),
        )),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl StandardArgs {
    /// Parses the arguments of a standard action (a custom action's handler reads its
    /// arguments itself: asking for one here is an internal error).
    pub fn parse(action: &Action, args: Value) -> Result<StandardArgs> {
        let obj = object(action, args)?;
        Ok(match action {
            Action::List => {
                let q: ListQuery =
                    serde_json::from_value(Value::Object(obj)).map_err(|e| bad(action, e))?;
                StandardArgs::List(q)
            }
            Action::Create => create(action, obj)?,
            Action::Get => StandardArgs::Get,
            Action::Delete => StandardArgs::Delete,
            Action::Patch => {
                let a: PatchArgs =
                    serde_json::from_value(Value::Object(obj)).map_err(|e| bad(action, e))?;
                StandardArgs::Patch(Update::parse(&a.patch)?)
            }
            Action::AddLink => StandardArgs::AddLink(
                serde_json::from_value(Value::Object(obj)).map_err(|e| bad(action, e))?,
            ),
            Action::Custom(name) => {
                return Err(Error::Internal(format!(
                    "{name:?} is a custom action, not a standard one"
                )))
            }
        })
    }

    /// The arguments in their wire form (what [`StandardArgs::parse`] reads back the same).
    pub fn into_value(self) -> Result<Value> {
        Ok(match self {
            StandardArgs::List(q) => {
                serde_json::to_value(&q).map_err(|e| Error::Internal(e.to_string()))?
            }
            StandardArgs::Create {
                resource_id,
                resource_data,
            } => {
                let mut m = Map::with_capacity(2);
                m.insert("resource_data".into(), resource_data);
                if let Some(id) = resource_id {
                    m.insert("resource_id".into(), Value::String(id));
                }
                Value::Object(m)
            }
            StandardArgs::Get | StandardArgs::Delete => Value::Object(Map::new()),
            StandardArgs::Patch(u) => {
                let mut m = Map::with_capacity(1);
                m.insert("patch".into(), u.document().clone());
                Value::Object(m)
            }
            StandardArgs::AddLink(l) => serde_json::json!({
                "relation": l.relation,
                "target": [l.target.0, l.target.1],
                "title": l.title,
            }),
        })
    }
}

/// Splits create arguments `{"resource_data": {...}, "resource_id"?: "..."}` by moving the data
/// out (a `serde_json::from_value` would copy it).
fn create(action: &Action, mut obj: Map<String, Value>) -> Result<StandardArgs> {
    let resource_data = obj
        .remove("resource_data")
        .ok_or_else(|| bad(action, "missing field `resource_data`"))?;
    let resource_id = match obj.remove("resource_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id),
        Some(_) => return Err(bad(action, "`resource_id` must be a string")),
    };
    if let Some(k) = obj.keys().next() {
        return Err(bad(action, format_args!("unknown field `{k}`")));
    }
    Ok(StandardArgs::Create {
        resource_id,
        resource_data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sequences_are_refused_for_every_standard_action() {
        for action in ["list", "create", "get", "patch", "delete", "add_link"] {
            let a = Action::parse(action);
            let e = StandardArgs::parse(&a, json!([{"owner": "alice"}, [], 0, 10000, []]));
            assert!(matches!(e, Err(Error::BadRequest(_))), "{action}: {e:?}");
            for scalar in [json!(1), json!("x"), json!(true)] {
                assert!(StandardArgs::parse(&a, scalar).is_err(), "{action}");
            }
        }
        // A patch whose update is wrapped in an array is refused too.
        let nested = json!({"patch": [{"$set": {"owner": "alice"}}]});
        assert!(StandardArgs::parse(&Action::Patch, nested).is_err());
    }

    #[test]
    fn null_is_no_arguments_and_round_trips() {
        let StandardArgs::List(q) = StandardArgs::parse(&Action::List, Value::Null).unwrap() else {
            panic!("a list")
        };
        assert!(q.filter.is_all());
        for (action, args) in [
            ("list", json!({"where": {"a": 1}, "skip": 2, "limit": 3})),
            (
                "create",
                json!({"resource_data": {"a": 1}, "resource_id": "x"}),
            ),
            ("patch", json!({"patch": {"$inc": {"a": 1}}})),
            ("add_link", json!({"relation": "r", "target": ["c", "1"]})),
        ] {
            let a = Action::parse(action);
            let once = StandardArgs::parse(&a, args).unwrap().into_value().unwrap();
            let twice = StandardArgs::parse(&a, once.clone())
                .unwrap()
                .into_value()
                .unwrap();
            assert_eq!(once, twice, "{action}");
        }
    }

    #[test]
    fn a_where_that_is_not_an_object_is_refused() {
        for w in [json!([]), json!(5), json!("owner")] {
            assert!(StandardArgs::parse(&Action::List, json!({ "where": w })).is_err());
        }
    }
}
