//! The generated REST routes: list, create, get, patch, delete and custom actions on every
//! collection of the cluster, plus `GET /`.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use zeroservices_core::query::{Projection, Sort};
use zeroservices_core::resources::{validate_id, MAX_LIST_LIMIT};
use zeroservices_core::{
    query::ListQuery,
    resources::{Action, ResourceRequest},
};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::idempotency::IdempotencyKey;
use crate::AppState;

/// Default `limit` of a list.
pub(crate) const DEFAULT_LIMIT: u64 = zeroservices_core::resources::DEFAULT_LIST_LIMIT;
/// Longest `where` parameter (bytes, decoded).
pub(crate) const MAX_WHERE_BYTES: usize = 64 * 1024;

fn path_error(e: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {}", e.body_text()))
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body too large",
        )
    } else {
        ApiError::bad_request(format!("cannot read body: {}", e.body_text()))
    }
}

fn parse_json(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// A JSON response around bytes that already are JSON.
fn json_response(status: StatusCode, json: Bytes) -> Response {
    let mut resp = (status, json).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A result of the wrong shape (the provider is another process, maybe another version).
fn malformed(action: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError::from(zeroservices_core::Error::Internal(format!(
        "malformed {action} result: {e}"
    )))
}

fn check_segment(s: &str) -> Result<(), ApiError> {
    validate_id(s).map_err(ApiError::from)
}

/// `GET /`: collections and nodes.
pub(crate) async fn index(State(st): State<AppState>) -> Json<Value> {
    let me = st.node.announcement();
    let mut nodes = vec![
        json!({"name": me.name, "node_id": me.node_id, "node_type": me.node_type, "collections": me.collections}),
    ];
    let mut collections: Vec<String> = me.collections.clone();
    for p in st.node.directory().peers() {
        let a = p.announcement;
        collections.extend(a.collections.iter().cloned());
        nodes.push(json!({"name": a.name, "node_id": a.node_id, "node_type": a.node_type, "collections": a.collections}));
    }
    collections.sort();
    collections.dedup();
    Json(json!({"collections": collections, "nodes": nodes}))
}

/// `GET /{c}`.
pub(crate) async fn list(
    State(st): State<AppState>,
    who: Principal,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(c) = path.map_err(path_error)?;
    check_segment(&c)?;
    let Query(params) = query
        .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))?;
    let mut q = ListQuery {
        limit: Some(DEFAULT_LIMIT),
        ..ListQuery::default()
    };
    if let Some(w) = params.get("where") {
        if w.len() > MAX_WHERE_BYTES {
            return Err(ApiError::bad_request(format!(
                "where is {} bytes (at most {MAX_WHERE_BYTES})",
                w.len()
            )));
        }
        let doc: Value = serde_json::from_str(w)
            .map_err(|e| ApiError::bad_request(format!("where is not JSON: {e}")))?;
        if !doc.is_object() {
            return Err(ApiError::bad_request("where must be a JSON object"));
        }
        q.filter = zeroservices_core::query::Filter::parse(&doc)?;
    }
    if let Some(s) = params.get("sort") {
        q.sort = Sort::parse(s)?;
    }
    if let Some(f) = params.get("fields") {
        q.fields = Projection::parse(f)?;
    }
    if let Some(s) = params.get("skip") {
        q.skip = s
            .parse()
            .map_err(|_| ApiError::bad_request("skip must be an integer >= 0"))?;
    }
    if let Some(l) = params.get("limit") {
        let l: u64 = l
            .parse()
            .map_err(|_| ApiError::bad_request("limit must be an integer"))?;
        if l > MAX_LIST_LIMIT {
            return Err(ApiError::bad_request(format!(
                "limit must be at most {MAX_LIST_LIMIT}"
            )));
        }
        q.limit = Some(l);
    }
    let args = serde_json::to_value(&q)
        .map_err(|e| ApiError::from(zeroservices_core::Error::Internal(e.to_string())))?;
    let json = st
        .call(&who, ResourceRequest::new(&c, "list", args))
        .await?;
    // The page's items go out as they came; only the total is read.
    #[derive(serde::Deserialize)]
    struct Page<'a> {
        #[serde(borrow)]
        items: &'a RawValue,
        total: u64,
    }
    let page: Page<'_> = serde_json::from_slice(&json).map_err(|e| malformed("list", e))?;
    if !page.items.get().starts_with('[') {
        return Err(malformed("list", "items is not an array"));
    }
    let items = json.slice_ref(page.items.get().as_bytes());
    let mut resp = json_response(StatusCode::OK, items);
    resp.headers_mut()
        .insert("x-total-count", HeaderValue::from(page.total));
    Ok(resp)
}

