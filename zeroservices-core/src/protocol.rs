//! Wire format shared by every medium and discovery: announcements, request/reply frames, events.
//!
//! The normative description is `docs/protocol.md`; this module is its implementation. Version
//! [`PROTOCOL_VERSION`] is carried by every announcement; a peer with another major version is
//! ignored (and logged).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// Version of the wire protocol described in `docs/protocol.md`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest datagram, frame body or event payload a node accepts (bytes); bigger ones are dropped.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Largest discovery datagram (bytes).
pub(crate) const MAX_DATAGRAM_BYTES: usize = 8 * 1024;

/// Message kinds (second frame of a request).
pub(crate) mod kind {
    /// A user message answered by the service's `on_message` hook; expects a reply.
    pub(crate) const REQUEST: &str = "request";
    /// A one-way user message; never answered.
    pub(crate) const NOTIFY: &str = "notify";
    /// A resource action (`{"collection","action","args"}`); expects a reply.
    pub(crate) const RESOURCE: &str = "resource";
    /// Liveness and round-trip probe; answered with `{}`.
    pub(crate) const PING: &str = "ping";
    /// Static discovery: the body is an [`Announcement`](super::Announcement); the reply is
    /// `{"node": Announcement, "peers": [Announcement]}`.
    pub(crate) const ANNOUNCE: &str = "announce";
    /// Worker groups: take, renew or release a lease on one resource for one rule
    /// (see `node::claims`); answered with `{"granted": bool, "resource": ...}`.
    pub(crate) const CLAIM: &str = "claim";
    /// Reply frame kind.
    pub(crate) const REPLY: &str = "reply";
}

/// Role of a node in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum NodeType {
    /// Serves collections or requests.
    #[default]
    Service,
    /// Reacts to events.
    Worker,
    /// Fronts the cluster over HTTP.
    Api,
    /// Only listens (sniffer, `nodes`).
    Observer,
}

impl NodeType {
    /// Lower-case name as on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeType::Service => "service",
            NodeType::Worker => "worker",
            NodeType::Api => "api",
            NodeType::Observer => "observer",
        }
    }
}

/// `announce` (I am here, re-sent every heartbeat) or `bye` (I am leaving).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AnnounceKind {
    /// Periodic presence.
    #[default]
    Announce,
    /// Graceful departure.
    Bye,
}

/// Where a node can be reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Endpoints {
    /// ROUTER endpoint taking requests, e.g. `tcp://127.0.0.1:41234`.
    pub request: String,
    /// PUB endpoint publishing events.
    pub publish: String,
}

/// What a node says about itself: a discovery datagram, a static-discovery `announce` body, and
/// the directory's record of a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub version: u32,
    /// `announce` or `bye`.
    #[serde(default)]
    pub kind: AnnounceKind,
    /// Unique per process run.
    pub node_id: String,
    /// Human name (several nodes may share one).
    pub name: String,
    /// Role.
    #[serde(default)]
    pub node_type: NodeType,
    /// Collections this node provides.
    #[serde(default)]
    pub collections: Vec<String>,
    /// Request and publish endpoints.
    pub endpoints: Endpoints,
    /// Announce period in milliseconds (peers use it to decide when this node is gone).
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Identity of the store behind each provided collection ([`crate::resources::Collection::identity`]):
    /// requests are spread only over providers sharing one (see docs/architecture.md, "Store identity").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stores: BTreeMap<String, String>,
    /// When this node started, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub started_ms: u64,
    /// Collections this node refused to serve, each with the reason (shown by `nodes`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, String>,
}

/// Of the providers of one collection, given as `(store identity, started_ms, node_id)`, the
/// store identity that serves it: the one of the provider that started first (ties: the
/// smaller node id). Providers announcing no identity (older nodes) are left out.
pub(crate) fn store_winner<'a>(
    providers: impl Iterator<Item = (&'a str, u64, &'a str)>,
) -> Option<&'a str> {
    providers
        .filter(|(store, _, _)| !store.is_empty())
        .min_by(|a, b| (a.1, a.2).cmp(&(b.1, b.2)))
        .map(|(store, _, _)| store)
}

