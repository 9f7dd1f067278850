//! The generated routes and their errors, one behaviour per test, in process (issue 26,
//! point 4): a node hosting `power` and `typed` (a schema requiring a numeric `value`) behind
//! the router, called with `oneshot`. What needs separate processes (a frozen provider's 504,
//! a killed one's 503 and recovery, peers in `/health`) stays in tests/http.rs.

mod common;

use std::sync::Arc;

use common::Api;
use serde_json::{json, Value};
use zeroservices_core::{store::MemoryCollection, CollectionSpec};
use zeroservices_http::HttpConfig;

async fn start() -> Api {
    let typed = CollectionSpec::new("typed", Arc::new(MemoryCollection::new()))
        .schema(json!({"type": "object", "required": ["value"],
            "properties": {"value": {"type": "number"}}}))
        .expect("schema");
    let power = CollectionSpec::new("power", Arc::new(MemoryCollection::new()));
    common::start_with(vec![power, typed], HttpConfig::default()).await
}

/// Creates `power` resources `l0..l{n}` with `value` i and `kind` "list".
async fn seed_list(api: &Api, n: usize) {
    for i in 0..n {
        let body =
            json!({"resource_id": format!("l{i}"), "resource_data": {"value": i, "kind": "list"}});
        assert_eq!(api.json("POST", "/power", Some(body)).await.status, 201);
    }
}

