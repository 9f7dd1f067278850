//! The frames of requests, replies and events, and the protocol rules every medium applies to
//! them in this one place: frame counts, the cluster key's authenticator, the body size limit,
//! and the kinds answered without the node (`ping`) or refused (unknown kinds, stray replies).
//!
//! A medium only moves frame lists: it seals what it sends and opens what it receives with the
//! functions here, so a rule added here holds on every medium (see docs/protocol.md §3, §5, §7).

use std::sync::Arc;

use bytes::Bytes;

use super::Event;
use crate::cluster_key::ClusterKey;
use crate::error::Error;
use crate::protocol::{encode_reply, kind, MAX_BODY_BYTES};

/// A message kind a node handles, parsed once from the kind frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// `request`: for the service's `on_message`, answered.
    Request,
    /// `notify`: for `on_message`, never answered.
    Notify,
    /// `resource`: a resource action, answered.
    Resource,
    /// `announce`: static discovery, answered with the directory.
    Announce,
    /// `claim`: a worker's lease on a resource, answered.
    Claim,
    /// `ping`: liveness and round-trip time, answered `{}` by the receiving medium itself
    /// (a node never sees one).
    Ping,
}

impl MessageKind {
    /// The wire name of this kind.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Request => kind::REQUEST,
            MessageKind::Notify => kind::NOTIFY,
            MessageKind::Resource => kind::RESOURCE,
            MessageKind::Announce => kind::ANNOUNCE,
            MessageKind::Claim => kind::CLAIM,
            MessageKind::Ping => kind::PING,
        }
    }
}

impl std::fmt::Display for MessageKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to do with a received request.
#[derive(Debug)]
pub(crate) enum Opened {
    /// Not answerable (wrong frames, failed authentication, a stray reply): log and drop.
    Drop(&'static str),
    /// Answered at once by the receiving medium with this reply body: `ping`, an oversized
    /// body, an unknown kind. The node never sees it.
    Answer {
        /// The request id to echo.
        rid: Bytes,
        /// The reply body.
        body: Bytes,
    },
    /// For the node. `rid` is `None` for one-way messages (no reply is sent).
    Deliver {
        /// The request id to echo, if a reply is expected.
        rid: Option<Bytes>,
        /// The parsed kind.
        kind: MessageKind,
        /// The JSON body as received.
        body: Bytes,
    },
}

/// A shared cluster key, or none (open cluster).
pub(crate) type Key = Option<Arc<ClusterKey>>;

fn with_auth(key: Option<&ClusterKey>, mut frames: Vec<Bytes>) -> Vec<Bytes> {
    if let Some(k) = key {
        let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        let auth = k.sign(&parts);
        frames.push(auth);
    }
    frames
}

/// Checks and strips the authenticator frame when a key is set: `frames` must then hold
/// exactly `n + 1` frames. Without a key, exactly `n`.
fn check_auth(
    key: Option<&ClusterKey>,
    mut frames: Vec<Bytes>,
    n: usize,
    what: &'static str,
) -> Result<Vec<Bytes>, &'static str> {
    let Some(k) = key else {
        return if frames.len() == n {
            Ok(frames)
        } else {
            Err(what)
        };
    };
    if frames.len() != n + 1 {
        return Err("unauthenticated message (cluster key required)");
    }
    let auth = frames.pop().unwrap_or_default(); // len is n + 1 ≥ 1
    let parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    verify(k, &parts, &auth).map(|()| frames)
}

fn verify(k: &ClusterKey, parts: &[&[u8]], auth: &[u8]) -> Result<(), &'static str> {
    k.verify(parts, auth).map_err(|e| {
        tracing::debug!(error = %e, "authentication failed");
        "message failed authentication"
    })
}

