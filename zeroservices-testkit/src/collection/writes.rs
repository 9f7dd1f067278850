//! Writing: ids, conflicts, not-found, deletes, updates.

use serde_json::{json, Value};
use zeroservices_core::{query::ListQuery, Error};

use super::people_node;
use crate::{CollectionFactory, Failures};

/// Generated and chosen ids, conflicts, id rules, not-found, delete, large and nested data.
pub async fn ids_and_conflicts(make: &CollectionFactory) {
    let mut f = Failures::new("ids_and_conflicts");
    let (node, client) = people_node(make, &mut f).await;
    let mut check = |name: &str, ok: bool| f.check(name, ok);
    let created = client.create(None, json!({"v": 1})).await;
    let gen_id = created
        .as_ref()
        .map(|r| r.resource_id.clone())
        .unwrap_or_default();
    check(
        "create without id generates one",
        created.is_ok() && !gen_id.is_empty(),
    );
    check(
        "generated id readable",
        client.get(&gen_id).await.map(|r| r.resource_data).ok() == Some(json!({"v": 1})),
    );
    let other = client
        .create(None, json!({"v": 2}))
        .await
        .map(|r| r.resource_id)
        .unwrap_or_default();
    check(
        "generated ids are distinct",
        other != gen_id && !other.is_empty(),
    );
    check(
        "duplicate id is a conflict",
        matches!(
            client.create(Some("1"), json!({})).await,
            Err(Error::Conflict(_))
        ),
    );
    check(
        "conflict leaves data unchanged",
        client
            .get("1")
            .await
            .map(|r| r.resource_data["name"] == "ada")
            .unwrap_or(false),
    );

    node.shutdown().await;
    f.finish();
}

/// Id rules: any UTF-8 up to 512 bytes without `/` or control characters; data is an object.
pub async fn id_rules(make: &CollectionFactory) {
    let mut f = Failures::new("id_rules");
    let (node, client) = people_node(make, &mut f).await;
    let mut check = |name: &str, ok: bool| f.check(name, ok);
    check(
        "unicode id",
        client
            .create(Some("é-✓ id"), json!({"u": true}))
            .await
            .is_ok()
            && client.get("é-✓ id").await.is_ok(),
    );
    check(
        "id with slash rejected",
        matches!(
            client.create(Some("a/b"), json!({})).await,
            Err(Error::BadRequest(_))
        ),
    );
    check(
        "empty id rejected",
        matches!(
            client.create(Some(""), json!({})).await,
            Err(Error::BadRequest(_))
        ),
    );
    check(
        "control char id rejected",
        matches!(
            client.create(Some("a\nb"), json!({})).await,
            Err(Error::BadRequest(_))
        ),
    );
    check(
        "513-byte id rejected",
        matches!(
            client.create(Some(&"x".repeat(513)), json!({})).await,
            Err(Error::BadRequest(_))
        ),
    );
    check(
        "512-byte id accepted",
        client
            .create(Some(&"y".repeat(512)), json!({}))
            .await
            .is_ok(),
    );
    check(
        "non-object data rejected",
        matches!(
            client.create(None, json!([1])).await,
            Err(Error::BadRequest(_))
        ),
    );

    node.shutdown().await;
    f.finish();
}

/// Missing resources are `NotFound` for get, patch and delete; a deleted id can be reused.
pub async fn not_found_and_deletes(make: &CollectionFactory) {
    let mut f = Failures::new("not_found_and_deletes");
    let (node, client) = people_node(make, &mut f).await;
    let mut check = |name: &str, ok: bool| f.check(name, ok);
    let other = match client.create(None, json!({"v": 2})).await {
        Ok(r) => r.resource_id,
        Err(e) => {
            check(&format!("create the resource to delete: {e}"), false);
            String::new()
        }
    };
    check(
        "get missing",
        matches!(client.get("nope").await, Err(Error::NotFound(_))),
    );
    check(
        "patch missing",
        matches!(
            client.patch("nope", json!({"$set": {"a": 1}})).await,
            Err(Error::NotFound(_))
        ),
    );
    check(
        "delete missing",
        matches!(client.delete("nope").await, Err(Error::NotFound(_))),
    );
    check(
        "delete",
        client.delete(&other).await.is_ok()
            && matches!(client.get(&other).await, Err(Error::NotFound(_))),
    );
    check(
        "delete twice",
        matches!(client.delete(&other).await, Err(Error::NotFound(_))),
    );
    check(
        "recreate after delete",
        client
            .create(Some(&other), json!({"again": true}))
            .await
            .is_ok(),
    );

    node.shutdown().await;
    f.finish();
}

