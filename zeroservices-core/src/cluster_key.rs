//! The optional cluster key: with a shared secret configured, every discovery datagram,
//! request, reply and event carries an authenticator, and anything without a valid one is
//! dropped. See docs/security.md for the threat model.
//!
//! An authenticator is `<ts>.<nonce>.<mac>`: `ts` the sender's clock in milliseconds, `nonce`
//! 16 random bytes in hex, `mac` the hex HMAC-SHA256 under the key of the length-prefixed
//! message parts, `ts` and `nonce`. A receiver accepts it once: within ±30 s of its own
//! clock and with a nonce it has not seen in that window (replays are dropped).
//!
//! ```
//! use zeroservices_core::ClusterKey;
//! let key = ClusterKey::new(b"correct horse battery staple");
//! let auth = key.sign(&[b"topic", b"{}"]);
//! assert!(key.verify(&[b"topic", b"{}"], &auth).is_ok());
//! assert!(key.verify(&[b"topic", b"{}"], &auth).is_err(), "a replay is refused");
//! assert!(ClusterKey::new(b"other").verify(&[b"topic", b"{}"], &key.sign(&[b"topic", b"{}"])).is_err());
//! ```

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, Result};

/// Largest clock difference (and replay memory) accepted.
pub(crate) const WINDOW: Duration = Duration::from_secs(30);
/// What the subscriber password authenticates (no message has this shape: messages are
/// length-prefixed parts followed by a timestamp and a nonce).
#[cfg(feature = "zmq")]
const SUBSCRIBER_LABEL: &[u8] = b"zeroservices subscriber v1";
/// Nonces remembered at most (older ones are forgotten first).
const MAX_NONCES: usize = 1 << 20;

/// A shared cluster secret with its replay cache. Share one `Arc` per node.
pub struct ClusterKey {
    key: Vec<u8>,
    // A blocking (parking_lot) Mutex: one insert per verified message; never held across an await.
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

#[derive(Default)]
struct Seen {
    set: HashMap<[u8; 16], u64>,
    order: VecDeque<([u8; 16], u64)>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl ClusterKey {
    /// A key from a shared secret (use at least 16 random bytes).
    pub fn new(secret: &[u8]) -> Arc<ClusterKey> {
        Arc::new(ClusterKey {
            key: secret.to_vec(),
            seen: Mutex::new(Seen::default()),
        })
    }

    fn mac(&self, parts: &[&[u8]], ts: u64, nonce: &[u8; 16]) -> [u8; 32] {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        for p in parts {
            m.update(&(p.len() as u64).to_be_bytes());
            m.update(p);
        }
        m.update(&ts.to_be_bytes());
        m.update(nonce);
        m.finalize().into_bytes().into()
    }

    #[cfg(feature = "zmq")]
    fn subscriber_mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut m =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!());
        m.update(SUBSCRIBER_LABEL);
        m
    }

    /// The password a subscriber presents to a keyed publisher (ZeroMQ PLAIN, see
    /// docs/security.md): the hex HMAC of a fixed label, the same for every node of the cluster.
    #[cfg(feature = "zmq")]
    pub(crate) fn subscriber_password(&self) -> String {
        hex(&self.subscriber_mac().finalize().into_bytes())
    }

    /// Whether `password` is [`ClusterKey::subscriber_password`] (compared in constant time).
    #[cfg(feature = "zmq")]
    pub(crate) fn check_subscriber_password(&self, password: &[u8]) -> bool {
        let Some(mac) = std::str::from_utf8(password).ok().and_then(unhex::<32>) else {
            return false;
        };
        self.subscriber_mac().verify_slice(&mac).is_ok()
    }

    /// The authenticator of a message made of `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> Bytes {
        let nonce: [u8; 16] = rand::random();
        let ts = now_ms();
        let mac = self.mac(parts, ts, &nonce);
        Bytes::from(format!("{ts}.{}.{}", hex(&nonce), hex(&mac)))
    }

    /// Checks an authenticator: MAC, clock window and first use of the nonce.
    pub fn verify(&self, parts: &[&[u8]], auth: &[u8]) -> Result<()> {
        let bad = |why: &str| Error::Forbidden(format!("cluster key: {why}"));
        let text = std::str::from_utf8(auth).map_err(|_| bad("malformed authenticator"))?;
        let mut it = text.split('.');
        let (Some(ts), Some(nonce), Some(mac), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad("malformed authenticator"));
        };
        let ts: u64 = ts.parse().map_err(|_| bad("malformed timestamp"))?;
        let nonce: [u8; 16] = unhex(nonce).ok_or_else(|| bad("malformed nonce"))?;
        let mac: [u8; 32] = unhex(mac).ok_or_else(|| bad("malformed mac"))?;
        let expected = self.mac(parts, ts, &nonce);
        // Constant-time comparison.
        if expected
            .iter()
            .zip(mac.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
        {
            return Err(bad("wrong mac (another key, or altered)"));
        }
        let now = now_ms();
        let window = WINDOW.as_millis() as u64;
        if ts + window < now || ts > now + window {
            return Err(bad("timestamp outside the window"));
        }
        let mut seen = self.seen.lock();
        while let Some((n, t)) = seen.order.front().copied() {
            if t + 2 * window < now || seen.order.len() >= MAX_NONCES {
                seen.order.pop_front();
                seen.set.remove(&n);
            } else {
                break;
            }
        }
        if seen.set.insert(nonce, ts).is_some() {
            return Err(bad("replayed message"));
        }
        seen.order.push_back((nonce, ts));
        Ok(())
    }
}

/// Prefix of an authenticated discovery datagram: `ZSA1|<authenticator>|<announcement>`.
pub(crate) const DATAGRAM_PREFIX: &[u8] = b"ZSA1|";

/// Wraps a datagram body with its authenticator.
pub(crate) fn seal_datagram(key: &ClusterKey, body: &[u8]) -> Vec<u8> {
    let auth = key.sign(&[body]);
    let mut out = Vec::with_capacity(DATAGRAM_PREFIX.len() + auth.len() + 1 + body.len());
    out.extend_from_slice(DATAGRAM_PREFIX);
    out.extend_from_slice(&auth);
    out.push(b'|');
    out.extend_from_slice(body);
    out
}

/// Checks and unwraps an authenticated datagram.
pub(crate) fn open_datagram<'a>(key: &ClusterKey, datagram: &'a [u8]) -> Result<&'a [u8]> {
    let rest = datagram
        .strip_prefix(DATAGRAM_PREFIX)
        .ok_or_else(|| Error::Forbidden("cluster key: unauthenticated datagram".into()))?;
    let split = rest
        .iter()
        .position(|b| *b == b'|')
        .ok_or_else(|| Error::Forbidden("cluster key: malformed datagram".into()))?;
    let (auth, body) = (&rest[..split], &rest[split + 1..]);
    key.verify(&[body], auth)?;
    Ok(body)
}