/// `{key: value}`, moving `value` in (`json!` would copy it).
fn wrap(key: &str, value: Value) -> Value {
    let mut m = serde_json::Map::with_capacity(1);
    m.insert(key.to_owned(), value);
    Value::Object(m)
}

/// Splits a POST body into (client-chosen id, data): the original's envelope when the
/// object's keys are `resource_data` and optionally `resource_id`; then `resource_data` must be
/// an object and `resource_id` a string (else 400). Any other object is the data itself.
fn create_args(body: Value) -> Result<(Option<String>, Value), ApiError> {
    let Value::Object(mut obj) = body else {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    };
    let envelope = obj.contains_key("resource_data")
        && obj
            .keys()
            .all(|k| k == "resource_data" || k == "resource_id");
    if !envelope {
        return Ok((None, Value::Object(obj)));
    }
    let id = match obj.remove("resource_id") {
        None => None,
        Some(Value::String(id)) => Some(id),
        Some(_) => return Err(ApiError::bad_request("resource_id must be a string")),
    };
    match obj.remove("resource_data") {
        Some(data @ Value::Object(_)) => Ok((id, data)),
        _ => Err(ApiError::bad_request("resource_data must be a JSON object")),
    }
}

/// A PATCH body as the update document: the original's `{"patch": {...}}` (its only key, an
/// object) is unwrapped; any other object is the update itself.
fn patch_document(body: Value) -> Value {
    match body {
        Value::Object(mut o) if o.len() == 1 && o.get("patch").is_some_and(Value::is_object) => {
            o.remove("patch").unwrap_or_default()
        }
        other => other,
    }
}

/// `POST /{c}`: create.
pub(crate) async fn create(
    State(st): State<AppState>,
    who: Principal,
    key: IdempotencyKey,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path(c) = path.map_err(path_error)?;
    check_segment(&c)?;
    let (id, data) = create_args(parse_json(&body.map_err(body_error)?)?)?;
    if let Some(id) = &id {
        check_segment(id)?;
    }
    let mut args = wrap("resource_data", data);
    if let (Some(id), Value::Object(m)) = (id, &mut args) {
        m.insert("resource_id".into(), Value::String(id));
    }
    let json = st
        .call(
            &who,
            keyed(ResourceRequest::new(&c, "create", args), &key, &who),
        )
        .await?;
    // The resource goes out as it came; only its shape is checked and its id read.
    #[derive(serde::Deserialize)]
    struct Created<'a> {
        #[serde(borrow)]
        resource_id: Cow<'a, str>,
        #[serde(borrow)]
        resource_data: &'a RawValue,
    }
    let r: Created<'_> = serde_json::from_slice(&json).map_err(|e| malformed("create", e))?;
    if !r.resource_data.get().starts_with('{') {
        return Err(malformed("create", "resource_data is not an object"));
    }
    let location = format!("/{}/{}", percent(&c), percent(&r.resource_id));
    let mut resp = json_response(StatusCode::CREATED, json.clone());
    if let Ok(h) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, h);
    }
    Ok(resp)
}

/// What a path segment may hold as it is: unreserved characters (RFC 3986); ids may hold any
/// UTF-8 but `/`, everything else is percent-encoded.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn percent(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

