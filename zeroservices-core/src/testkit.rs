//! Conformance suites: every [`Medium`] and every [`Collection`] backend must pass the same
//! cases. Backend crates call [`collection_conformance`] from their own tests.
//!
//! The suites panic with the list of failed cases, and return how many cases ran so callers
//! can assert that nothing was skipped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::medium::envelope::Key;
use crate::medium::{Inbox, Incoming, Medium};
use crate::node::CollectionSpec;
use crate::node::Node;
use crate::protocol::{decode_reply, encode_reply, kind};
use crate::query::{ListQuery, Projection, Sort};
use crate::resources::{Collection, ResourceEvent};
use crate::MemoryNetwork;

/// Makes a fresh, bound medium, sealing its messages with the cluster key given (if any).
pub type MediumFactory =
    Box<dyn Fn(Key) -> BoxFuture<'static, Result<(Arc<dyn Medium>, Inbox)>> + Send + Sync>;

fn answer_everything(
    mut inbox: Inbox,
    tag: &'static str,
) -> tokio::task::JoinHandle<Vec<(String, Value)>> {
    // Echo server used by the medium suite: replies `{"tag", "echo"}`, never replies to a
    // request whose body is {"hold": true}, drops the replier for {"drop": true}, and
    // collects one-way messages and events.
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut held = Vec::new();
        while let Some(i) = inbox.recv().await {
            match i {
                Incoming::Request(r) => {
                    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
                    if body == json!("stop") {
                        break;
                    }
                    match r.reply {
                        None => seen.push((r.kind.as_str().to_owned(), body)),
                        Some(rep) if body.get("hold").is_some() => held.push(rep),
                        Some(rep) if body.get("drop").is_some() => drop(rep),
                        Some(rep) => rep.send(encode_reply(&Ok(json!({"tag": tag, "echo": body})))),
                    }
                }
                Incoming::Event(e) => {
                    seen.push((
                        format!("event:{}", e.topic),
                        e.json().unwrap_or(Value::Null),
                    ));
                }
            }
        }
        seen
    })
}