#[tokio::test]
async fn the_index_lists_collections_and_nodes() {
    let api = start().await;
    let a = api.json("GET", "/", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["collections"], json!(["power", "typed"]));
    let nodes = a.body["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 1);
    for k in ["name", "node_id", "node_type", "collections"] {
        assert!(nodes[0].get(k).is_some(), "node field {k}: {}", nodes[0]);
    }
}

#[tokio::test]
async fn a_data_object_is_created_with_a_server_id_and_its_location() {
    let api = start().await;
    let a = api
        .json(
            "POST",
            "/power",
            Some(json!({"value": 7, "status": "pending"})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.body["resource_id"].as_str().expect("id");
    assert_eq!(
        a.body["resource_data"],
        json!({"value": 7, "status": "pending"})
    );
    assert_eq!(a.header("location"), Some(format!("/power/{id}").as_str()));
}

#[tokio::test]
async fn the_envelope_takes_the_clients_id_whatever_the_content_type() {
    let api = start().await;
    let body = br#"{"resource_id":"p1","resource_data":{"value":2}}"#;
    let a = api
        .raw(
            "POST",
            "/power",
            Some(body),
            &[("content-type", "text/plain")],
        )
        .await;
    assert_eq!(
        (a.status.as_u16(), a.body["resource_id"].as_str()),
        (201, Some("p1"))
    );
    assert_eq!(a.header("location"), Some("/power/p1"));
}

#[tokio::test]
async fn a_taken_id_is_409() {
    let api = start().await;
    let body = json!({"resource_id": "p1", "resource_data": {}});
    assert_eq!(
        api.json("POST", "/power", Some(body.clone())).await.status,
        201
    );
    api.json("POST", "/power", Some(body))
        .await
        .assert_error(409, "conflict");
}

#[tokio::test]
async fn an_object_with_other_keys_is_data_not_an_envelope() {
    let api = start().await;
    let data = json!({"resource_data": {"a": 1}, "x": 2});
    let a = api.json("POST", "/power", Some(data.clone())).await;
    assert_eq!((a.status.as_u16(), &a.body["resource_data"]), (201, &data));
}

#[tokio::test]
async fn get_answers_the_resource() {
    let api = start().await;
    let body = json!({"resource_id": "p1", "resource_data": {"value": 2}});
    api.json("POST", "/power", Some(body.clone())).await;
    let a = api.json("GET", "/power/p1", None).await;
    assert_eq!((a.status.as_u16(), a.body), (200, body));
}

#[tokio::test]
async fn a_patch_without_operators_is_a_set_and_operators_apply() {
    let api = start().await;
    let body = json!({"resource_id": "p1", "resource_data": {"value": 2}});
    api.json("POST", "/power", Some(body)).await;
    let a = api
        .json("PATCH", "/power/p1", Some(json!({"status": "x"})))
        .await;
    assert_eq!(
        (a.status.as_u16(), &a.body["resource_data"]),
        (200, &json!({"value": 2, "status": "x"}))
    );
    let ops = json!({"$inc": {"value": 5}, "$unset": {"status": ""}});
    let a = api.json("PATCH", "/power/p1", Some(ops)).await;
    assert_eq!(
        (a.status.as_u16(), &a.body["resource_data"]),
        (200, &json!({"value": 7}))
    );
}

#[tokio::test]
async fn delete_is_204_then_404() {
    let api = start().await;
    api.json(
        "POST",
        "/power",
        Some(json!({"resource_id": "p1", "resource_data": {}})),
    )
    .await;
    assert_eq!(api.json("DELETE", "/power/p1", None).await.status, 204);
    api.json("DELETE", "/power/p1", None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn a_list_filters_sorts_pages_projects_and_counts() {
    let api = start().await;
    seed_list(&api, 5).await;
    api.json("POST", "/power", Some(json!({"other": true})))
        .await;
    let url = "/power?where=%7B%22kind%22%3A%22list%22%7D&sort=-value&skip=1&limit=2&fields=value";
    let a = api.json("GET", url, None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.header("x-total-count"), Some("5"));
    assert_eq!(
        a.body,
        json!([{"resource_id": "l3", "resource_data": {"value": 3}},
               {"resource_id": "l2", "resource_data": {"value": 2}}])
    );
    let all = api.json("GET", "/power", None).await;
    assert_eq!(all.header("x-total-count"), Some("6"));
    assert_eq!(all.body.as_array().map(Vec::len), Some(6));
}

#[tokio::test]
async fn a_list_through_the_action_route_answers_the_page() {
    let api = start().await;
    seed_list(&api, 3).await;
    let a = api
        .json(
            "POST",
            "/power/list",
            Some(json!({"where": {"value": {"$gte": 1}}})),
        )
        .await;
    assert_eq!(
        (a.status.as_u16(), a.body["total"].as_u64()),
        (200, Some(2)),
        "{}",
        a.body
    );
    for bad in [json!(null), json!([{}]), json!(3)] {
        api.json("POST", "/power/list", Some(bad))
            .await
            .assert_error(400, "bad_request");
    }
}

#[tokio::test]
async fn unknown_custom_actions_are_404_on_both_routes() {
    let api = start().await;
    api.json(
        "POST",
        "/power",
        Some(json!({"resource_id": "p1", "resource_data": {}})),
    )
    .await;
    for uri in ["/power/recompute", "/power/p1/recompute"] {
        api.json("POST", uri, Some(json!({})))
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn missing_resources_and_collections_are_404() {
    let api = start().await;
    for uri in ["/power/nope", "/nothing", "/nothing/1"] {
        api.json("GET", uri, None)
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn bad_json_is_400() {
    let api = start().await;
    api.raw("POST", "/power", Some(b"{oops"), &[])
        .await
        .assert_error(400, "bad_request");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let api = start().await;
    let big = vec![b' '; 2 * 1024 * 1024];
    api.raw("POST", "/power", Some(&big), &[])
        .await
        .assert_error(413, "too_large");
}

#[tokio::test]
async fn a_schema_violation_is_422_and_valid_data_is_created() {
    let api = start().await;
    api.json("POST", "/typed", Some(json!({"value": "seven"})))
        .await
        .assert_error(422, "validation");
    assert_eq!(
        api.json("POST", "/typed", Some(json!({"value": 7})))
            .await
            .status,
        201
    );
}

#[tokio::test]
async fn bad_query_strings_are_400() {
    let api = start().await;
    for q in [
        "limit=10001",
        "limit=x",
        "skip=-1",
        "where=%5B%5D",
        "where=%7Boops",
        "sort=a,,b",
        "fields=%24x",
    ] {
        api.json("GET", &format!("/power?{q}"), None)
            .await
            .assert_error(400, "bad_request");
    }
}

#[tokio::test]
async fn health_names_the_node() {
    let api = start().await;
    let a = api.json("GET", "/health", None).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["node"]["name"], "api");
    assert!(
        a.body["peers"].as_array().is_some_and(Vec::is_empty),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn metrics_count_requests_by_collection_action_and_status() {
    let api = start().await;
    api.json("POST", "/power", Some(json!({}))).await;
    let a = api.json("GET", "/metrics", None).await;
    assert_eq!(a.status, 200);
    let text = a.body.as_str().unwrap_or_default();
    let line =
        r#"zeroservices_http_requests_total{collection="power",action="create",status="200"}"#;
    assert!(text.contains(line), "{text}");
}

#[tokio::test]
async fn openapi_describes_every_collections_routes() {
    let api = start().await;
    let a = api.json("GET", "/openapi.json", None).await;
    assert_eq!(a.status, 200);
    for c in ["power", "typed"] {
        assert!(
            a.body["paths"][format!("/{c}")]["post"].is_object(),
            "{}",
            a.body
        );
        assert!(
            a.body["paths"][format!("/{c}/{{id}}")]["patch"].is_object(),
            "{}",
            a.body
        );
    }
}

#[tokio::test]
async fn a_trailing_slash_reaches_the_same_routes() {
    let api = start().await;
    let a = api.json("POST", "/power/", Some(json!({"v": 1}))).await;
    assert_eq!(a.status, 201);
    let id = a.body["resource_id"].as_str().expect("id").to_owned();
    assert_eq!(
        api.json("GET", &format!("/power/{id}/"), None).await.status,
        200
    );
    let list: Value = api.json("GET", "/power/", None).await.body;
    assert_eq!(list.as_array().map(Vec::len), Some(1));
}
