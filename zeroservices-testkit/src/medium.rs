//! The medium conformance cases: requests and replies, concurrency, unknown and silent peers,
//! dropped requests, pings, size limits, one-way messages, events by prefix, disconnects and
//! the cluster key. One async function per case; [`crate::medium_suite`] makes one test of each
//! for a medium.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use zeroservices_core::medium::{
    decode_reply, encode_reply, Inbox, Incoming, MessageKind, MAX_BODY_BYTES,
};
use zeroservices_core::{medium::Medium, ClusterKey, Error};

use crate::MediumFactory;

/// Two keyless media connected to each other, each answered by [`answer_everything`].
struct Pair {
    a: Arc<dyn Medium>,
    b: Arc<dyn Medium>,
    b_server: tokio::task::JoinHandle<Vec<(String, Value)>>,
    /// The topics of the events b received so far, in order.
    b_topics: tokio::sync::watch::Receiver<Vec<String>>,
    _a_server: tokio::task::JoinHandle<Vec<(String, Value)>>,
}

async fn pair(make: &MediumFactory) -> Pair {
    let (a, a_inbox) = make(None).await.expect("bind medium a");
    let (b, b_inbox) = make(None).await.expect("bind medium b");
    a.connect_peer("b", &b.endpoints())
        .await
        .expect("a connects to b");
    b.connect_peer("a", &a.endpoints())
        .await
        .expect("b connects to a");
    let (topics_tx, b_topics) = tokio::sync::watch::channel(Vec::new());
    Pair {
        _a_server: answer_everything(a_inbox, "a"),
        b_server: answer_everything_noting(b_inbox, "b", Some(topics_tx)),
        b_topics,
        a,
        b,
    }
}

const T: Duration = Duration::from_secs(5);

impl Pair {
    /// Waits (at most `T`) until b received an event on `topic`.
    async fn b_heard(&mut self, topic: &str) -> bool {
        let heard = self.b_topics.wait_for(|t| t.iter().any(|x| x == topic));
        matches!(tokio::time::timeout(T, heard).await, Ok(Ok(_)))
    }

    /// Stops b's server and returns what it collected (one-way messages, events).
    async fn stop_b(self) -> Vec<(String, Value)> {
        self.a
            .notify("b", MessageKind::Notify, Bytes::from_static(b"\"stop\""))
            .await
            .expect("stop b");
        tokio::time::timeout(T, self.b_server)
            .await
            .expect("b stops")
            .expect("b server")
    }
}

fn answer_everything(
    inbox: Inbox,
    tag: &'static str,
) -> tokio::task::JoinHandle<Vec<(String, Value)>> {
    answer_everything_noting(inbox, tag, None)
}

