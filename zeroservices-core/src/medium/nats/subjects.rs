//! How the protocol maps onto NATS: subjects for requests, events and announcements, topic
//! tokens encoded so any collection name or id is a valid subject token, subscription prefixes
//! turned into the fewest subject patterns, and frame lists packed into one message payload.
//!
//! ```text
//! <prefix>.req.<collection>      resource requests, queue group of the collection's providers
//! <prefix>.node.<medium id>      requests to one node
//! <prefix>.ev.<topic tokens>     events (captured by the JetStream stream when there is one)
//! <prefix>.announce              announcements and byes
//! ```

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

/// Frames a packed payload may hold (requests have at most 4: rid, kind, body, auth).
const MAX_FRAMES: usize = 8;

/// Encodes one topic token as a NATS subject token: kept as it is when it holds only ASCII
/// letters, digits, `-` and `_`; otherwise `~` and its URL-safe base64 (so `.`, `*`, `>`,
/// spaces, unicode and the empty token all become valid, and decoding is unambiguous: a
/// kept token never starts with `~`).
pub(crate) fn encode_token(token: &str) -> String {
    let plain = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        token.to_owned()
    } else {
        format!("~{}", URL_SAFE_NO_PAD.encode(token.as_bytes()))
    }
}

/// Decodes what [`encode_token`] made; `None` for a token it cannot have made.
#[cfg(test)]
pub(crate) fn decode_token(token: &str) -> Option<String> {
    match token.strip_prefix('~') {
        Some(b64) => String::from_utf8(URL_SAFE_NO_PAD.decode(b64).ok()?).ok(),
        None => Some(token.to_owned()),
    }
}

/// `<prefix>.ev.` followed by every dot-separated token of `topic`, each encoded.
pub(crate) fn event_subject(prefix: &str, topic: &str) -> String {
    let mut s = format!("{prefix}.ev");
    for t in topic.split('.') {
        s.push('.');
        s.push_str(&encode_token(t));
    }
    s
}

/// The topic an event subject carries, `None` when it is not one.
#[cfg(test)]
pub(crate) fn topic_of(prefix: &str, subject: &str) -> Option<String> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix(".ev.")?;
    let tokens: Option<Vec<String>> = rest.split('.').map(decode_token).collect();
    Some(tokens?.join("."))
}

/// The subject of a collection's resource requests (and its queue group's name).
pub(crate) fn collection_subject(prefix: &str, collection: &str) -> String {
    format!("{prefix}.req.{}", encode_token(collection))
}

/// The subject announcements travel on.
pub(crate) fn announce_subject(prefix: &str) -> String {
    format!("{prefix}.announce")
}

/// The subject patterns that deliver exactly the topics matching `prefixes` (token-wise, as
/// [`crate::protocol::topic_matches`]), with none covered by another, so that no event arrives
/// twice. A prefix `p` needs `<ev>.p` (the topic `p` itself) and `<ev>.p.>`; `""` and `*`
/// need `<ev>.>`.
pub(crate) fn event_patterns(prefix: &str, prefixes: &[String]) -> Vec<String> {
    // (tokens, wildcard): wildcard = "and everything below".
    let mut wanted: Vec<(Vec<String>, bool)> = Vec::new();
    for p in prefixes {
        if p.is_empty() || p == "*" {
            wanted.push((Vec::new(), true));
            continue;
        }
        let tokens: Vec<String> = p.split('.').map(encode_token).collect();
        wanted.push((tokens.clone(), false));
        wanted.push((tokens, true));
    }
    let covers = |a: &(Vec<String>, bool), b: &(Vec<String>, bool)| -> bool {
        // `a` wildcard covers `b` when a's tokens start b's, strictly for an exact `b`.
        a.1 && b.0.starts_with(&a.0) && (b.1 || b.0.len() > a.0.len())
    };
    wanted.sort();
    wanted.dedup();
    let kept: Vec<&(Vec<String>, bool)> = wanted
        .iter()
        .filter(|w| !wanted.iter().any(|o| o != *w && covers(o, w)))
        .collect();
    kept.into_iter()
        .map(|(tokens, wild)| {
            let mut s = format!("{prefix}.ev");
            for t in tokens {
                s.push('.');
                s.push_str(t);
            }
            if *wild {
                s.push_str(".>");
            }
            s
        })
        .collect()
}

