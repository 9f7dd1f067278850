//! A small JSON Schema validator (the subset collections need): `type`, `properties`,
//! `required`, `additionalProperties`, `enum`, `const`, `minimum`, `maximum`,
//! `exclusiveMinimum`, `exclusiveMaximum`, `minLength`, `maxLength`, `pattern`, `items`,
//! `minItems`, `maxItems`. Unknown keywords are rejected when the schema is loaded, so a schema
//! never silently checks less than its author thinks.

use regex::Regex;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::query::values_equal;

/// A checked JSON Schema document (the supported subset); data is validated by walking it.
#[derive(Debug, Clone)]
pub struct Schema {
    root: Value,
}

const KNOWN: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "items",
    "minItems",
    "maxItems",
    "title",
    "description",
    "$schema",
    "$id",
    "default",
];

impl Schema {
    /// Checks and compiles a schema document.
    pub fn new(root: Value) -> Result<Schema> {
        check(&root, "#")?;
        Ok(Schema { root })
    }

    /// The schema document.
    pub fn document(&self) -> &Value {
        &self.root
    }

    /// Validates `data`; the error lists every offending path.
    pub fn validate(&self, data: &Value) -> Result<()> {
        let mut errors = Vec::new();
        validate(&self.root, data, "", &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(errors))
        }
    }
}

fn check(s: &Value, at: &str) -> Result<()> {
    let Some(o) = s.as_object() else {
        return Err(Error::BadRequest(format!(
            "schema at {at} must be an object"
        )));
    };
    for (k, v) in o {
        if !KNOWN.contains(&k.as_str()) {
            return Err(Error::BadRequest(format!(
                "unsupported schema keyword {k:?} at {at}"
            )));
        }
        match k.as_str() {
            "properties" => {
                for (name, sub) in v.as_object().ok_or_else(|| {
                    Error::BadRequest(format!("{at}/properties must be an object"))
                })? {
                    check(sub, &format!("{at}/properties/{name}"))?;
                }
            }
            "items" => check(v, &format!("{at}/items"))?,
            "additionalProperties" if v.is_object() => {
                check(v, &format!("{at}/additionalProperties"))?
            }
            "pattern" => {
                Regex::new(v.as_str().unwrap_or(""))
                    .map_err(|e| Error::BadRequest(format!("bad pattern at {at}: {e}")))?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => {
            v.as_i64().is_some()
                || v.as_u64().is_some()
                || v.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => false,
    }
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// `minimum`, `maximum` and their exclusive forms.
fn check_number(o: &serde_json::Map<String, Value>, x: f64, err: &mut impl FnMut(String)) {
    let bound = |k: &str| o.get(k).and_then(num);
    if bound("minimum").is_some_and(|m| x < m) {
        err(format!("must be >= {}", o["minimum"]));
    }
    if bound("maximum").is_some_and(|m| x > m) {
        err(format!("must be <= {}", o["maximum"]));
    }
    if bound("exclusiveMinimum").is_some_and(|m| x <= m) {
        err(format!("must be > {}", o["exclusiveMinimum"]));
    }
    if bound("exclusiveMaximum").is_some_and(|m| x >= m) {
        err(format!("must be < {}", o["exclusiveMaximum"]));
    }
}

/// `minLength`, `maxLength` (in characters) and `pattern`.
fn check_string(o: &serde_json::Map<String, Value>, text: &str, err: &mut impl FnMut(String)) {
    let n = text.chars().count() as u64;
    if o.get("minLength")
        .and_then(Value::as_u64)
        .is_some_and(|m| n < m)
    {
        err(format!("shorter than {}", o["minLength"]));
    }
    if o.get("maxLength")
        .and_then(Value::as_u64)
        .is_some_and(|m| n > m)
    {
        err(format!("longer than {}", o["maxLength"]));
    }
    if let Some(p) = o.get("pattern").and_then(Value::as_str) {
        if Regex::new(p).is_ok_and(|re| !re.is_match(text)) {
            err(format!("does not match {p:?}"));
        }
    }
}

fn validate(s: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    let Some(o) = s.as_object() else { return };
    let at = if path.is_empty() { "/" } else { path };
    let mut err = |m: String| errs.push(format!("{at}: {m}"));
    if let Some(t) = o.get("type") {
        let ok = match t {
            Value::String(t) => type_ok(t, v),
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_ok(t, v)),
            _ => true,
        };
        if !ok {
            err(format!("expected type {t}"));
            return;
        }
    }
    if let Some(Value::Array(options)) = o.get("enum") {
        if !options.iter().any(|x| values_equal(x, v)) {
            err(format!("must be one of {}", Value::Array(options.clone())));
        }
    }
    if let Some(c) = o.get("const") {
        if !values_equal(c, v) {
            err(format!("must equal {c}"));
        }
    }
    if let Some(x) = num(v) {
        check_number(o, x, &mut err);
    }
    if let Some(text) = v.as_str() {
        check_string(o, text, &mut err);
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if o.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n < m)
        {
            err(format!("fewer than {} items", o["minItems"]));
        }
        if o.get("maxItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| n > m)
        {
            err(format!("more than {} items", o["maxItems"]));
        }
        if let Some(item_schema) = o.get("items") {
            for (i, it) in items.iter().enumerate() {
                validate(item_schema, it, &format!("{path}/{i}"), errs);
            }
        }
    }
    if let Some(obj) = v.as_object() {
        validate_object(o, obj, path, errs);
    }
}

fn validate_object(
    o: &Map<String, Value>,
    obj: &Map<String, Value>,
    path: &str,
    errs: &mut Vec<String>,
) {
    if let Some(Value::Array(req)) = o.get("required") {
        for r in req.iter().filter_map(Value::as_str) {
            if !obj.contains_key(r) {
                errs.push(format!("{path}/{r}: is required"));
            }
        }
    }
    let props = o.get("properties").and_then(Value::as_object);
    for (k, val) in obj {
        match props.and_then(|p| p.get(k)) {
            Some(sub) => validate(sub, val, &format!("{path}/{k}"), errs),
            None => match o.get("additionalProperties") {
                Some(Value::Bool(false)) => errs.push(format!("{path}/{k}: is not allowed")),
                Some(sub @ Value::Object(_)) => validate(sub, val, &format!("{path}/{k}"), errs),
                _ => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_every_offending_path() {
        let s = Schema::new(json!({
            "type": "object",
            "required": ["value", "status"],
            "properties": {"value": {"type": "number", "minimum": 0}, "status": {"enum": ["pending", "done"]}},
            "additionalProperties": false
        }))
        .unwrap();
        assert!(s
            .validate(&json!({"value": 3, "status": "pending"}))
            .is_ok());
        match s.validate(&json!({"value": -1, "extra": 1})) {
            Err(Error::Validation(paths)) => {
                assert!(paths.iter().any(|p| p.starts_with("/value")), "{paths:?}");
                assert!(paths.iter().any(|p| p.starts_with("/status")), "{paths:?}");
                assert!(paths.iter().any(|p| p.starts_with("/extra")), "{paths:?}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(Schema::new(json!({"oneOf": []})).is_err());
    }
}