/// [`answer_everything`], telling `topics` each event's topic as it arrives.
fn answer_everything_noting(
    mut inbox: Inbox,
    tag: &'static str,
    topics: Option<tokio::sync::watch::Sender<Vec<String>>>,
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
                    if let Some(t) = &topics {
                        t.send_modify(|v| v.push(e.topic.to_string()));
                    }
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

/// A request is answered by the peer's handler, in both directions.
pub async fn request_reply_both_ways(make: &MediumFactory) {
    let p = pair(make).await;
    let r = decode_reply(
        &p.a.request(
            "b",
            MessageKind::Request,
            Bytes::from_static(b"{\"x\":1}"),
            T,
        )
        .await
        .expect("a->b"),
    )
    .expect("reply");
    assert_eq!(r, json!({"tag": "b", "echo": {"x": 1}}));
    let r = decode_reply(
        &p.b.request(
            "a",
            MessageKind::Request,
            Bytes::from_static(b"{\"y\":2}"),
            T,
        )
        .await
        .expect("b->a"),
    )
    .expect("reply");
    assert_eq!(r["tag"], "a");
}

/// 500 concurrent requests are each matched to their own reply.
pub async fn concurrent_requests_get_their_own_replies(make: &MediumFactory) {
    let p = pair(make).await;
    let calls = (0..500).map(|i| {
        let a = p.a.clone();
        async move {
            let body = Bytes::from(json!({"i": i}).to_string());
            let reply = a
                .request("b", MessageKind::Request, body, T)
                .await
                .expect("concurrent request");
            decode_reply(&reply).ok()?["echo"]["i"].as_i64()
        }
    });
    let got = futures::future::join_all(calls).await;
    assert!(
        got.iter().enumerate().all(|(i, v)| *v == Some(i as i64)),
        "replies mismatched"
    );
}

/// A request to a peer never connected fails with `PeerGone` at once.
pub async fn unknown_peer_is_gone_at_once(make: &MediumFactory) {
    let p = pair(make).await;
    let e =
        p.a.request("nobody", MessageKind::Request, Bytes::from_static(b"{}"), T)
            .await
            .expect_err("no such peer");
    assert!(matches!(e, Error::PeerGone(_)), "{e:?}");
}

/// A peer that never replies: `Timeout`, on time.
pub async fn silent_peer_times_out_on_time(make: &MediumFactory) {
    let p = pair(make).await;
    let start = Instant::now();
    let e =
        p.a.request(
            "b",
            MessageKind::Request,
            Bytes::from_static(b"{\"hold\":true}"),
            Duration::from_millis(200),
        )
        .await
        .expect_err("held");
    assert!(matches!(e, Error::Timeout(_)), "{e:?}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "timeout took {:?}",
        start.elapsed()
    );
}

/// A handler that drops the request: an internal error reply, not a hang.
pub async fn dropped_request_is_answered_internal(make: &MediumFactory) {
    let p = pair(make).await;
    let reply =
        p.a.request(
            "b",
            MessageKind::Request,
            Bytes::from_static(b"{\"drop\":true}"),
            T,
        )
        .await
        .expect("dropped");
    assert!(matches!(decode_reply(&reply), Err(Error::Internal(_))));
}

/// A ping is answered by the receiving medium itself, with `{}`.
pub async fn ping_is_answered_by_the_medium(make: &MediumFactory) {
    let p = pair(make).await;
    let pong =
        p.a.request("b", MessageKind::Ping, Bytes::from_static(b"{}"), T)
            .await
            .expect("ping");
    assert_eq!(decode_reply(&pong).ok(), Some(json!({})), "ping reply");
}

/// A body over the limit is refused before it is sent; the peer is still served.
pub async fn oversized_body_is_refused_before_sending(make: &MediumFactory) {
    let p = pair(make).await;
    let big = Bytes::from(vec![b' '; MAX_BODY_BYTES + 1]);
    let e =
        p.a.request("b", MessageKind::Request, big, T)
            .await
            .expect_err("too large");
    assert!(matches!(e, Error::TooLarge(_)), "{e:?}");
    p.a.request("b", MessageKind::Request, Bytes::from_static(b"{}"), T)
        .await
        .expect("served after an oversized body");
}

/// One-way messages arrive.
pub async fn one_way_messages_arrive(make: &MediumFactory) {
    let p = pair(make).await;
    p.a.notify("b", MessageKind::Notify, Bytes::from_static(b"{\"n\":1}"))
        .await
        .expect("notify");
    let seen = p.stop_b().await;
    assert!(
        seen.iter()
            .any(|(k, v)| k == "notify" && *v == json!({"n": 1})),
        "one-way message missing"
    );
}

/// Events reach subscribers of a matching prefix only, all of them, in order.
pub async fn events_reach_matching_subscribers_in_order(make: &MediumFactory) {
    let mut p = pair(make).await;
    p.b.set_subscriptions(vec!["power".into()]);
    // Subscriptions travel to the publisher asynchronously: probes until one arrives.
    let deadline = tokio::time::Instant::now() + T;
    loop {
        p.a.publish("power.probe.x", Bytes::from_static(b"{}"))
            .await
            .expect("publish");
        let heard = p.b_topics.borrow().iter().any(|t| t == "power.probe.x");
        if heard {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no probe arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..10 {
        p.a.publish("power.create.1", Bytes::from(json!({"i": i}).to_string()))
            .await
            .expect("publish");
        p.a.publish("other.create.1", Bytes::from(json!({"i": i}).to_string()))
            .await
            .expect("publish");
    }
    // In order, so once the marker is in, anything published before it is too.
    p.a.publish("power.marker.x", Bytes::from_static(b"{}"))
        .await
        .expect("publish");
    assert!(p.b_heard("power.marker.x").await, "the marker never came");
    let seen = p.stop_b().await;
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
}

/// After a disconnect, requests to that peer fail with `PeerGone`; the other way still works,
/// and connecting again works.
pub async fn disconnected_peer_is_gone(make: &MediumFactory) {
    let p = pair(make).await;
    p.a.disconnect_peer("b").await;
    let e =
        p.a.request("b", MessageKind::Request, Bytes::from_static(b"{}"), T)
            .await
            .expect_err("disconnected");
    assert!(matches!(e, Error::PeerGone(_)), "{e:?}");
    p.b.request("a", MessageKind::Request, Bytes::from_static(b"{}"), T)
        .await
        .expect("b still reaches a");
    p.a.connect_peer("b", &p.b.endpoints())
        .await
        .expect("reconnect");
    p.a.request("b", MessageKind::Request, Bytes::from_static(b"{}"), T)
        .await
        .expect("a reaches b again");
}

/// Keyed media talk; a keyless one, or one with another key, gets nothing answered, and gets
/// no answer from them either.
pub async fn cluster_key(make: &MediumFactory) {
    let key = ClusterKey::new(b"conformance-key-0123456789abcdef");
    let other = ClusterKey::new(b"another-key-0123456789abcdef0000");
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
    // c → d: same key, answered (a request and a ping).
    let r = c
        .request("p0", MessageKind::Request, Bytes::from_static(b"{}"), t)
        .await
        .expect("keyed request");
    assert_eq!(decode_reply(&r).unwrap()["tag"], "d");
    c.request("p0", MessageKind::Ping, Bytes::from_static(b"{}"), t)
        .await
        .expect("keyed ping");
    // Keyless e → c and other-key f → c: not answered, not even a ping.
    for (who, m) in [("keyless", &e), ("other-key", &f)] {
        for k in [MessageKind::Request, MessageKind::Ping] {
            let err = m
                .request("p0", k, Bytes::from_static(b"{}"), short)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::Timeout(_)), "{who} {k}: {err:?}");
        }
    }
    // c → e and c → f: their answers do not pass c's check.
    for peer in ["p1", "p2"] {
        let err = c
            .request(peer, MessageKind::Request, Bytes::from_static(b"{}"), short)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{peer}: {err:?}");
    }
}