/// Who a keyed request is for (see docs/protocol.md §7): the receiving node's id, or `*`
/// for `ping` and `announce`, which a node also sends to a seed it knows only by an address
/// the user typed. The request's authenticator frame is `<audience>|<ts>.<nonce>.<mac>`, the
/// MAC covering the frames and `to:<audience>`; a node drops a request for another node, so
/// a request captured on its way to one provider cannot be replayed to another within the
/// replay window.
fn audience<'a>(kind: &[u8], to: Option<&'a str>) -> &'a str {
    if for_anyone(kind) {
        "*"
    } else {
        to.unwrap_or("*")
    }
}

/// The kinds any node may answer (see [`audience`]).
fn for_anyone(kind: &[u8]) -> bool {
    kind == kind::PING.as_bytes() || kind == kind::ANNOUNCE.as_bytes()
}

fn audience_part(audience: &str) -> Vec<u8> {
    [b"to:".as_slice(), audience.as_bytes()].concat()
}

/// Checks a request's authenticator frame (see [`audience`]) as the node `me` receives it.
fn check_request_auth(
    k: &ClusterKey,
    mut frames: Vec<Bytes>,
    me: Option<&str>,
) -> Result<Vec<Bytes>, &'static str> {
    if frames.len() != 4 {
        return Err("unauthenticated message (cluster key required)");
    }
    let auth = frames.pop().unwrap_or_default(); // len is 4
    let split = auth
        .iter()
        .position(|b| *b == b'|')
        .ok_or("malformed authenticator")?;
    let to = std::str::from_utf8(&auth[..split]).map_err(|_| "malformed authenticator")?;
    match (to == "*", for_anyone(&frames[1])) {
        (true, true) => {}
        (false, false) if me.is_some_and(|me| me != to) => {
            return Err("a request for another node")
        }
        (false, false) => {}
        _ => return Err("a request whose audience does not fit its kind"),
    }
    let aud = audience_part(to);
    let mut parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
    parts.push(&aud);
    verify(k, &parts, &auth[split + 1..]).map(|()| frames)
}

/// Refuses, before anything is sent, a body or event payload over the protocol's limit: a
/// receiver would not read it (on ZeroMQ the connection would be closed).
pub(crate) fn check_size(body: &[u8]) -> crate::error::Result<()> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::TooLarge(format!(
            "{} bytes (the limit is {MAX_BODY_BYTES})",
            body.len()
        )));
    }
    Ok(())
}

/// The frames of a request to the node `to` (its node id; `None` when only its address is
/// known): `[request_id, kind, body]` (+ the authenticator, naming `to`: see [`audience`]).
pub(crate) fn seal_request(
    key: Option<&ClusterKey>,
    to: Option<&str>,
    rid: Bytes,
    kind: Bytes,
    body: Bytes,
) -> Vec<Bytes> {
    let mut frames = vec![rid, kind, body];
    if let Some(k) = key {
        let to = audience(&frames[1], to);
        let aud = audience_part(to);
        let mut parts: Vec<&[u8]> = frames.iter().map(|f| &f[..]).collect();
        parts.push(&aud);
        let sig = k.sign(&parts);
        frames.push(Bytes::from([to.as_bytes(), b"|", &sig].concat()));
    }
    frames
}

