//! Reading: filters, sorting, paging and projections.

use serde_json::{json, Value};
use zeroservices_core::query::{ListQuery, Projection, Sort};
use zeroservices_core::Error;

use super::people_node;
use crate::{CollectionFactory, Failures};

/// Filters and the people they select.
const FILTERS: &[(&str, &[&str])] = &[
    (r#"{}"#, &["1", "2", "3", "4", "5", "6"]),
    (r#"{"name": "ada"}"#, &["1"]),
    (r#"{"age": 41}"#, &["2"]),
    (r#"{"age": 41.0}"#, &["2"]),
    (r#"{"status": "pending", "score": 9.5}"#, &["1", "5"]),
    (r#"{"addr.city": "london"}"#, &["1"]),
    (r#"{"addr": {"city": "manchester"}}"#, &["2"]),
    (r#"{"tags": "code"}"#, &["1", "2", "3", "5"]),
    (r#"{"tags": ["code", "crypto"]}"#, &["2"]),
    (r#"{"tags": []}"#, &["4"]),
    (r#"{"nick": null}"#, &["1", "2", "3", "4", "5", "6"]),
    (r#"{"age": {"$eq": 36}}"#, &["1"]),
    (r#"{"age": {"$ne": 36}}"#, &["2", "3", "4", "5", "6"]),
    (r#"{"tags": {"$ne": "code"}}"#, &["4", "6"]),
    (r#"{"age": {"$gt": 72}}"#, &["3", "5"]),
    (r#"{"age": {"$gte": 72}}"#, &["3", "5", "6"]),
    (r#"{"age": {"$lt": 41}}"#, &["1"]),
    (r#"{"age": {"$lte": 41}}"#, &["1", "2"]),
    (r#"{"age": {"$gt": 40, "$lt": 60}}"#, &["2", "4"]),
    (r#"{"name": {"$gt": "f"}}"#, &["3", "4"]),
    (r#"{"age": {"$gt": "10"}}"#, &[]),
    (r#"{"score": {"$gte": 9}}"#, &["1", "3", "5"]),
    (
        r#"{"name": {"$in": ["ada", "linus", "nobody"]}}"#,
        &["1", "4"],
    ),
    (r#"{"tags": {"$in": ["navy", "crypto"]}}"#, &["2", "3"]),
    (
        r#"{"name": {"$nin": ["ada", "alan"]}}"#,
        &["3", "4", "5", "6"],
    ),
    (r#"{"tags": {"$nin": ["code"]}}"#, &["4", "6"]),
    (r#"{"addr": {"$exists": true}}"#, &["1", "2", "3", "5"]),
    (r#"{"addr": {"$exists": false}}"#, &["4", "6"]),
    (r#"{"addr.zip": {"$exists": true}}"#, &["1", "3"]),
    (r#"{"nick": {"$exists": true}}"#, &["4"]),
    (
        r#"{"$and": [{"status": "pending"}, {"age": {"$gt": 50}}]}"#,
        &["3", "5"],
    ),
    (
        r#"{"$or": [{"name": "ada"}, {"age": {"$gt": 80}}]}"#,
        &["1", "3", "5"],
    ),
    (
        r#"{"$or": [{"status": "done"}, {"tags": "navy"}], "score": {"$lt": 9}}"#,
        &["2", "4"],
    ),
    (
        r#"{"$nor": [{"status": "pending"}, {"status": "done"}]}"#,
        &["6"],
    ),
    (r#"{"age": {"$not": {"$gt": 50}}}"#, &["1", "2"]),
    (r#"{"tags": {"$not": {"$in": ["code"]}}}"#, &["4", "6"]),
    (r#"{"name": {"$regex": "^a"}}"#, &["1", "2"]),
    (r#"{"name": {"$regex": "^b", "$options": "i"}}"#, &["5"]),
    (r#"{"addr.city": {"$regex": "o"}}"#, &["1", "3", "5"]),
    (r#"{"tags": {"$regex": "^cr"}}"#, &["2"]),
    (r#"{"items.k": "b"}"#, &["5"]),
    (r#"{"items.n": {"$gt": 3}}"#, &["5"]),
    (r#"{"items.0.k": "a"}"#, &["5"]),
    (r#"{"tags.1": "crypto"}"#, &["2"]),
    (r#"{"$text": {"$search": "first"}}"#, &["1", "3"]),
    (r#"{"$text": "kernel"}"#, &["4"]),
    (r#"{"$text": {"$search": "goto bletchley"}}"#, &["2", "6"]),
    (r#"{"missing.deep.path": 1}"#, &[]),
];

/// Filters: each operator and shape selects exactly the expected people.
pub async fn filters(make: &CollectionFactory) {
    let mut f = Failures::new("filters");
    let (node, client) = people_node(make, &mut f).await;
    for (text, want) in FILTERS {
        let filter: Value = serde_json::from_str(text).expect("filter table");
        let q = ListQuery::filtered(&filter).expect("filter table");
        match client.list(&q).await {
            Ok(page) => {
                let mut got: Vec<String> =
                    page.items.iter().map(|r| r.resource_id.clone()).collect();
                got.sort();
                if got != *want || page.total != want.len() as u64 {
                    f.push(format!(
                        "filter {filter}: got {got:?} (total {}), want {want:?}",
                        page.total
                    ));
                } else {
                    f.pass();
                }
            }
            Err(e) => f.push(format!("filter {filter}: error {e}")),
        }
    }
    node.shutdown().await;
    f.finish();
}

/// Malformed filters are `BadRequest`.
pub async fn bad_filters(make: &CollectionFactory) {
    let mut f = Failures::new("bad_filters");
    let bad_filters: Vec<Value> = vec![
        json!({"age": {"$bogus": 1}}),
        json!({"$where": "1"}),
        json!({"age": {"$in": 3}}),
        json!({"age": {"$exists": "yes"}}),
        json!({"name": {"$regex": "("}}),
        json!({"$or": []}),
        json!({"$and": {"a": 1}}),
        json!([1, 2]),
        json!({"a..b": 1}),
        json!({"age": {"$gt": 1, "x": 2}}),
    ];

    let (node, client) = people_node(make, &mut f).await;
    // Sent as a request's raw arguments: the node that receives the list refuses them.
    for filter in &bad_filters {
        match client
            .action("list", None, json!({ "where": filter }))
            .await
        {
            Err(Error::BadRequest(_)) => f.pass(),
            other => f.push(format!(
                "bad filter {filter}: want BadRequest, got {other:?}"
            )),
        }
    }

    node.shutdown().await;
    f.finish();
}

/// Sort (several keys, descending, nested), skip and limit, and the total ignoring them.
pub async fn sort_skip_limit(make: &CollectionFactory) {
    let mut f = Failures::new("sort_skip_limit");
    let (node, client) = people_node(make, &mut f).await;
    let pages: Vec<(&str, u64, Option<u64>, Vec<&str>)> = vec![
        ("age", 0, None, vec!["1", "2", "4", "6", "5", "3"]),
        ("-age", 0, None, vec!["3", "5", "6", "4", "2", "1"]),
        ("-score,age", 0, None, vec!["1", "5", "3", "2", "4", "6"]),
        ("name", 0, None, vec!["5", "1", "2", "6", "3", "4"]),
        ("addr.city", 0, None, vec!["4", "6", "5", "1", "2", "3"]),
        ("age", 2, Some(2), vec!["4", "6"]),
        ("age", 5, Some(10), vec!["3"]),
        ("age", 10, None, vec![]),
        ("-age", 0, Some(1), vec!["3"]),
        ("", 0, Some(0), vec![]),
    ];
    for (sort, skip, limit, want) in &pages {
        let q = ListQuery {
            sort: Sort::parse(sort).unwrap_or_default(),
            skip: *skip,
            limit: *limit,
            ..ListQuery::default()
        };
        match client.list(&q).await {
            Ok(p) => {
                let got: Vec<&str> = p.items.iter().map(|r| r.resource_id.as_str()).collect();
                if got != *want || p.total != 6 {
                    f.push(format!(
                        "sort {sort} skip {skip} limit {limit:?}: got {got:?} total {}",
                        p.total
                    ));
                } else {
                    f.pass();
                }
            }
            Err(e) => f.push(format!("sort {sort}: {e}")),
        }
    }
    node.shutdown().await;
    f.finish();
}

/// Projections keep the paths asked (missing ones as null); bad sorts and projections are
/// refused.
pub async fn projections(make: &CollectionFactory) {
    let mut f = Failures::new("projections");
    let (node, client) = people_node(make, &mut f).await;
    let q = ListQuery {
        filter: serde_json::from_value(json!({"name": "ada"})).expect("filter"),
        fields: Projection::parse("age,addr.city").unwrap_or_default(),
        ..ListQuery::default()
    };
    match client.list(&q).await {
        Ok(p)
            if p.items.first().map(|r| &r.resource_data)
                == Some(&json!({"age": 36, "addr": {"city": "london"}})) =>
        {
            f.pass()
        }
        other => f.push(format!("projection: {other:?}")),
    }
    let q = ListQuery {
        filter: serde_json::from_value(json!({"name": "linus"})).expect("filter"),
        fields: Projection::parse("addr.city,nick").unwrap_or_default(),
        ..ListQuery::default()
    };
    match client.list(&q).await {
        Ok(p) if p.items.first().map(|r| &r.resource_data) == Some(&json!({"nick": null})) => {
            f.pass()
        }
        other => f.push(format!("projection of missing paths: {other:?}")),
    }
    if Sort::parse("a,,b").is_ok() || Projection::parse("a,$b").is_ok() {
        f.push("invalid sort/projection accepted".into());
    } else {
        f.pass();
    }

    node.shutdown().await;
    f.finish();
}