fn default_heartbeat_ms() -> u64 {
    1000
}

impl Announcement {
    /// Parses and checks an announcement (version, field sizes). Never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Announcement> {
        if bytes.len() > MAX_DATAGRAM_BYTES {
            return Err(Error::TooLarge(format!(
                "announcement of {} bytes",
                bytes.len()
            )));
        }
        let a: Announcement = serde_json::from_slice(bytes)?;
        if a.version != PROTOCOL_VERSION {
            return Err(Error::BadRequest(format!(
                "unsupported protocol version {}",
                a.version
            )));
        }
        if a.node_id.is_empty() || a.node_id.len() > 128 {
            return Err(Error::BadRequest("node_id must be 1-128 bytes".into()));
        }
        for ep in [&a.endpoints.request, &a.endpoints.publish] {
            if !["tcp://", "mem://", "nats:"]
                .iter()
                .any(|p| ep.starts_with(p))
            {
                return Err(Error::BadRequest(format!("unsupported endpoint {ep:?}")));
            }
        }
        let long =
            |m: &BTreeMap<String, String>| m.iter().any(|(k, v)| k.len() > 512 || v.len() > 512);
        if a.stores.len() > a.collections.len() || long(&a.stores) || long(&a.refused) {
            return Err(Error::BadRequest("stores or refused out of bounds".into()));
        }
        if a.heartbeat_ms == 0 || a.heartbeat_ms > 60_000 {
            return Err(Error::BadRequest("heartbeat_ms must be 1..=60000".into()));
        }
        Ok(a)
    }

    /// JSON bytes of this announcement.
    pub fn encode(&self) -> Bytes {
        // Serializing a struct of strings and integers cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The body of a reply frame: `{"ok": true, "data": ...}` or `{"ok": false, "error": {...}}`.
pub fn encode_reply(result: &Result<Value>) -> Bytes {
    // Serialized from borrowed parts: `json!` would first copy the whole result.
    #[derive(Serialize)]
    struct WireError<'a> {
        code: &'a str,
        message: String,
    }
    #[derive(Serialize)]
    struct Reply<'a> {
        ok: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<WireError<'a>>,
    }
    let reply = match result {
        Ok(data) => Reply {
            ok: true,
            data: Some(data),
            error: None,
        },
        Err(e) => Reply {
            ok: false,
            data: None,
            error: Some(WireError {
                code: e.code(),
                message: e.wire_message(),
            }),
        },
    };
    match serde_json::to_vec(&reply) {
        Ok(b) => Bytes::from(b),
        // Values hold string keys only, so this does not happen; answer an error anyway.
        Err(e) => Bytes::from(
            serde_json::json!({"ok": false, "error": {"code": "internal", "message": e.to_string()}})
                .to_string(),
        ),
    }
}

/// A successful reply body around a result that already is JSON (not parsed again).
pub(crate) fn encode_json_reply(data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 20);
    out.extend_from_slice(br#"{"ok":true,"data":"#);
    out.extend_from_slice(data);
    out.push(b'}');
    Bytes::from(out)
}

/// The `data` of a successful reply body as JSON bytes (a slice of `body`, not a copy), or the
/// error it carries.
pub(crate) fn reply_data(body: &Bytes) -> Result<Bytes> {
    #[derive(Deserialize)]
    struct Reply<'a> {
        ok: bool,
        #[serde(borrow, default)]
        data: Option<&'a serde_json::value::RawValue>,
    }
    let r: Reply<'_> = serde_json::from_slice(body)
        .map_err(|e| Error::Transport(format!("malformed reply: {e}")))?;
    match (r.ok, r.data) {
        (true, Some(d)) => Ok(body.slice_ref(d.get().as_bytes())),
        (true, None) => Ok(Bytes::from_static(b"null")),
        (false, _) => decode_reply(body).map(|_| Bytes::from_static(b"null")),
    }
}

