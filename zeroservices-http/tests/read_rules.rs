//! A read rule holds on every route that reaches the collection (issue 25, points 1, 2, 9):
//! the REST routes and the action routes (`POST /{c}/list`, `POST /{c}/{id}/patch`), whatever
//! JSON shape the body has. In process: the router is called with `oneshot`, no socket.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::StatusCode;
use common::Api;
use serde_json::{json, Value};
use zeroservices_core::{store::MemoryCollection, CollectionSpec};
use zeroservices_http::{BasicAuth, HttpConfig, ReadRule};

async fn start() -> Api {
    let auth = BasicAuth::new()
        .user("alice", "alice-pass", &[("*", "*")])
        .user("bob", "bob-pass", &[("*", "*")]);
    let cfg = HttpConfig {
        auth: Arc::new(auth),
        read_rules: HashMap::from([(
            "todos".to_owned(),
            ReadRule::new(json!({"owner": "$user"})).expect("rule"),
        )]),
        ..HttpConfig::default()
    };
    let todos = CollectionSpec::new("todos", Arc::new(MemoryCollection::new()));
    let api = common::start_with(vec![todos], cfg).await;
    for (id, title) in [("a1", "alice's first"), ("a2", "alice's second")] {
        let body = json!({"resource_id": id, "resource_data": {"title": title}});
        let (s, _) = call(&api, "alice", "POST", "/todos", Some(body)).await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, _) = call(
        &api,
        "bob",
        "POST",
        "/todos",
        Some(json!({"title": "bob's"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    api
}

/// `(status, JSON body)` of a request as `user`; `Some(Value::Null)` sends `null`.
async fn call(
    api: &Api,
    user: &str,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let a = api.as_user(user, method, uri, body).await;
    (a.status, a.body)
}

fn owners(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    r["resource_data"]["owner"]
                        .as_str()
                        .unwrap_or("?")
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn list_through_the_action_route_with_a_null_body_is_refused() {
    let api = start().await;
    let (s, body) = call(&api, "bob", "POST", "/todos/list", Some(Value::Null)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].is_string(), "a JSON error: {body}");
}

#[tokio::test]
async fn list_through_the_action_route_with_an_array_body_is_refused() {
    let api = start().await;
    let args = json!([{"owner": "alice"}, [], 0, 10000, []]);
    let (s, body) = call(&api, "bob", "POST", "/todos/list", Some(args)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn list_through_the_action_route_with_an_object_body_gets_only_the_callers_records() {
    let api = start().await;
    let (s, body) = call(
        &api,
        "bob",
        "POST",
        "/todos/list",
        Some(json!({"where": {"owner": "alice"}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert!(
        body["items"].as_array().is_some_and(Vec::is_empty),
        "{body}"
    );
    let (s, body) = call(&api, "bob", "POST", "/todos/list", None).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(owners(&body["items"]), ["bob"], "{body}");
}

#[tokio::test]
async fn the_rest_list_shows_each_user_only_their_records() {
    let api = start().await;
    let (s, body) = call(&api, "bob", "GET", "/todos", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(owners(&body), ["bob"]);
    let (_, body) = call(&api, "alice", "GET", "/todos?where=%7B%7D", None).await;
    assert_eq!(owners(&body), ["alice", "alice"]);
}

#[tokio::test]
async fn an_owner_rewrite_through_the_patch_action_route_in_an_array_is_refused() {
    let api = start().await;
    let (_, mine) = call(&api, "bob", "GET", "/todos", None).await;
    let id = mine[0]["resource_id"]
        .as_str()
        .expect("bob's id")
        .to_owned();
    let plant = json!([{"$set": {"owner": "alice", "title": "planted"}}]);
    let (s, body) = call(
        &api,
        "bob",
        "POST",
        &format!("/todos/{id}/patch"),
        Some(plant),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
    let (_, alices) = call(&api, "alice", "GET", "/todos", None).await;
    assert_eq!(
        owners(&alices),
        ["alice", "alice"],
        "nothing planted: {alices}"
    );
}

#[tokio::test]
async fn an_owner_rewrite_through_the_patch_action_route_is_forbidden_in_every_form() {
    let api = start().await;
    let (_, mine) = call(&api, "bob", "GET", "/todos", None).await;
    let id = mine[0]["resource_id"]
        .as_str()
        .expect("bob's id")
        .to_owned();
    let uri = format!("/todos/{id}/patch");
    for patch in [
        json!({"$set": {"owner": "alice"}}),
        json!({"owner": "alice"}),
        json!({"$unset": {"owner": ""}}),
        json!({"$set": {"owner.x": 1}}),
        json!({"$push": {"owner": "alice"}}),
    ] {
        let (s, body) = call(&api, "bob", "POST", &uri, Some(json!({ "patch": patch }))).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{patch}: {body}");
        let (s, body) = call(
            &api,
            "bob",
            "PATCH",
            &format!("/todos/{id}"),
            Some(patch.clone()),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "PATCH {patch}: {body}");
    }
    // To himself, and other fields: allowed.
    let ok = json!({"patch": {"$set": {"owner": "bob", "title": "renamed"}}});
    let (s, body) = call(&api, "bob", "POST", &uri, Some(ok)).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["resource_data"]["title"], "renamed");
}

#[tokio::test]
async fn other_users_records_answer_404_on_every_resource_route() {
    let api = start().await;
    for (method, uri, body) in [
        ("GET", "/todos/a1", None),
        ("PATCH", "/todos/a1", Some(json!({"title": "x"}))),
        ("DELETE", "/todos/a1", None),
        (
            "POST",
            "/todos/a1/patch",
            Some(json!({"patch": {"title": "x"}})),
        ),
        ("POST", "/todos/a1/delete", None),
        ("POST", "/todos/a1/get", None),
    ] {
        let (s, b) = call(&api, "bob", method, uri, body).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{method} {uri}: {b}");
    }
    let (s, _) = call(&api, "alice", "GET", "/todos/a1", None).await;
    assert_eq!(s, StatusCode::OK, "alice's own, untouched");
}

#[tokio::test]
async fn creating_with_a_hidden_id_answers_as_a_missing_resource_does() {
    let api = start().await;
    let taken = json!({"resource_id": "a1", "resource_data": {"title": "mine now"}});
    let (s, body) = call(&api, "bob", "POST", "/todos", Some(taken.clone())).await;
    let (s_get, body_get) = call(&api, "bob", "GET", "/todos/a1", None).await;
    assert_eq!(
        (s, &body),
        (s_get, &body_get),
        "create and get tell the same"
    );
    // Through the action route too.
    let (s, body) = call(&api, "bob", "POST", "/todos/create", Some(taken)).await;
    assert_eq!((s, &body), (s_get, &body_get));
    // The owner's own duplicate is still a 409.
    let again = json!({"resource_id": "a1", "resource_data": {"title": "again"}});
    let (s, _) = call(&api, "alice", "POST", "/todos", Some(again)).await;
    assert_eq!(s, StatusCode::CONFLICT);
}

#[tokio::test]
async fn a_create_for_another_owner_is_forbidden_on_both_routes() {
    let api = start().await;
    let data = json!({"title": "gift", "owner": "alice"});
    let (s, _) = call(&api, "bob", "POST", "/todos", Some(data.clone())).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &api,
        "bob",
        "POST",
        "/todos/create",
        Some(json!({"resource_data": data})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = call(
        &api,
        "bob",
        "POST",
        "/todos/create",
        Some(json!([{"resource_data": {"title": "t"}}])),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}