/// Applies the protocol's rules to a request received by the node `me` (`None`: a medium
/// used without a node, which takes keyed requests for any node); `frames` without any
/// routing identity.
pub(crate) fn open_request(
    key: Option<&ClusterKey>,
    me: Option<&str>,
    frames: Vec<Bytes>,
) -> Opened {
    let frames = match key {
        Some(k) => check_request_auth(k, frames, me),
        None if frames.len() == 3 => Ok(frames),
        None => Err("expected 3 frames: request_id, kind, body"),
    };
    let frames = match frames {
        Ok(f) => f,
        Err(why) => return Opened::Drop(why),
    };
    let Ok([rid, kind_frame, body]) = <[Bytes; 3]>::try_from(frames) else {
        return Opened::Drop("expected 3 frames: request_id, kind, body");
    };
    let Ok(kind_str) = std::str::from_utf8(&kind_frame) else {
        return Opened::Drop("kind frame is not UTF-8");
    };
    let answer = |rid: Bytes, e: Error| Opened::Answer {
        rid,
        body: encode_reply(&Err(e)),
    };
    let kind = match kind_str {
        kind::PING => {
            return Opened::Answer {
                rid,
                body: Bytes::from_static(br#"{"ok":true,"data":{}}"#),
            }
        }
        kind::REPLY => return Opened::Drop("unsolicited reply"),
        kind::NOTIFY => MessageKind::Notify,
        kind::REQUEST => MessageKind::Request,
        kind::RESOURCE => MessageKind::Resource,
        kind::ANNOUNCE => MessageKind::Announce,
        kind::CLAIM => MessageKind::Claim,
        other => {
            tracing::debug!(kind = other, "unknown message type");
            if kind_str.len() > 64 {
                return answer(rid, Error::BadRequest("unknown message type".into()));
            }
            return answer(
                rid,
                Error::BadRequest(format!("unknown message type {other:?}")),
            );
        }
    };
    if body.len() > MAX_BODY_BYTES {
        if kind == MessageKind::Notify {
            return Opened::Drop("oversized one-way message");
        }
        return answer(
            rid,
            Error::TooLarge(format!("body of {} bytes", body.len())),
        );
    }
    let rid = (kind != MessageKind::Notify).then_some(rid);
    Opened::Deliver { rid, kind, body }
}

/// The frames of a reply: `[request_id, "reply", body]` (+ authenticator).
pub(crate) fn seal_reply(key: Option<&ClusterKey>, rid: Bytes, body: Bytes) -> Vec<Bytes> {
    with_auth(
        key,
        vec![rid, Bytes::from_static(kind::REPLY.as_bytes()), body],
    )
}

/// Checks a received reply; returns its request id and body.
pub(crate) fn open_reply(
    key: Option<&ClusterKey>,
    frames: Vec<Bytes>,
) -> Result<(Bytes, Bytes), &'static str> {
    let frames = check_auth(key, frames, 3, "a reply without 3 frames")?;
    let Ok([rid, kind_frame, body]) = <[Bytes; 3]>::try_from(frames) else {
        return Err("a reply without 3 frames");
    };
    if &kind_frame[..] != kind::REPLY.as_bytes() {
        return Err("a reply whose kind is not `reply`");
    }
    Ok((rid, body))
}

/// The frames of an event: `[topic, payload]` (+ authenticator).
pub(crate) fn seal_event(key: Option<&ClusterKey>, topic: &str, payload: Bytes) -> Vec<Bytes> {
    with_auth(key, vec![Bytes::copy_from_slice(topic.as_bytes()), payload])
}

