//! Entry points for the fuzz targets in `fuzz/` and the wire-level tests (not a stable API:
//! the wire format is private).

use bytes::Bytes;

use crate::cluster_key::{open_datagram, ClusterKey};
use crate::protocol::{decode_reply, reply_data, Announcement};

/// Everything a node does with a received discovery datagram, with and without a cluster key.
pub fn datagram(data: &[u8]) {
    let _ = Announcement::decode(data);
    let key = ClusterKey::new(b"fuzzing-key-fuzzing-key");
    if let Ok(body) = open_datagram(&key, data) {
        let _ = Announcement::decode(body);
    }
}

/// Everything a ROUTER does with a received message (frames split at 0xFF bytes), with and
/// without a cluster key, and what a caller does with a reply body (as a value, and as the
/// JSON bytes an HTTP node passes on).
pub fn frames(data: &[u8]) {
    let frames: Vec<Bytes> = data
        .split(|b| *b == 0xFF)
        .map(Bytes::copy_from_slice)
        .collect();
    let key = ClusterKey::new(b"fuzzing-key-fuzzing-key");
    let _ = crate::medium::envelope::open_request(None, Some("fuzz"), frames.clone());
    let _ = crate::medium::envelope::open_request(Some(&key), Some("fuzz"), frames.clone());
    let _ = crate::medium::envelope::open_reply(Some(&key), frames.clone());
    let _ = crate::medium::envelope::open_event(Some(&key), frames);
    let _ = decode_reply(data);
    let body = Bytes::copy_from_slice(data);
    if let (Ok(raw), Ok(value)) = (reply_data(&body), decode_reply(data)) {
        // Both readings of one reply agree: the bytes passed on are the value's JSON.
        let reparsed: Result<serde_json::Value, _> = serde_json::from_slice(&raw);
        assert_eq!(
            reparsed.ok(),
            Some(value),
            "reply_data and decode_reply disagree"
        );
    }
}

/// Filter, sort and projection parsing, and filter evaluation, never panic.
pub fn query(data: &[u8]) {
    use crate::query::{Filter, Projection, Sort};
    use serde_json::{json, Value};
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Sort::parse(text);
        if let Ok(p) = Projection::parse(text) {
            let _ = p.apply(json!({"a": {"b": [1, {"c": 2}]}, "d": "x"}));
        }
    }
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(f) = Filter::parse(&v) {
        for doc in [
            json!({}),
            json!({"a": 1, "b": [1, 2, {"c": "x"}], "d": {"e": null}}),
            json!({"a": "text here", "n": 1.5}),
        ] {
            let _ = f.matches(&doc);
        }
    }
}

/// Update parsing and application never panic, and a failed update leaves the document as it
/// was. Input: two JSON values in a row, the document then the update.
pub fn update(data: &[u8]) {
    use crate::query::Update;
    use serde_json::Value;
    let mut it = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    let (Some(Ok(mut doc)), Some(Ok(update))) = (it.next(), it.next()) else {
        return;
    };
    if !doc.is_object() {
        return;
    }
    if let Ok(u) = Update::parse(&update) {
        let before = doc.clone();
        match u.apply(&mut doc) {
            Ok(()) => assert!(doc.is_object()),
            Err(_) => assert_eq!(doc, before, "a failed update changed the document"),
        }
    }
}

/// A keyed request as a client seals it for the node `to` (for tests that replay one).
pub fn seal_request(
    key: &ClusterKey,
    to: &str,
    rid: Bytes,
    kind: crate::medium::MessageKind,
    body: Bytes,
) -> Vec<Bytes> {
    let kind = Bytes::from_static(kind.as_str().as_bytes());
    crate::medium::envelope::seal_request(Some(key), Some(to), rid, kind, body)
}