/// `GET|PATCH|DELETE /{c}/{id}`; `POST /{c}/{action}` is a collection action.
pub(crate) async fn resource(
    State(st): State<AppState>,
    who: Principal,
    key: IdempotencyKey,
    method: Method,
    path: Result<Path<(String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path((c, id)) = path.map_err(path_error)?;
    check_segment(&c)?;
    check_segment(&id)?;
    let body = body.map_err(body_error)?;
    match method {
        Method::GET => Ok(json_response(
            StatusCode::OK,
            st.call(&who, ResourceRequest::new(&c, "get", Value::Null).on(&id))
                .await?,
        )),
        Method::PATCH => {
            let patch = patch_document(parse_json(&body)?);
            if !patch.is_object() {
                return Err(ApiError::bad_request("the patch must be a JSON object"));
            }
            Ok(json_response(
                StatusCode::OK,
                st.call(
                    &who,
                    keyed(
                        ResourceRequest::new(&c, "patch", wrap("patch", patch)).on(&id),
                        &key,
                        &who,
                    ),
                )
                .await?,
            ))
        }
        Method::DELETE => {
            st.call(
                &who,
                keyed(
                    ResourceRequest::new(&c, "delete", Value::Null).on(&id),
                    &key,
                    &who,
                ),
            )
            .await?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Method::POST => {
            let args = action_args(&id, &body)?;
            Ok(json_response(
                StatusCode::OK,
                st.call(&who, keyed(ResourceRequest::new(&c, &id, args), &key, &who))
                    .await?,
            ))
        }
        _ => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed",
        )),
    }
}

/// The arguments of an action route's body: `{}` when empty; a standard action's must be a
/// JSON object (400 otherwise: `null` or an array would reach the provider in a form that no
/// check on the object form saw).
fn action_args(action: &str, body: &Bytes) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    let args = parse_json(body)?;
    if Action::parse(action).is_standard() && !args.is_object() {
        return Err(ApiError::bad_request(format!(
            "the arguments of {action} must be a JSON object"
        )));
    }
    Ok(args)
}

/// `POST /{c}/{id}/{action}`: a resource action.
pub(crate) async fn resource_action(
    State(st): State<AppState>,
    who: Principal,
    key: IdempotencyKey,
    path: Result<Path<(String, String, String)>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Path((c, id, action)) = path.map_err(path_error)?;
    for s in [&c, &id, &action] {
        check_segment(s)?;
    }
    let args = action_args(&action, &body.map_err(body_error)?)?;
    Ok(json_response(
        StatusCode::OK,
        st.call(
            &who,
            keyed(ResourceRequest::new(&c, &action, args).on(&id), &key, &who),
        )
        .await?,
    ))
}

/// `req` carrying the caller's `Idempotency-Key`, if any (scoped to the caller).
fn keyed(req: ResourceRequest, key: &IdempotencyKey, who: &Principal) -> ResourceRequest {
    match key.scoped(who) {
        Some(k) => req.idempotent(&k),
        None => req,
    }
}

/// Anything else.
pub(crate) async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_only_when_exactly_its_keys() {
        assert_eq!(
            create_args(json!({"resource_id": "a", "resource_data": {"v": 1}})).unwrap(),
            (Some("a".into()), json!({"v": 1}))
        );
        assert_eq!(
            create_args(json!({"resource_data": {"v": 1}})).unwrap(),
            (None, json!({"v": 1}))
        );
        let other = json!({"resource_data": {"v": 1}, "x": 2});
        assert_eq!(create_args(other.clone()).unwrap(), (None, other));
        // The envelope's keys with the wrong types: a malformed envelope, not data.
        assert!(create_args(json!({"resource_id": "x", "resource_data": 5})).is_err());
        assert!(create_args(json!({"resource_data": 5})).is_err());
        assert!(create_args(json!({"resource_id": 3, "resource_data": {}})).is_err());
        assert!(create_args(json!([1])).is_err());
    }

    #[test]
    fn the_originals_patch_envelope_is_unwrapped() {
        let inner = json!({"$set": {"v": 1}});
        assert_eq!(patch_document(json!({ "patch": inner })), inner);
        let plain = json!({"patch": 5});
        assert_eq!(patch_document(plain.clone()), plain);
        let two = json!({"patch": {"a": 1}, "b": 2});
        assert_eq!(patch_document(two.clone()), two);
    }

    #[test]
    fn location_segments_are_escaped() {
        assert_eq!(percent("a b?é"), "a%20b%3F%C3%A9");
    }
}