/// Checks a received event.
pub(crate) fn open_event(
    key: Option<&ClusterKey>,
    frames: Vec<Bytes>,
) -> Result<Event, &'static str> {
    let frames = check_auth(key, frames, 2, "an event without exactly 2 frames")?;
    let Ok([topic, payload]) = <[Bytes; 2]>::try_from(frames) else {
        return Err("an event without exactly 2 frames");
    };
    let Ok(topic) = std::str::from_utf8(&topic) else {
        return Err("an event with a non-UTF-8 topic");
    };
    if payload.len() > MAX_BODY_BYTES {
        return Err("an oversized event");
    }
    Ok(Event {
        topic: Arc::from(topic),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "node-a";

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    fn k(s: &'static str) -> Bytes {
        b(s)
    }

    #[test]
    fn ping_is_answered_here() {
        let f = seal_request(None, Some(ME), b("7"), k(kind::PING), b("{}"));
        let Opened::Answer { rid, body } = open_request(None, Some(ME), f) else {
            panic!("ping not answered")
        };
        assert_eq!(rid, b("7"));
        assert_eq!(
            crate::protocol::decode_reply(&body).ok(),
            Some(serde_json::json!({}))
        );
    }

    #[test]
    fn oversized_body_is_refused_with_too_large() {
        let big = Bytes::from(vec![b'x'; MAX_BODY_BYTES + 1]);
        let f = seal_request(None, Some(ME), b("1"), k(kind::RESOURCE), big);
        let Opened::Answer { body, .. } = open_request(None, Some(ME), f) else {
            panic!("not answered")
        };
        assert!(matches!(
            crate::protocol::decode_reply(&body),
            Err(Error::TooLarge(_))
        ));
    }

    #[test]
    fn unknown_kind_is_a_bad_request_and_a_reply_is_dropped() {
        let f = seal_request(None, Some(ME), b("1"), k("frobnicate"), b("{}"));
        assert!(matches!(
            open_request(None, Some(ME), f),
            Opened::Answer { .. }
        ));
        let f = seal_request(None, Some(ME), b("1"), k(kind::REPLY), b("{}"));
        assert!(matches!(open_request(None, Some(ME), f), Opened::Drop(_)));
        assert!(matches!(
            open_request(None, Some(ME), vec![b("1"), b("request")]),
            Opened::Drop(_)
        ));
    }

    #[test]
    fn notify_has_no_request_id() {
        let f = seal_request(None, Some(ME), b("1"), k(kind::NOTIFY), b("{}"));
        assert!(matches!(
            open_request(None, Some(ME), f),
            Opened::Deliver {
                rid: None,
                kind: MessageKind::Notify,
                ..
            }
        ));
    }

    #[test]
    fn the_cluster_key_is_required_and_checked() {
        let key = ClusterKey::new(b"0123456789abcdef");
        let other = ClusterKey::new(b"fedcba9876543210");
        let sealed = seal_request(Some(&key), Some(ME), b("1"), k(kind::REQUEST), b("{}"));
        assert!(matches!(
            open_request(Some(&key), Some(ME), sealed.clone()),
            Opened::Deliver { .. }
        ));
        assert!(
            matches!(open_request(Some(&key), Some(ME), sealed), Opened::Drop(_)),
            "replay"
        );
        let plain = seal_request(None, Some(ME), b("1"), k(kind::REQUEST), b("{}"));
        assert!(matches!(
            open_request(Some(&key), Some(ME), plain),
            Opened::Drop(_)
        ));
        let forged = seal_request(Some(&other), Some(ME), b("1"), k(kind::PING), b("{}"));
        assert!(matches!(
            open_request(Some(&key), Some(ME), forged),
            Opened::Drop(_)
        ));
        let ev = seal_event(Some(&key), "power.create.1", b("{}"));
        assert!(open_event(Some(&key), ev).is_ok());
        assert!(open_event(Some(&key), seal_event(None, "a", b("{}"))).is_err());
        let r = seal_reply(Some(&key), b("9"), b("{}"));
        assert_eq!(open_reply(Some(&key), r).map(|(rid, _)| rid), Ok(b("9")));
    }

    #[test]
    fn a_keyed_request_is_refused_by_any_node_but_the_one_it_was_sent_to() {
        let key = ClusterKey::new(b"0123456789abcdef");
        let other_node = ClusterKey::new(b"0123456789abcdef"); // same key, its own replay cache
        let sealed = seal_request(Some(&key), Some(ME), b("1"), k(kind::RESOURCE), b("{}"));
        let elsewhere = Some("node-b");
        assert!(matches!(
            open_request(Some(&other_node), elsewhere, sealed.clone()),
            Opened::Drop(_)
        ));
        assert!(matches!(
            open_request(Some(&key), Some(ME), sealed),
            Opened::Deliver { .. }
        ));
        // A ping or an announce request is for whoever is at the address the sender knows;
        // any other request must name its node.
        let ping = seal_request(Some(&key), None, b("2"), k(kind::PING), b("{}"));
        assert!(matches!(
            open_request(Some(&other_node), elsewhere, ping),
            Opened::Answer { .. }
        ));
        let anyone = seal_request(Some(&key), None, b("3"), k(kind::RESOURCE), b("{}"));
        assert!(matches!(
            open_request(Some(&key), Some(ME), anyone),
            Opened::Drop(_)
        ));
    }
}