/// Parses a reply body back into the result the remote handler returned.
pub fn decode_reply(body: &[u8]) -> Result<Value> {
    #[derive(Deserialize)]
    struct WireError {
        code: String,
        #[serde(default)]
        message: String,
    }
    #[derive(Deserialize)]
    struct Reply {
        ok: bool,
        #[serde(default)]
        data: Value,
        error: Option<WireError>,
    }
    let r: Reply = serde_json::from_slice(body)
        .map_err(|e| Error::Transport(format!("malformed reply: {e}")))?;
    if r.ok {
        Ok(r.data)
    } else {
        let e = r.error.unwrap_or(WireError {
            code: "internal".into(),
            message: String::new(),
        });
        Err(Error::from_wire(&e.code, e.message))
    }
}

/// True when `topic` is `prefix` or lies under it at a dot boundary (`power` covers
/// `power.patch.42` but not `powerplant.create.1`). The empty prefix and `*` cover everything.
pub fn topic_matches(prefix: &str, topic: &str) -> bool {
    if prefix.is_empty() || prefix == "*" {
        return true;
    }
    match topic.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('.'),
        None => false,
    }
}

/// Every subscription prefix that covers `topic` besides `""` and `*`: the topic cut before
/// each dot, and the whole topic. A set of subscribed prefixes covers the topic exactly when
/// it holds `""`, `*` or one of these (the same rule as [`topic_matches`]), so matching costs
/// the topic's segments, not the number of subscriptions.
pub fn covering_prefixes(topic: &str) -> impl Iterator<Item = &str> {
    topic
        .match_indices('.')
        .map(move |(i, _)| &topic[..i])
        .chain(std::iter::once(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_prefixes_agree_with_topic_matches() {
        let topics = [
            "power.create.1",
            "power",
            "power.",
            "power..x",
            "a.b",
            ".x",
            "",
        ];
        let prefixes = [
            "power",
            "power.create",
            "power.create.1",
            "power.",
            "pow",
            "a",
            ".x",
            "",
            "*",
        ];
        for t in topics {
            for p in prefixes {
                let by_set = p.is_empty() || p == "*" || covering_prefixes(t).any(|c| c == p);
                assert_eq!(by_set, topic_matches(p, t), "prefix {p:?} topic {t:?}");
            }
        }
    }

    #[test]
    fn prefixes_match_at_dot_boundaries() {
        assert!(topic_matches("power", "power.create.1"));
        assert!(topic_matches("power.patch", "power.patch.42"));
        assert!(topic_matches("power.patch.42", "power.patch.42"));
        assert!(!topic_matches("power", "powerplant.create.1"));
        assert!(!topic_matches("power.patch.4", "power.patch.42"));
        assert!(topic_matches("*", "anything"));
        assert!(topic_matches("", "anything"));
    }

    #[test]
    fn hostile_datagrams_are_rejected_not_panicking() {
        let bad: [&[u8]; 6] = [
            b"",
            b"\xff\xfe",
            b"{}",
            b"[1,2,3]",
            br#"{"version":99,"node_id":"a","name":"n","endpoints":{"request":"tcp://x:1","publish":"tcp://x:2"}}"#,
            br#"{"version":1,"node_id":"a","name":"n","endpoints":{"request":"http://x","publish":"tcp://x:2"}}"#,
        ];
        for b in bad {
            assert!(Announcement::decode(b).is_err(), "{b:?}");
        }
        assert!(Announcement::decode(&vec![b' '; MAX_DATAGRAM_BYTES + 1]).is_err());
    }

    #[test]
    fn replies_round_trip() {
        let ok = encode_reply(&Ok(serde_json::json!({"a": 1})));
        assert_eq!(decode_reply(&ok).unwrap(), serde_json::json!({"a": 1}));
        let err = encode_reply(&Err(Error::Conflict("taken".into())));
        assert!(matches!(decode_reply(&err), Err(Error::Conflict(m)) if m == "taken"));
        assert!(matches!(decode_reply(b"garbage"), Err(Error::Transport(_))));
    }
}
