//! Entry points for the fuzz targets in `fuzz/` (not a stable API).

use bytes::Bytes;

use crate::cluster_key::{open_datagram, ClusterKey};
use crate::protocol::{decode_reply, Announcement};

/// Everything a node does with a received discovery datagram, with and without a cluster key.
pub fn datagram(data: &[u8]) {
    let _ = Announcement::decode(data);
    let key = ClusterKey::new(b"fuzzing-key-fuzzing-key");
    if let Ok(body) = open_datagram(&key, data) {
        let _ = Announcement::decode(body);
    }
}

/// Everything a ROUTER does with a received message (frames split at 0xFF bytes), with and
/// without a cluster key, and what a DEALER does with a reply body.
pub fn frames(data: &[u8]) {
    let frames: Vec<Bytes> = data
        .split(|b| *b == 0xFF)
        .map(Bytes::copy_from_slice)
        .collect();
    let key = ClusterKey::new(b"fuzzing-key-fuzzing-key");
    crate::medium::classify_for_fuzzing(frames.clone(), None);
    crate::medium::classify_for_fuzzing(frames, Some(&key));
    let _ = decode_reply(data);
}