/// Large and nested documents round-trip; an unknown collection is `NotFound`.
pub async fn large_nested_and_unknown(make: &CollectionFactory) {
    let mut f = Failures::new("large_nested_and_unknown");
    let (node, client) = people_node(make, &mut f).await;
    let mut check = |name: &str, ok: bool| f.check(name, ok);
    check("large document", {
        let big = json!({"blob": "z".repeat(200_000), "n": (0..1000).collect::<Vec<_>>()});
        client.create(Some("big"), big.clone()).await.is_ok()
            && client
                .get("big")
                .await
                .map(|r| r.resource_data == big)
                .unwrap_or(false)
    });
    check("nested data round-trips", {
        let d = json!({"a": {"b": [1, {"c": null}, "x"], "f": 1.5, "t": true}});
        client.create(Some("nested"), d.clone()).await.is_ok()
            && client
                .get("nested")
                .await
                .map(|r| r.resource_data == d)
                .unwrap_or(false)
    });
    let unknown = node.collection("no-such-collection");
    check(
        "unknown collection is NotFound",
        matches!(unknown.get("1").await, Err(Error::NotFound(_))),
    );

    node.shutdown().await;
    f.finish();
}

/// Updates: the resource before, the update, the resource after.
const UPDATES: &[(&str, &str, &str)] = &[
    (r#"{"a": 1}"#, r#"{"$set": {"a": 2}}"#, r#"{"a": 2}"#),
    (r#"{"a": 1}"#, r#"{"b": 2}"#, r#"{"a": 1, "b": 2}"#),
    (
        r#"{"a": 1}"#,
        r#"{"$set": {"x.y.z": 3}}"#,
        r#"{"a": 1, "x": {"y": {"z": 3}}}"#,
    ),
    (
        r#"{"a": 1, "b": 2}"#,
        r#"{"$unset": {"b": ""}}"#,
        r#"{"a": 1}"#,
    ),
    (
        r#"{"a": {"b": 1, "c": 2}}"#,
        r#"{"$unset": {"a.b": 1}}"#,
        r#"{"a": {"c": 2}}"#,
    ),
    (r#"{"a": 1}"#, r#"{"$unset": {"zz": 1}}"#, r#"{"a": 1}"#),
    (r#"{"n": 1}"#, r#"{"$inc": {"n": 2}}"#, r#"{"n": 3}"#),
    (r#"{"n": 1}"#, r#"{"$inc": {"n": -5}}"#, r#"{"n": -4}"#),
    (r#"{"n": 1.5}"#, r#"{"$inc": {"n": 1}}"#, r#"{"n": 2.5}"#),
    (r#"{}"#, r#"{"$inc": {"m": 4}}"#, r#"{"m": 4}"#),
    (
        r#"{"l": [1]}"#,
        r#"{"$push": {"l": 2}}"#,
        r#"{"l": [1, 2]}"#,
    ),
    (r#"{}"#, r#"{"$push": {"l": 1}}"#, r#"{"l": [1]}"#),
    (
        r#"{"l": [1]}"#,
        r#"{"$push": {"l": {"$each": [2, 3]}}}"#,
        r#"{"l": [1, 2, 3]}"#,
    ),
    (
        r#"{"l": [1, 2, 1, 3]}"#,
        r#"{"$pull": {"l": 1}}"#,
        r#"{"l": [2, 3]}"#,
    ),
    (
        r#"{"l": [1, 5, 9]}"#,
        r#"{"$pull": {"l": {"$gt": 4}}}"#,
        r#"{"l": [1]}"#,
    ),
    (
        r#"{"l": [{"k": 1}, {"k": 2}]}"#,
        r#"{"$pull": {"l": {"k": 2}}}"#,
        r#"{"l": [{"k": 1}]}"#,
    ),
    (
        r#"{"l": [1, 2]}"#,
        r#"{"$addToSet": {"l": 2}}"#,
        r#"{"l": [1, 2]}"#,
    ),
    (
        r#"{"l": [1, 2]}"#,
        r#"{"$addToSet": {"l": 3}}"#,
        r#"{"l": [1, 2, 3]}"#,
    ),
    (
        r#"{"l": [1]}"#,
        r#"{"$addToSet": {"l": {"$each": [1, 4, 4]}}}"#,
        r#"{"l": [1, 4]}"#,
    ),
    (
        r#"{"a": 1, "n": 1}"#,
        r#"{"$set": {"a": 9}, "$inc": {"n": 1}, "$push": {"h": "x"}}"#,
        r#"{"a": 9, "n": 2, "h": ["x"]}"#,
    ),
    (r#"{"a": 1}"#, r#"{}"#, r#"{"a": 1}"#),
];

/// Every update operator, applied and persisted.
pub async fn updates(make: &CollectionFactory) {
    let mut f = Failures::new("updates");
    let (node, client) = people_node(make, &mut f).await;
    for (i, texts) in UPDATES.iter().enumerate() {
        let [start, update, want]: [Value; 3] =
            [texts.0, texts.1, texts.2].map(|t| serde_json::from_str(t).expect("update table"));
        let id = format!("u{i}");
        let res = match client.create(Some(&id), start.clone()).await {
            Ok(_) => client.patch(&id, update.clone()).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(r) if r.resource_data == want => {
                if client.get(&id).await.map(|g| g.resource_data).ok().as_ref() != Some(&want) {
                    f.push(format!("update {update}: not persisted"));
                } else {
                    f.pass();
                }
            }
            other => f.push(format!(
                "update {update} on {start}: got {other:?}, want {want}"
            )),
        }
    }
    node.shutdown().await;
    f.finish();
}

/// Malformed or inapplicable updates are `BadRequest` and change nothing.
pub async fn bad_updates(make: &CollectionFactory) {
    let mut f = Failures::new("bad_updates");
    let bad_updates: Vec<(Value, Value)> = vec![
        (json!({"a": 1}), json!({"$rename": {"a": "b"}})),
        (json!({"a": "s"}), json!({"$inc": {"a": 1}})),
        (json!({"a": 1}), json!({"$inc": {"a": "1"}})),
        (json!({"a": 1}), json!({"$push": {"a": 2}})),
        (json!({"a": 1}), json!({"$set": {"a": 1}, "b": 2})),
        (json!({"a": 1}), json!({"$set": {"a": 1}, "$inc": {"a": 1}})),
        (json!({"a": 1}), json!({"$set": 5})),
        (json!({"a": 1}), json!([1])),
        (json!({"a": 1}), json!({"$set": {"a.": 1}})),
        (json!({"a": 1}), json!({"$set": {"a.b": 1}})),
    ];
    let (node, client) = people_node(make, &mut f).await;
    for (i, (start, update)) in bad_updates.iter().enumerate() {
        let id = format!("bad{i}");
        if client.create(Some(&id), start.clone()).await.is_err() {
            f.push(format!("seed {id}"));
            continue;
        }
        match client.patch(&id, update.clone()).await {
            Err(Error::BadRequest(_)) => {
                if client.get(&id).await.map(|g| g.resource_data).ok().as_ref() != Some(start) {
                    f.push(format!("failed update {update} changed the resource"));
                } else {
                    f.pass();
                }
            }
            other => f.push(format!(
                "bad update {update}: want BadRequest, got {other:?}"
            )),
        }
    }

    node.shutdown().await;
    f.finish();
}

/// A document nested `levels` deep (`{"a": {"a": ... 1}}`).
fn nested(levels: usize) -> Value {
    (0..levels).fold(json!(1), |inner, _| json!({ "a": inner }))
}

/// Documents nesting deeper than `MAX_NESTING` are refused at create and patch, so none is
/// written that could not be read back: the collection stays listable.
pub async fn deep_documents(make: &CollectionFactory) {
    let mut f = Failures::new("deep_documents");
    let (node, client) = people_node(make, &mut f).await;
    let max = zeroservices_core::query::MAX_NESTING;
    let ok = client.create(Some("deepest"), nested(max)).await;
    f.check(
        "a document at the nesting limit is stored and read back",
        ok.is_ok()
            && client
                .get("deepest")
                .await
                .is_ok_and(|r| r.resource_data == nested(max)),
    );
    f.check(
        "a document past the limit is refused",
        matches!(
            client.create(Some("too-deep"), nested(max + 1)).await,
            Err(Error::BadRequest(_))
        ),
    );
    let long_path = vec!["a"; 150].join(".");
    let patched = client.patch("1", json!({ "$set": { long_path: 1 } })).await;
    f.check(
        "a $set that would nest past the limit is refused",
        matches!(patched, Err(Error::BadRequest(_))),
    );
    f.check(
        "and leaves the resource as it was",
        client
            .get("1")
            .await
            .is_ok_and(|r| r.resource_data["name"] == "ada" && r.resource_data.get("a").is_none()),
    );
    f.check(
        "the collection is still listable",
        client.list(&ListQuery::default()).await.is_ok(),
    );
    node.shutdown().await;
    f.finish();
}
