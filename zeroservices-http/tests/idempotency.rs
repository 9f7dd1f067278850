//! `Idempotency-Key` on every route that changes something: a retry answers the first answer
//! (same status, same body) and changes nothing; another request under the key is 422; keys
//! are per user; a malformed key is 400.

mod common;

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};
use zeroservices_core::query::ListQuery;
use zeroservices_core::store::MemoryCollection;
use zeroservices_core::CollectionSpec;
use zeroservices_http::{BasicAuth, HttpConfig};

fn todos() -> Vec<CollectionSpec> {
    vec![
        CollectionSpec::new("todos", Arc::new(MemoryCollection::new())).action(
            "touch",
            |ctx| async move {
                let n = ctx.store.list(&ListQuery::default()).await?.total;
                ctx.store.create(None, json!({"touched": true})).await?;
                Ok(json!({"before": n}))
            },
        ),
    ]
}

async fn send(
    api: &common::Api,
    method: &str,
    uri: &str,
    body: Value,
    key: &str,
) -> common::Answer {
    let text = body.to_string();
    let headers = [
        ("content-type", "application/json"),
        ("idempotency-key", key),
    ];
    api.raw(method, uri, Some(text.as_bytes()), &headers).await
}

async fn total(api: &common::Api) -> u64 {
    let c = api.node.collection("todos");
    c.list(&ListQuery::default()).await.expect("list").total
}

#[tokio::test]
async fn a_retried_post_answers_201_with_the_same_body_and_creates_once() {
    let api = common::start_with(todos(), HttpConfig::default()).await;
    let first = send(&api, "POST", "/todos", json!({"title": "milk"}), "k-1").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = send(&api, "POST", "/todos", json!({"title": "milk"}), "k-1").await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("location"), first.header("location"));
    assert_eq!(total(&api).await, 1);
    // Without a key, the same body is a second create.
    api.json("POST", "/todos", Some(json!({"title": "milk"})))
        .await;
    assert_eq!(total(&api).await, 2);
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422() {
    let api = common::start_with(todos(), HttpConfig::default()).await;
    send(&api, "POST", "/todos", json!({"title": "milk"}), "k").await;
    let other = send(&api, "POST", "/todos", json!({"title": "eggs"}), "k").await;
    other.assert_error(422, "idempotency_key_reused");
    // Nor on another route: a patch under the create's key is refused and changes nothing.
    let id = api.json("GET", "/todos", None).await.body[0]["resource_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let patched = send(
        &api,
        "PATCH",
        &format!("/todos/{id}"),
        json!({"$set": {"a": 1}}),
        "k",
    )
    .await;
    patched.assert_error(422, "idempotency_key_reused");
    let now = api.json("GET", &format!("/todos/{id}"), None).await;
    assert_eq!(now.body["resource_data"], json!({"title": "milk"}));
    assert_eq!(total(&api).await, 1);
}

#[tokio::test]
async fn patch_delete_and_actions_replay_on_every_route() {
    let api = common::start_with(todos(), HttpConfig::default()).await;
    let made = api.json("POST", "/todos", Some(json!({"n": 0}))).await;
    let id = made.body["resource_id"].as_str().expect("id").to_owned();
    let uri = format!("/todos/{id}");
    for route in [uri.clone(), format!("{uri}/patch")] {
        let body = if route.ends_with("/patch") {
            json!({"patch": {"$inc": {"n": 1}}})
        } else {
            json!({"$inc": {"n": 1}})
        };
        let method = if route.ends_with("/patch") {
            "POST"
        } else {
            "PATCH"
        };
        let key = format!("inc-{method}");
        let a = send(&api, method, &route, body.clone(), &key).await;
        let b = send(&api, method, &route, body, &key).await;
        assert_eq!((a.status, &a.body), (b.status, &b.body), "{method} {route}");
    }
    let now = api.json("GET", &uri, None).await;
    assert_eq!(
        now.body["resource_data"]["n"], 2,
        "each route incremented once"
    );
    let touch = |key: &'static str| send(&api, "POST", "/todos/touch", json!({}), key);
    let t1 = touch("t").await;
    let t2 = touch("t").await;
    assert_eq!(t1.body, t2.body, "a custom action replays");
    assert_eq!(total(&api).await, 2, "the action ran once");
    let d1 = send(&api, "DELETE", &uri, json!(null), "del").await;
    let d2 = send(&api, "DELETE", &uri, json!(null), "del").await;
    assert_eq!(
        (d1.status, d2.status),
        (StatusCode::NO_CONTENT, StatusCode::NO_CONTENT)
    );
}

#[tokio::test]
async fn keys_belong_to_their_user() {
    let auth = BasicAuth::new()
        .user("alice", "alice-pass", &[("*", "*")])
        .user("bob", "bob-pass", &[("*", "*")]);
    let cfg = HttpConfig {
        auth: Arc::new(auth),
        ..HttpConfig::default()
    };
    let api = common::start_with(todos(), cfg).await;
    for user in ["alice", "bob"] {
        let auth = common::basic(user);
        let body = json!({"title": "same"}).to_string();
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("idempotency-key", "shared-key"),
        ];
        let a = api
            .raw("POST", "/todos", Some(body.as_bytes()), &headers)
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{user}");
    }
    assert_eq!(total(&api).await, 2, "bob's key is not alice's");
}

#[tokio::test]
async fn a_malformed_key_is_400_and_changes_nothing() {
    let api = common::start_with(todos(), HttpConfig::default()).await;
    let long = "k".repeat(256);
    for key in ["", "has space", "tab\there", long.as_str()] {
        let a = send(&api, "POST", "/todos", json!({"title": "x"}), key).await;
        a.assert_error(400, "bad_request");
    }
    assert_eq!(total(&api).await, 0);
}
