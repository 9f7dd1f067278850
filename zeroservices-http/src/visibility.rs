//! Per-user visibility: a collection may declare a read rule that depends on the caller, a
//! filter in which the string `"$user"` stands for the authenticated user (the Basic user
//! name, or the JWT `sub`). `{"owner": "$user"}`: each user sees only the resources whose
//! `owner` is them.
//!
//! Applied by the API node to everything a user does with the collection:
//! - lists get the rule ANDed to their filter; `get`, `patch`, `delete` and resource actions
//!   of a resource the rule hides answer 404 (as if it did not exist);
//! - the rule's *owner fields* (top-level keys whose value is `"$user"`) are the caller on
//!   creates (filled in when absent, 403 when another user), and a patch may set them to the
//!   caller only, never unset them (403);
//! - collection-level custom actions are refused (403): they could read anything;
//! - `/realtime` delivers an event only when the changed data matches the caller's rule (a
//!   delete only for a resource the connection saw as visible), and live queries AND the rule
//!   into their filter;
//! - anonymous callers get 401.

use serde_json::{Map, Value};
use zeroservices_core::query::{Filter, Update};

use crate::auth::Principal;
use crate::error::ApiError;

/// The placeholder for the caller in a rule.
pub(crate) const USER: &str = "$user";

/// A read rule (see the module docs).
#[derive(Debug, Clone)]
pub struct ReadRule {
    template: Value,
    owner_fields: Vec<String>,
}

impl ReadRule {
    /// A rule from its filter template, e.g. `{"owner": "$user"}`; checked as a filter.
    ///
    /// ```
    /// use serde_json::json;
    /// let rule = zeroservices_http::ReadRule::new(json!({"owner": "$user"})).unwrap();
    /// assert!(zeroservices_http::ReadRule::new(json!({"owner": {"$bogus": 1}})).is_err());
    /// # drop(rule);
    /// ```
    pub fn new(template: Value) -> Result<ReadRule, String> {
        let Value::Object(m) = &template else {
            return Err("a read rule must be a JSON object".into());
        };
        let owner_fields = m
            .iter()
            .filter(|(_, v)| v.as_str() == Some(USER))
            .map(|(k, _)| k.clone())
            .collect();
        let rule = ReadRule {
            owner_fields,
            template: template.clone(),
        };
        Filter::parse(&rule.filter_for("someone")).map_err(|e| e.to_string())?;
        Ok(rule)
    }

    /// The rule for `user`: the template with `"$user"` replaced.
    pub(crate) fn filter_for(&self, user: &str) -> Value {
        fn fill(v: &Value, user: &str) -> Value {
            match v {
                Value::String(s) if s == USER => Value::String(user.to_owned()),
                Value::Array(a) => Value::Array(a.iter().map(|x| fill(x, user)).collect()),
                Value::Object(m) => {
                    Value::Object(m.iter().map(|(k, x)| (k.clone(), fill(x, user))).collect())
                }
                other => other.clone(),
            }
        }
        fill(&self.template, user)
    }

    /// The parsed rule for `user`.
    pub(crate) fn matcher(&self, user: &str) -> Option<Filter> {
        Filter::parse(&self.filter_for(user)).ok()
    }

    /// Create data as `user` may write it: owner fields filled in, or 403.
    pub(crate) fn own_create(&self, user: &str, data: &mut Value) -> Result<(), ApiError> {
        if !data.is_object() {
            return Ok(()); // not an object: the store refuses it
        }
        for f in &self.owner_fields {
            match lookup(data, f) {
                None => {
                    let fill = Update::parse(&serde_json::json!({ "$set": { f.as_str(): user } }))
                        .and_then(|u| u.apply(data));
                    if fill.is_err() {
                        return Err(forbidden(f)); // a parent of the owner field is not an object
                    }
                }
                Some(Value::String(s)) if s == user => {}
                Some(_) => return Err(forbidden(f)),
            }
        }
        Ok(())
    }

    /// 403 when the update would set an owner field to anything but `user`, or change it (or
    /// a parent or child of it) in any other way. Runs on the parsed update, the one the store
    /// applies.
    pub(crate) fn check_patch(&self, user: &str, update: &Update) -> Result<(), ApiError> {
        for (op, path, value) in update.changes() {
            for f in &self.owner_fields {
                let related = path == f
                    || path
                        .strip_prefix(f.as_str())
                        .is_some_and(|r| r.starts_with('.'))
                    || f.strip_prefix(path).is_some_and(|r| r.starts_with('.'));
                let to_self =
                    op == "$set" && path == f && value.and_then(Value::as_str) == Some(user);
                if related && !to_self {
                    return Err(forbidden(f));
                }
            }
        }
        Ok(())
    }
}

/// The value at a dotted path of an object, if any.
fn lookup<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(data, |v, k| v.as_object()?.get(k))
}

fn forbidden(field: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "forbidden",
        format!("{field:?} can only be yourself"),
    )
}

/// The user a rule is applied for; anonymous callers have none.
pub(crate) fn user_of(who: &Principal) -> Option<&str> {
    match who {
        Principal::Anonymous => None,
        Principal::User(u) => Some(u),
        Principal::Token { subject, .. } => Some(subject),
    }
}

/// `{"$and": [a, b]}` (or `b` when `a` is empty).
pub(crate) fn and(a: Value, b: Value) -> Value {
    match a {
        Value::Null => b,
        Value::Object(m) if m.is_empty() => b,
        a => {
            let mut m = Map::with_capacity(1);
            m.insert("$and".into(), Value::Array(vec![a, b]));
            Value::Object(m)
        }
    }
}