/// The medium conformance suite. Returns the number of cases run.
pub async fn medium_conformance(make: MediumFactory) -> usize {
    let (a, a_inbox) = make(None).await.expect("bind medium a");
    let (b, b_inbox) = make(None).await.expect("bind medium b");
    let mut cases = 0;
    a.connect_peer("b", &b.endpoints())
        .await
        .expect("a connects to b");
    b.connect_peer("a", &a.endpoints())
        .await
        .expect("b connects to a");
    let _a_server = answer_everything(a_inbox, "a");
    let b_server = answer_everything(b_inbox, "b");
    let t = Duration::from_secs(5);

    // 1. request → reply, both directions.
    let r = decode_reply(
        &a.request("b", kind::REQUEST, Bytes::from_static(b"{\"x\":1}"), t)
            .await
            .expect("a->b"),
    )
    .unwrap();
    assert_eq!(r, json!({"tag": "b", "echo": {"x": 1}}));
    let r = decode_reply(
        &b.request("a", kind::REQUEST, Bytes::from_static(b"{\"y\":2}"), t)
            .await
            .expect("b->a"),
    )
    .unwrap();
    assert_eq!(r["tag"], "a");
    cases += 2;

    // 2. many concurrent requests are matched to their own replies.
    let calls = (0..500).map(|i| {
        let a = a.clone();
        async move {
            let body = Bytes::from(json!({"i": i}).to_string());
            let reply = a
                .request("b", kind::REQUEST, body, t)
                .await
                .expect("concurrent request");
            decode_reply(&reply).unwrap()["echo"]["i"].as_i64()
        }
    });
    let got = futures::future::join_all(calls).await;
    assert!(
        got.iter().enumerate().all(|(i, v)| *v == Some(i as i64)),
        "replies mismatched"
    );
    cases += 1;

    // 3. unknown peer → PeerGone, at once.
    let e = a
        .request("nobody", kind::REQUEST, Bytes::from_static(b"{}"), t)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PeerGone(_)), "{e:?}");
    cases += 1;

    // 4. a peer that never replies → Timeout, on time.
    let start = Instant::now();
    let e = a
        .request(
            "b",
            kind::REQUEST,
            Bytes::from_static(b"{\"hold\":true}"),
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "timeout took {:?}",
        start.elapsed()
    );
    cases += 1;

    // 5. a handler that drops the request → an internal error reply, not a hang.
    let reply = a
        .request(
            "b",
            kind::REQUEST,
            Bytes::from_static(b"{\"drop\":true}"),
            t,
        )
        .await
        .expect("dropped");
    assert!(matches!(decode_reply(&reply), Err(Error::Internal(_))));
    cases += 1;

    // 6a. ping is answered by the receiving medium itself, with `{}`.
    let pong = a
        .request("b", kind::PING, Bytes::from_static(b"{}"), t)
        .await
        .expect("ping");
    assert_eq!(decode_reply(&pong).ok(), Some(json!({})), "ping reply");
    cases += 1;

    // 6b. a body over the limit is refused before it is sent; the peer is still served.
    let big = Bytes::from(vec![b' '; crate::protocol::MAX_BODY_BYTES + 1]);
    let e = a.request("b", kind::REQUEST, big, t).await.unwrap_err();
    assert!(matches!(e, Error::TooLarge(_)), "{e:?}");
    a.request("b", kind::REQUEST, Bytes::from_static(b"{}"), t)
        .await
        .expect("served after an oversized body");
    cases += 1;

    // 6. one-way messages arrive.
    a.notify("b", kind::NOTIFY, Bytes::from_static(b"{\"n\":1}"))
        .await
        .expect("notify");
    cases += 1;

    // 7. events reach subscribers of a matching prefix only.
    b.set_subscriptions(vec!["power".into()]);
    let deadline = Instant::now() + Duration::from_secs(5);
    // Subscriptions travel to the publisher asynchronously: publish markers until one arrives.
    let probe = a.clone();
    let mut n = 0u64;
    loop {
        probe
            .publish("power.probe.x", Bytes::from(json!({"n": n}).to_string()))
            .await
            .expect("publish");
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        if n > 5 || Instant::now() > deadline {
            break;
        }
    }
    for i in 0..10 {
        a.publish("power.create.1", Bytes::from(json!({"i": i}).to_string()))
            .await
            .expect("publish");
        a.publish("other.create.1", Bytes::from(json!({"i": i}).to_string()))
            .await
            .expect("publish");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 8. after disconnect, requests fail with PeerGone.
    a.disconnect_peer("b").await;
    let e = a
        .request("b", kind::REQUEST, Bytes::from_static(b"{}"), t)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PeerGone(_)), "{e:?}");
    cases += 1;

    b.request("a", kind::REQUEST, Bytes::from_static(b"{}"), t)
        .await
        .expect("b still reaches a");
    a.connect_peer("b", &b.endpoints())
        .await
        .expect("reconnect");
    a.notify("b", kind::NOTIFY, Bytes::from_static(b"\"stop\""))
        .await
        .expect("stop b");
    let seen = tokio::time::timeout(t, b_server)
        .await
        .expect("b stops")
        .expect("b server");
    assert!(
        seen.iter()
            .any(|(k, v)| k == "notify" && *v == json!({"n": 1})),
        "one-way message missing"
    );
    let power: Vec<i64> = seen
        .iter()
        .filter(|(k, _)| k == "event:power.create.1")
        .filter_map(|(_, v)| v["i"].as_i64())
        .collect();
    assert_eq!(
        power,
        (0..10).collect::<Vec<_>>(),
        "events lost or reordered"
    );
    assert!(
        !seen.iter().any(|(k, _)| k.starts_with("event:other")),
        "unsubscribed topic delivered"
    );
    cases += 2;
    cases + key_cases(&make).await
}

