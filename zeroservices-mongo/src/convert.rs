//! JSON ↔ BSON, resource ids and driver errors.

use mongodb::bson::{self, doc, oid::ObjectId, Bson, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use serde_json::Value;
use zeroservices_core::{Error, Resource};

/// Field holding a document's version, for compare-and-swap patches. Hidden from resources.
pub(crate) const VERSION: &str = "_v";

/// JSON object → BSON document (integers stay integers, floats stay doubles).
pub(crate) fn to_document(v: &Value) -> Result<Document, Error> {
    match bson::to_bson(v).map_err(|e| Error::BadRequest(format!("cannot store value: {e}")))? {
        Bson::Document(d) => Ok(d),
        _ => Err(Error::BadRequest(
            "resource data must be a JSON object".into(),
        )),
    }
}

/// Stored document → resource (`_id` becomes the id, the rest the data).
pub(crate) fn to_resource(mut d: Document) -> Result<Resource, Error> {
    let id = match d.remove("_id") {
        Some(Bson::ObjectId(o)) => o.to_hex(),
        Some(Bson::String(s)) => s,
        Some(other) => other.to_string(),
        None => return Err(Error::Storage("document without _id".into())),
    };
    d.remove(VERSION);
    Ok(Resource {
        resource_id: id,
        resource_data: Bson::Document(d).into_relaxed_extjson(),
    })
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