/// Packs frames into one payload: a count byte, then per frame a big-endian u32 length and
/// its bytes.
pub(crate) fn pack(frames: &[Bytes]) -> Bytes {
    let len: usize = frames.iter().map(|f| 4 + f.len()).sum();
    let mut b = BytesMut::with_capacity(1 + len);
    b.put_u8(u8::try_from(frames.len()).unwrap_or(u8::MAX));
    for f in frames {
        b.put_u32(u32::try_from(f.len()).unwrap_or(u32::MAX));
        b.put_slice(f);
    }
    b.freeze()
}

/// Unpacks what [`pack`] made, without copying; `None` for anything malformed (a count over
/// [`MAX_FRAMES`], a length past the end, bytes left over).
pub(crate) fn unpack(payload: &Bytes) -> Option<Vec<Bytes>> {
    let (&count, mut rest) = payload.split_first()?;
    let count = usize::from(count);
    if count > MAX_FRAMES {
        return None;
    }
    let mut frames = Vec::with_capacity(count);
    let mut at = 1;
    for _ in 0..count {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
        if tail.len() < len {
            return None;
        }
        frames.push(payload.slice(at + 4..at + 4 + len));
        at += 4 + len;
        rest = &tail[len..];
    }
    rest.is_empty().then_some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_are_valid_subject_tokens() {
        for t in [
            "power",
            "a-b_c",
            "",
            "with space",
            "a.b",
            "*",
            ">",
            "~x",
            "é",
        ] {
            let e = encode_token(t);
            assert!(!e.is_empty());
            assert!(!e.contains(['.', ' ', '*', '>', '\t']), "{e}");
            assert_eq!(decode_token(&e).as_deref(), Some(t));
        }
        assert_eq!(encode_token("power"), "power");
    }

    #[test]
    fn event_subjects_map_every_token() {
        let s = event_subject("zs", "power.create.a b");
        assert_eq!(s, "zs.ev.power.create.~YSBi");
        assert_eq!(topic_of("zs", &s).as_deref(), Some("power.create.a b"));
    }

    #[test]
    fn patterns_cover_without_overlap() {
        let p =
            |v: &[&str]| event_patterns("zs", &v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(p(&["", "power"]), vec!["zs.ev.>"]);
        assert_eq!(p(&["power"]), vec!["zs.ev.power", "zs.ev.power.>"]);
        assert_eq!(
            p(&["power", "power.create", "todo.update"]),
            vec![
                "zs.ev.power",
                "zs.ev.power.>",
                "zs.ev.todo.update",
                "zs.ev.todo.update.>"
            ]
        );
        assert!(p(&[]).is_empty());
    }

    #[test]
    fn packing_round_trips_and_refuses_malformed_payloads() {
        let frames = vec![
            Bytes::from_static(b"1"),
            Bytes::new(),
            Bytes::from(vec![7; 300]),
        ];
        let packed = pack(&frames);
        assert_eq!(unpack(&packed), Some(frames));
        assert_eq!(unpack(&Bytes::new()), None);
        assert_eq!(unpack(&Bytes::from_static(&[9])), None);
        assert_eq!(unpack(&Bytes::from_static(&[1, 0, 0, 0, 5, 1])), None);
        assert_eq!(unpack(&Bytes::from_static(&[1, 0, 0, 0, 0, 1])), None);
        assert_eq!(unpack(&Bytes::from_static(&[1, 255, 255, 255, 255])), None);
    }
}