/// Cluster-key cases: keyed media talk; a keyless one, or one with another key, gets nothing
/// answered, and gets no answer from them either.
async fn key_cases(make: &MediumFactory) -> usize {
    let key = crate::ClusterKey::new(b"conformance-key-0123456789abcdef");
    let other = crate::ClusterKey::new(b"another-key-0123456789abcdef0000");
    let (c, c_inbox) = make(Some(key.clone())).await.expect("keyed medium c");
    let (d, d_inbox) = make(Some(key)).await.expect("keyed medium d");
    let (e, e_inbox) = make(None).await.expect("keyless medium e");
    let (f, f_inbox) = make(Some(other)).await.expect("other-key medium f");
    let _servers = [
        answer_everything(c_inbox, "c"),
        answer_everything(d_inbox, "d"),
        answer_everything(e_inbox, "e"),
        answer_everything(f_inbox, "f"),
    ];
    for (m, peers) in [(&c, vec![&d, &e, &f]), (&e, vec![&c]), (&f, vec![&c])] {
        for (i, p) in peers.into_iter().enumerate() {
            m.connect_peer(&format!("p{i}"), &p.endpoints())
                .await
                .expect("connect");
        }
    }
    let t = Duration::from_secs(5);
    let short = Duration::from_millis(300);
    let mut cases = 0;
    // c → d: same key, answered (a request and a ping).
    let r = c
        .request("p0", kind::REQUEST, Bytes::from_static(b"{}"), t)
        .await
        .expect("keyed request");
    assert_eq!(decode_reply(&r).unwrap()["tag"], "d");
    c.request("p0", kind::PING, Bytes::from_static(b"{}"), t)
        .await
        .expect("keyed ping");
    cases += 1;
    // Keyless e → c and other-key f → c: not answered, not even a ping.
    for (who, m) in [("keyless", &e), ("other-key", &f)] {
        for k in [kind::REQUEST, kind::PING] {
            let err = m
                .request("p0", k, Bytes::from_static(b"{}"), short)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Timeout(_)), "{who} {k}: {err:?}");
        }
    }
    cases += 1;
    // c → e and c → f: their answers do not pass c's check.
    for peer in ["p1", "p2"] {
        let err = c
            .request(peer, kind::REQUEST, Bytes::from_static(b"{}"), short)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{peer}: {err:?}");
    }
    cases += 1;
    cases
}

/// Makes a fresh, empty collection.
pub type CollectionFactory =
    Box<dyn Fn(()) -> BoxFuture<'static, Arc<dyn Collection>> + Send + Sync>;

fn people() -> Vec<(&'static str, Value)> {
    vec![
        (
            "1",
            json!({"name": "ada", "age": 36, "tags": ["math", "code"], "addr": {"city": "london", "zip": "N1"}, "score": 9.5, "status": "pending", "bio": "First programmer, wrote notes"}),
        ),
        (
            "2",
            json!({"name": "alan", "age": 41, "tags": ["code", "crypto"], "addr": {"city": "manchester"}, "score": 8, "status": "done", "bio": "Broke codes at Bletchley"}),
        ),
        (
            "3",
            json!({"name": "grace", "age": 85, "tags": ["code", "navy"], "addr": {"city": "new york", "zip": "10001"}, "score": 9, "status": "pending", "bio": "Compilers and the first bug"}),
        ),
        (
            "4",
            json!({"name": "linus", "age": 54, "tags": [], "score": 7, "status": "done", "nick": null, "bio": "Kernel hacker"}),
        ),
        (
            "5",
            json!({"name": "Barbara", "age": 83, "tags": ["code"], "addr": {"city": "boston"}, "score": 9.5, "status": "pending", "items": [{"k": "a", "n": 1}, {"k": "b", "n": 5}]}),
        ),
        (
            "6",
            json!({"name": "edsger", "age": 72, "score": 6, "status": "archived", "bio": "Goto considered harmful"}),
        ),
    ]
}

