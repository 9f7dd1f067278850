//! JSON ↔ BSON, resource ids and driver errors.

use mongodb::bson::raw::{RawArray, RawArrayBuf, RawBson, RawBsonRef, RawDocument, RawDocumentBuf};
use mongodb::bson::{self, doc, oid::ObjectId, Bson, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use serde_json::Value;
use zeroservices_core::{resources::Resource, Error};

/// Field holding a document's version, for compare-and-swap patches. Hidden from resources.
pub(crate) const VERSION: &str = "_v";

/// JSON object → BSON document (integers stay integers, floats stay doubles), for shallow
/// documents such as index keys; resource data goes through [`json_to_raw`].
pub(crate) fn to_document(v: &Value) -> Result<Document, Error> {
    match bson::to_bson(v).map_err(|e| Error::BadRequest(format!("cannot store value: {e}")))? {
        Bson::Document(d) => Ok(d),
        _ => Err(Error::BadRequest(
            "resource data must be a JSON object".into(),
        )),
    }
}

/// A resource's data as a stored document, built without recursion: data nests up to
/// `MAX_NESTING` levels, deeper than serde's recursive conversions fit in a worker thread's
/// stack once optimized. Integers beyond 64 bits and field names with a NUL byte are refused.
pub(crate) fn json_to_raw(v: &Value) -> Result<RawDocumentBuf, Error> {
    let root = v
        .as_object()
        .ok_or_else(|| Error::BadRequest("resource data must be a JSON object".into()))?;
    enum Open<'a> {
        Doc(serde_json::map::Iter<'a>, RawDocumentBuf),
        Arr(std::slice::Iter<'a, Value>, RawArrayBuf),
    }
    // Each open container, with the key it takes in its parent.
    let mut stack: Vec<(Open<'_>, &str)> =
        vec![(Open::Doc(root.iter(), RawDocumentBuf::new()), "")];
    loop {
        let Some((top, _)) = stack.last_mut() else {
            return Err(Error::Internal("empty conversion stack".into()));
        };
        let next: Option<(&str, &Value)> = match top {
            Open::Doc(it, _) => it.next().map(|(k, v)| (k.as_str(), v)),
            Open::Arr(it, _) => it.next().map(|v| ("", v)),
        };
        match next {
            Some((key, Value::Object(o))) => {
                stack.push((Open::Doc(o.iter(), RawDocumentBuf::new()), key));
            }
            Some((key, Value::Array(a))) => {
                stack.push((Open::Arr(a.iter(), RawArrayBuf::new()), key));
            }
            Some((key, scalar)) => {
                let value = raw_scalar(scalar)?;
                put(top, key, value)?;
            }
            None => {
                let Some((done, key)) = stack.pop() else {
                    return Err(Error::Internal("empty conversion stack".into()));
                };
                let value = match done {
                    Open::Doc(_, d) => RawBson::Document(d),
                    Open::Arr(_, a) => RawBson::Array(a),
                };
                match stack.last_mut() {
                    Some((parent, _)) => put(parent, key, value)?,
                    None => {
                        return match value {
                            RawBson::Document(d) => Ok(d),
                            _ => Err(Error::Internal("root is not a document".into())),
                        }
                    }
                }
            }
        }
    }

    fn put(into: &mut Open<'_>, key: &str, value: RawBson) -> Result<(), Error> {
        match into {
            Open::Doc(_, d) => {
                if key.contains('\0') {
                    return Err(Error::BadRequest(format!(
                        "field name {key:?} holds a NUL character, which MongoDB cannot store"
                    )));
                }
                d.append(key, value);
            }
            Open::Arr(_, a) => a.push(value),
        }
        Ok(())
    }
}

fn raw_scalar(v: &Value) -> Result<RawBson, Error> {
    Ok(match v {
        Value::Null => RawBson::Null,
        Value::Bool(b) => RawBson::Boolean(*b),
        Value::String(s) => RawBson::String(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => RawBson::Int64(i),
            (None, Some(f)) if n.is_f64() => RawBson::Double(f),
            _ => {
                return Err(Error::BadRequest(format!(
                    "cannot store {n}: MongoDB integers have 64 bits"
                )))
            }
        },
        Value::Array(_) | Value::Object(_) => {
            return Err(Error::Internal("a container is not a scalar".into()))
        }
    })
}

/// A stored document as JSON (relaxed extended JSON for BSON types JSON lacks), read without
/// recursion (see [`json_to_raw`]).
pub(crate) fn raw_to_json(doc: &RawDocument) -> Result<Value, Error> {
    enum Open<'a> {
        Doc(DocIter<'a>, serde_json::Map<String, Value>),
        Arr(mongodb::bson::raw::RawArrayIter<'a>, Vec<Value>),
    }
    let corrupt =
        |e: mongodb::bson::raw::Error| Error::Storage(format!("unreadable document: {e}"));
    let mut stack: Vec<(Open<'_>, String)> = vec![(
        Open::Doc(Box::new(doc.iter()), serde_json::Map::new()),
        String::new(),
    )];
    loop {
        let Some((top, _)) = stack.last_mut() else {
            return Err(Error::Internal("empty conversion stack".into()));
        };
        let next: Option<(String, RawBsonRef<'_>)> = match top {
            Open::Doc(it, _) => it
                .next()
                .transpose()
                .map_err(corrupt)?
                .map(|(k, v)| (k.to_owned(), v)),
            Open::Arr(it, _) => it
                .next()
                .transpose()
                .map_err(corrupt)?
                .map(|v| (String::new(), v)),
        };
        match next {
            Some((key, RawBsonRef::Document(d))) => {
                stack.push((Open::Doc(Box::new(d.iter()), serde_json::Map::new()), key));
            }
            Some((key, RawBsonRef::Array(a))) => {
                stack.push((Open::Arr(array_iter(a), Vec::new()), key));
            }
            Some((key, scalar)) => {
                let value = json_scalar(scalar)?;
                put(top, key, value);
            }
            None => {
                let Some((done, key)) = stack.pop() else {
                    return Err(Error::Internal("empty conversion stack".into()));
                };
                let value = match done {
                    Open::Doc(_, m) => Value::Object(m),
                    Open::Arr(_, a) => Value::Array(a),
                };
                match stack.last_mut() {
                    Some((parent, _)) => put(parent, key, value),
                    None => return Ok(value),
                }
            }
        }
    }

    fn put(into: &mut Open<'_>, key: String, value: Value) {
        match into {
            Open::Doc(_, m) => {
                m.insert(key, value);
            }
            Open::Arr(_, a) => a.push(value),
        }
    }
}

/// The fields of a raw document (its iterator type is not nameable).
type DocIter<'a> =
    Box<dyn Iterator<Item = mongodb::bson::raw::Result<(&'a str, RawBsonRef<'a>)>> + 'a>;

fn array_iter(a: &RawArray) -> mongodb::bson::raw::RawArrayIter<'_> {
    a.into_iter()
}

fn json_scalar(v: RawBsonRef<'_>) -> Result<Value, Error> {
    Ok(match v {
        RawBsonRef::Null => Value::Null,
        RawBsonRef::Boolean(b) => Value::Bool(b),
        RawBsonRef::String(s) => Value::String(s.to_owned()),
        RawBsonRef::Int32(i) => Value::from(i),
        RawBsonRef::Int64(i) => Value::from(i),
        RawBsonRef::Double(f) if f.is_finite() => Value::from(f),
        other => Bson::try_from(other)
            .map_err(|e| Error::Storage(format!("unreadable value: {e}")))?
            .into_relaxed_extjson(),
    })
}

/// A stored document → resource (`_id` becomes the id, the rest the data), and the `_id` as
/// stored.
pub(crate) fn raw_to_resource(d: &RawDocument) -> Result<(Resource, Bson), Error> {
    let mut data = raw_to_json(d)?;
    let corrupt =
        |e: mongodb::bson::raw::Error| Error::Storage(format!("unreadable document: {e}"));
    let stored_id = match d.get("_id").map_err(corrupt)? {
        Some(id) => {
            Bson::try_from(id).map_err(|e| Error::Storage(format!("unreadable _id: {e}")))?
        }
        None => return Err(Error::Storage("document without _id".into())),
    };
    let id = match &stored_id {
        Bson::ObjectId(o) => o.to_hex(),
        Bson::String(s) => s.clone(),
        other => other.to_string(),
    };
    if let Some(m) = data.as_object_mut() {
        m.remove("_id");
        m.remove(VERSION);
    }
    Ok((
        Resource {
            resource_id: id,
            resource_data: data,
        },
        stored_id,
    ))
}

/// The `_id` filter of a resource id: a 24-hex-digit id matches an ObjectId or the string.
pub(crate) fn id_filter(id: &str) -> Document {
    match ObjectId::parse_str(id) {
        Ok(oid) => doc! {"_id": {"$in": [Bson::ObjectId(oid), Bson::String(id.to_owned())]}},
        Err(_) => doc! {"_id": id},
    }
}

/// Driver error → framework error.
pub(crate) fn map_error(e: MongoError) -> Error {
    let code = match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    };
    match (e.kind.as_ref(), code) {
        (_, Some(11000)) => Error::Conflict("resource already exists".into()),
        (_, Some(2 | 9 | 14 | 40 | 17 | 16837 | 28 | 51 | 27)) => {
            Error::BadRequest(format!("rejected by MongoDB: {e}"))
        }
        (
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. },
            _,
        ) => Error::Unavailable(format!("MongoDB unreachable: {e}")),
        _ => Error::Storage(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_and_raw_round_trip_every_json_type() {
        let v = json!({"s": "x", "i": -3, "big": 9_007_199_254_740_993i64, "f": 2.5, "t": true,
            "n": null, "a": [1, "b", [false], {"k": []}], "o": {"p": {"q": 1}}});
        let raw = json_to_raw(&v).expect("encode");
        assert_eq!(raw_to_json(&raw).expect("decode"), v);
        assert!(matches!(
            json_to_raw(&json!({"a\u{0}b": 1})),
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            json_to_raw(&json!({"a": u64::MAX})),
            Err(Error::BadRequest(_))
        ));
    }

    /// Three times as deep as resources may nest, on a thread with a small stack: neither
    /// direction recurses (the driver's conversions to `Document` overflow a worker thread's
    /// 2 MiB at 100 levels once optimized).
    #[test]
    fn deep_documents_convert_without_recursion() {
        let run = || {
            let mut v = json!({"leaf": 1});
            for i in 0..300 {
                // Built by moving (`json!` would serialize `v` again, recursively).
                v = if i % 2 == 0 {
                    Value::Array(vec![v])
                } else {
                    Value::Object(std::iter::once(("x".to_owned(), v)).collect())
                };
            }
            let v = Value::Object(std::iter::once(("root".to_owned(), v)).collect());
            let raw = json_to_raw(&v).expect("encode");
            let back = raw_to_json(&raw).expect("decode");
            back == v
        };
        let same = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(run)
            .expect("thread")
            .join()
            .expect("no overflow");
        assert!(same);
    }
}