/// The backend conformance suite: every operator, sort/skip/limit, projections, ids,
/// conflicts, not-found, links, custom actions and events, through a real [`Node`] hosting the
/// collection. Returns the number of cases run.
pub async fn collection_conformance(make: CollectionFactory) -> usize {
    let mut failures: Vec<String> = Vec::new();
    let mut cases = 0usize;
    let net = MemoryNetwork::new();

    // --- filters -------------------------------------------------------------------------
    let filters: Vec<(Value, Vec<&str>)> = vec![
        (json!({}), vec!["1", "2", "3", "4", "5", "6"]),
        (json!({"name": "ada"}), vec!["1"]),
        (json!({"age": 41}), vec!["2"]),
        (json!({"age": 41.0}), vec!["2"]),
        (json!({"status": "pending", "score": 9.5}), vec!["1", "5"]),
        (json!({"addr.city": "london"}), vec!["1"]),
        (json!({"addr": {"city": "manchester"}}), vec!["2"]),
        (json!({"tags": "code"}), vec!["1", "2", "3", "5"]),
        (json!({"tags": ["code", "crypto"]}), vec!["2"]),
        (json!({"tags": []}), vec!["4"]),
        (json!({"nick": null}), vec!["1", "2", "3", "4", "5", "6"]),
        (json!({"age": {"$eq": 36}}), vec!["1"]),
        (json!({"age": {"$ne": 36}}), vec!["2", "3", "4", "5", "6"]),
        (json!({"tags": {"$ne": "code"}}), vec!["4", "6"]),
        (json!({"age": {"$gt": 72}}), vec!["3", "5"]),
        (json!({"age": {"$gte": 72}}), vec!["3", "5", "6"]),
        (json!({"age": {"$lt": 41}}), vec!["1"]),
        (json!({"age": {"$lte": 41}}), vec!["1", "2"]),
        (json!({"age": {"$gt": 40, "$lt": 60}}), vec!["2", "4"]),
        (json!({"name": {"$gt": "f"}}), vec!["3", "4"]),
        (json!({"age": {"$gt": "10"}}), vec![]),
        (json!({"score": {"$gte": 9}}), vec!["1", "3", "5"]),
        (
            json!({"name": {"$in": ["ada", "linus", "nobody"]}}),
            vec!["1", "4"],
        ),
        (json!({"tags": {"$in": ["navy", "crypto"]}}), vec!["2", "3"]),
        (
            json!({"name": {"$nin": ["ada", "alan"]}}),
            vec!["3", "4", "5", "6"],
        ),
        (json!({"tags": {"$nin": ["code"]}}), vec!["4", "6"]),
        (json!({"addr": {"$exists": true}}), vec!["1", "2", "3", "5"]),
        (json!({"addr": {"$exists": false}}), vec!["4", "6"]),
        (json!({"addr.zip": {"$exists": true}}), vec!["1", "3"]),
        (json!({"nick": {"$exists": true}}), vec!["4"]),
        (
            json!({"$and": [{"status": "pending"}, {"age": {"$gt": 50}}]}),
            vec!["3", "5"],
        ),
        (
            json!({"$or": [{"name": "ada"}, {"age": {"$gt": 80}}]}),
            vec!["1", "3", "5"],
        ),
        (
            json!({"$or": [{"status": "done"}, {"tags": "navy"}], "score": {"$lt": 9}}),
            vec!["2", "4"],
        ),
        (
            json!({"$nor": [{"status": "pending"}, {"status": "done"}]}),
            vec!["6"],
        ),
        (json!({"age": {"$not": {"$gt": 50}}}), vec!["1", "2"]),
        (json!({"tags": {"$not": {"$in": ["code"]}}}), vec!["4", "6"]),
        (json!({"name": {"$regex": "^a"}}), vec!["1", "2"]),
        (
            json!({"name": {"$regex": "^b", "$options": "i"}}),
            vec!["5"],
        ),
        (json!({"addr.city": {"$regex": "o"}}), vec!["1", "3", "5"]),
        (json!({"tags": {"$regex": "^cr"}}), vec!["2"]),
        (json!({"items.k": "b"}), vec!["5"]),
        (json!({"items.n": {"$gt": 3}}), vec!["5"]),
        (json!({"items.0.k": "a"}), vec!["5"]),
        (json!({"tags.1": "crypto"}), vec!["2"]),
        (json!({"$text": {"$search": "first"}}), vec!["1", "3"]),
        (json!({"$text": "kernel"}), vec!["4"]),
        (
            json!({"$text": {"$search": "goto bletchley"}}),
            vec!["2", "6"],
        ),
        (json!({"missing.deep.path": 1}), vec![]),
    ];
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

    let (node, _c) = start_node(&net, &make, "people", vec![]).await;
    let client = node.collection("people");
    for (id, data) in people() {
        if let Err(e) = client.create(Some(id), data).await {
            failures.push(format!("seed {id}: {e}"));
        }
    }
    for (f, want) in &filters {
        cases += 1;
        let q = ListQuery {
            filter: f.clone(),
            ..ListQuery::default()
        };
        match client.list(&q).await {
            Ok(page) => {
                let mut got: Vec<String> =
                    page.items.iter().map(|r| r.resource_id.clone()).collect();
                got.sort();
                if got != *want || page.total != want.len() as u64 {
                    failures.push(format!(
                        "filter {f}: got {got:?} (total {}), want {want:?}",
                        page.total
                    ));
                }
            }
            Err(e) => failures.push(format!("filter {f}: error {e}")),
        }
    }
    for f in &bad_filters {
        cases += 1;
        let q = ListQuery {
            filter: f.clone(),
            ..ListQuery::default()
        };
        match client.list(&q).await {
            Err(Error::BadRequest(_)) => {}
            other => failures.push(format!("bad filter {f}: want BadRequest, got {other:?}")),
        }
    }

    // --- sort, skip, limit, projection -----------------------------------------------------
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
        cases += 1;
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
                    failures.push(format!(
                        "sort {sort} skip {skip} limit {limit:?}: got {got:?} total {}",
                        p.total
                    ));
                }
            }
            Err(e) => failures.push(format!("sort {sort}: {e}")),
        }
    }
    cases += 1;
    let q = ListQuery {
        filter: json!({"name": "ada"}),
        fields: Projection::parse("age,addr.city").unwrap_or_default(),
        ..ListQuery::default()
    };
    match client.list(&q).await {
        Ok(p)
            if p.items.first().map(|r| &r.resource_data)
                == Some(&json!({"age": 36, "addr": {"city": "london"}})) => {}
        other => failures.push(format!("projection: {other:?}")),
    }
    cases += 1;
    let q = ListQuery {
        filter: json!({"name": "linus"}),
        fields: Projection::parse("addr.city,nick").unwrap_or_default(),
        ..ListQuery::default()
    };
    match client.list(&q).await {
        Ok(p) if p.items.first().map(|r| &r.resource_data) == Some(&json!({"nick": null})) => {}
        other => failures.push(format!("projection of missing paths: {other:?}")),
    }
    cases += 1;
    if Sort::parse("a,,b").is_ok() || Projection::parse("a,$b").is_ok() {
        failures.push("invalid sort/projection accepted".into());
    }

    // --- ids, conflicts, not found ---------------------------------------------------------
    let mut check = |name: &str, ok: bool| {
        cases += 1;
        if !ok {
            failures.push(name.to_owned());
        }
    };
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

    // --- updates ---------------------------------------------------------------------------
    let updates: Vec<(Value, Value, Value)> = vec![
        (json!({"a": 1}), json!({"$set": {"a": 2}}), json!({"a": 2})),
        (json!({"a": 1}), json!({"b": 2}), json!({"a": 1, "b": 2})),
        (
            json!({"a": 1}),
            json!({"$set": {"x.y.z": 3}}),
            json!({"a": 1, "x": {"y": {"z": 3}}}),
        ),
        (
            json!({"a": 1, "b": 2}),
            json!({"$unset": {"b": ""}}),
            json!({"a": 1}),
        ),
        (
            json!({"a": {"b": 1, "c": 2}}),
            json!({"$unset": {"a.b": 1}}),
            json!({"a": {"c": 2}}),
        ),
        (
            json!({"a": 1}),
            json!({"$unset": {"zz": 1}}),
            json!({"a": 1}),
        ),
        (json!({"n": 1}), json!({"$inc": {"n": 2}}), json!({"n": 3})),
        (
            json!({"n": 1}),
            json!({"$inc": {"n": -5}}),
            json!({"n": -4}),
        ),
        (
            json!({"n": 1.5}),
            json!({"$inc": {"n": 1}}),
            json!({"n": 2.5}),
        ),
        (json!({}), json!({"$inc": {"m": 4}}), json!({"m": 4})),
        (
            json!({"l": [1]}),
            json!({"$push": {"l": 2}}),
            json!({"l": [1, 2]}),
        ),
        (json!({}), json!({"$push": {"l": 1}}), json!({"l": [1]})),
        (
            json!({"l": [1]}),
            json!({"$push": {"l": {"$each": [2, 3]}}}),
            json!({"l": [1, 2, 3]}),
        ),
        (
            json!({"l": [1, 2, 1, 3]}),
            json!({"$pull": {"l": 1}}),
            json!({"l": [2, 3]}),
        ),
        (
            json!({"l": [1, 5, 9]}),
            json!({"$pull": {"l": {"$gt": 4}}}),
            json!({"l": [1]}),
        ),
        (
            json!({"l": [{"k": 1}, {"k": 2}]}),
            json!({"$pull": {"l": {"k": 2}}}),
            json!({"l": [{"k": 1}]}),
        ),
        (
            json!({"l": [1, 2]}),
            json!({"$addToSet": {"l": 2}}),
            json!({"l": [1, 2]}),
        ),
        (
            json!({"l": [1, 2]}),
            json!({"$addToSet": {"l": 3}}),
            json!({"l": [1, 2, 3]}),
        ),
        (
            json!({"l": [1]}),
            json!({"$addToSet": {"l": {"$each": [1, 4, 4]}}}),
            json!({"l": [1, 4]}),
        ),
        (
            json!({"a": 1, "n": 1}),
            json!({"$set": {"a": 9}, "$inc": {"n": 1}, "$push": {"h": "x"}}),
            json!({"a": 9, "n": 2, "h": ["x"]}),
        ),
        (json!({"a": 1}), json!({}), json!({"a": 1})),
    ];
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
    for (i, (start, update, want)) in updates.iter().enumerate() {
        cases += 1;
        let id = format!("u{i}");
        let res = match client.create(Some(&id), start.clone()).await {
            Ok(_) => client.patch(&id, update.clone()).await,
            Err(e) => Err(e),
        };
        match res {
            Ok(r) if r.resource_data == *want => {
                if client.get(&id).await.map(|g| g.resource_data).ok().as_ref() != Some(want) {
                    failures.push(format!("update {update}: not persisted"));
                }
            }
            other => failures.push(format!(
                "update {update} on {start}: got {other:?}, want {want}"
            )),
        }
    }
    for (i, (start, update)) in bad_updates.iter().enumerate() {
        cases += 1;
        let id = format!("bad{i}");
        if client.create(Some(&id), start.clone()).await.is_err() {
            failures.push(format!("seed {id}"));
            continue;
        }
        match client.patch(&id, update.clone()).await {
            Err(Error::BadRequest(_)) => {
                if client.get(&id).await.map(|g| g.resource_data).ok().as_ref() != Some(start) {
                    failures.push(format!("failed update {update} changed the resource"));
                }
            }
            other => failures.push(format!(
                "bad update {update}: want BadRequest, got {other:?}"
            )),
        }
    }

    // --- links, actions, events, schema -----------------------------------------------------
    let mut events = node.subscribe("people");
    let linked = client
        .add_link("1", "friend", ("people", "2"), "Alan")
        .await;
    let linked2 = client
        .add_link("1", "friend", ("people", "3"), "Grace")
        .await;
    cases += 1;
    match (linked, linked2) {
        (Ok(_), Ok(r)) => {
            let l = &r.resource_data["_links"];
            if l["friend"].as_array().map(Vec::len) != Some(2) || l["latest"]["people"] != "3" {
                failures.push(format!("add_link shape: {l}"));
            }
        }
        other => failures.push(format!("add_link: {other:?}")),
    }
    cases += 1;
    if !matches!(
        client
            .add_link("nope", "friend", ("people", "1"), "x")
            .await,
        Err(Error::NotFound(_))
    ) {
        failures.push("add_link on a missing resource".into());
    }
    let _ = client.create(Some("ev1"), json!({"v": 1})).await;
    let _ = client.patch("ev1", json!({"$inc": {"v": 1}})).await;
    let _ = client.delete("ev1").await;
    let mut got: Vec<ResourceEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 5 && Instant::now() < deadline {
        if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await
        {
            if let Ok(e) = serde_json::from_slice::<ResourceEvent>(&ev.payload) {
                // Earlier changes of this suite may still be on their way; keep only ours.
                if e.resource_id != "1" && e.resource_id != "ev1" {
                    continue;
                }
                if ev.topic.as_ref() != format!("{}.{}.{}", e.collection, e.action, e.resource_id) {
                    failures.push(format!("event topic {} does not match payload", ev.topic));
                }
                got.push(e);
            }
        }
    }
    cases += 4;
    let actions: Vec<&str> = got.iter().map(|e| e.action.as_str()).collect();
    if actions != ["patch", "patch", "create", "patch", "delete"] {
        failures.push(format!("events: {actions:?}"));
    }
    if got.windows(2).any(|w| w[1].seq != w[0].seq + 1)
        || got.iter().any(|e| e.node_id != node.node_id() || e.ts == 0)
    {
        failures.push("event seq not consecutive, or node_id/ts wrong".into());
    }
    if got
        .get(3)
        .map(|e| (e.resource_data.clone(), e.patch.clone()))
        != Some((Some(json!({"v": 2})), Some(json!({"$inc": {"v": 1}}))))
    {
        failures.push(format!("patch event payload: {:?}", got.get(3)));
    }
    if got.get(4).map(|e| e.resource_data.is_none()) != Some(true) {
        failures.push("delete event must not carry data".into());
    }

    let (anode, _c2) = start_node(&net, &make, "counters", vec!["increment"]).await;
    let counters = anode.collection("counters");
    cases += 3;
    let _ = counters.create(Some("c"), json!({"n": 1})).await;
    match counters
        .action("increment", Some("c"), json!({"by": 4}))
        .await
    {
        Ok(v) if v["resource_data"]["n"] == 5 => {}
        other => failures.push(format!("resource action: {other:?}")),
    }
    match counters.action("increment", None, json!({})).await {
        Ok(v) if v == json!({"collection_level": true}) => {}
        other => failures.push(format!("collection action: {other:?}")),
    }
    if !matches!(
        counters.action("nope", None, json!({})).await,
        Err(Error::NotFound(_))
    ) {
        failures.push("unknown action must be NotFound".into());
    }

    let schema_spec = CollectionSpec::new("typed", make(()).await)
        .schema(json!({"type": "object", "required": ["value"], "properties": {"value": {"type": "number"}}}))
        .expect("schema");
    let tnode = Node::builder("typed")
        .memory(&net)
        .collection(schema_spec)
        .start()
        .await
        .expect("typed node");
    let typed = tnode.collection("typed");
    cases += 3;
    if typed.create(Some("t"), json!({"value": 1})).await.is_err() {
        failures.push("schema: valid create rejected".into());
    }
    match typed.create(None, json!({"value": "x"})).await {
        Err(Error::Validation(p)) if p.iter().any(|s| s.contains("/value")) => {}
        other => failures.push(format!("schema create: {other:?}")),
    }
    match typed.patch("t", json!({"$unset": {"value": ""}})).await {
        Err(Error::Validation(_))
            if typed
                .get("t")
                .await
                .map(|r| r.resource_data == json!({"value": 1}))
                .unwrap_or(false) => {}
        other => failures.push(format!("schema patch: {other:?}")),
    }

    node.shutdown().await;
    anode.shutdown().await;
    tnode.shutdown().await;
    assert!(
        failures.is_empty(),
        "{} of {cases} conformance cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    cases
}

async fn start_node(
    net: &MemoryNetwork,
    make: &CollectionFactory,
    name: &str,
    actions: Vec<&str>,
) -> (Node, Arc<dyn Collection>) {
    let store = make(()).await;
    let mut spec = CollectionSpec::new(name, store.clone());
    if actions.contains(&"increment") {
        spec = spec.action("increment", |ctx| async move {
            match ctx.resource_id {
                Some(id) => {
                    let by = ctx.args["by"].clone();
                    let r = ctx
                        .node
                        .collection(&ctx.collection)
                        .patch(&id, json!({"$inc": {"n": by}}))
                        .await?;
                    serde_json::to_value(r).map_err(|e| Error::Internal(e.to_string()))
                }
                None => Ok(json!({"collection_level": true})),
            }
        });
    }
    let node = Node::builder(name)
        .memory(net)
        .collection(spec)
        .start()
        .await
        .expect("start conformance node");
    (node, store)
}
