//! What a collection remembers of recently used documents (the state it last wrote or read,
//! with the version), so a patch usually takes one round trip.

use std::collections::{HashMap, VecDeque};

use mongodb::bson::Bson;
use serde_json::Value;

/// How many documents a collection remembers by default for one-round-trip patches.
pub(crate) const DEFAULT_RECENT: usize = 10_000;

/// Which stored document, at which version: what a compare-and-swap write needs.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The stored `_id` (an ObjectId or a string).
    pub(crate) id: Bson,
    /// Its `_v`, `None` for a document written without ZeroServices.
    pub(crate) version: Option<i64>,
}

/// A document's state as this node last wrote or read it.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) at: Stored,
    pub(crate) data: Value,
}

/// Recently used documents, at most `capacity` of them and about [`RECENT_BYTES`] of data, the
/// oldest forgotten first. A document bigger than [`RECENT_MAX_DOC`] is not remembered.
#[derive(Debug)]
pub(crate) struct Recent {
    capacity: usize,
    map: HashMap<String, (Known, usize)>,
    order: VecDeque<String>,
    bytes: usize,
}

/// Memory the remembered documents may take, roughly.
const RECENT_BYTES: usize = 64 * 1024 * 1024;
/// Largest document remembered, roughly.
const RECENT_MAX_DOC: usize = 1024 * 1024;

/// Rough heap size of a JSON value.
fn approx_size(v: &Value) -> usize {
    match v {
        Value::String(s) => 32 + s.len(),
        Value::Array(a) => 32 + a.iter().map(approx_size).sum::<usize>(),
        Value::Object(o) => {
            64 + o
                .iter()
                .map(|(k, v)| 32 + k.len() + approx_size(v))
                .sum::<usize>()
        }
        _ => 16,
    }
}

impl Recent {
    pub(crate) fn new(capacity: usize) -> Recent {
        Recent {
            capacity,
            map: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    pub(crate) fn remember(&mut self, id: &str, known: Known) {
        self.forget(id);
        let size = approx_size(&known.data) + id.len();
        if self.capacity == 0 || size > RECENT_MAX_DOC {
            return;
        }
        while self.map.len() >= self.capacity || self.bytes + size > RECENT_BYTES {
            match self.order.pop_front() {
                Some(old) => self.forget(&old),
                None => break,
            }
        }
        self.bytes += size;
        self.map.insert(id.to_owned(), (known, size));
        self.order.push_back(id.to_owned());
        if self.order.len() > 2 * self.capacity {
            // Drop the places of forgotten (and re-remembered) ids, keeping the newest.
            let mut seen = std::collections::HashSet::new();
            let mut kept: VecDeque<String> = self
                .order
                .drain(..)
                .rev()
                .filter(|k| self.map.contains_key(k) && seen.insert(k.clone()))
                .collect();
            kept.make_contiguous().reverse();
            self.order = kept;
        }
    }

    pub(crate) fn forget(&mut self, id: &str) {
        // Its place in `order` goes when it reaches the front (removing a missing key is fine).
        if let Some((_, size)) = self.map.remove(id) {
            self.bytes -= size;
        }
    }

    pub(crate) fn get(&self, id: &str) -> Option<Known> {
        self.map.get(id).map(|(k, _)| k.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn known(data: Value) -> Known {
        Known {
            at: Stored {
                id: Bson::String("x".into()),
                version: Some(1),
            },
            data,
        }
    }

    #[test]
    fn recent_documents_stay_within_count_and_bytes() {
        let mut r = Recent::new(3);
        for i in 0..10 {
            r.remember(&format!("d{i}"), known(json!({"i": i})));
            r.remember("d0", known(json!({"i": 0}))); // re-remembered: moves, never duplicates
        }
        assert!(r.map.len() <= 3, "{}", r.map.len());
        assert!(r.get("d9").is_some() && r.get("d0").is_some() && r.get("d1").is_none());
        let total: usize = r.map.values().map(|(_, s)| s).sum();
        assert_eq!(r.bytes, total);

        let big = json!({"blob": "x".repeat(RECENT_MAX_DOC)});
        r.remember("d9", known(big));
        assert!(
            r.get("d9").is_none(),
            "a huge document replaces nothing and is not kept"
        );

        let mut r = Recent::new(1_000_000);
        let half_mib = json!({"blob": "x".repeat(512 * 1024)});
        for i in 0..300 {
            r.remember(&format!("b{i}"), known(half_mib.clone()));
        }
        assert!(r.bytes <= RECENT_BYTES, "{} bytes remembered", r.bytes);
        assert!(r.get("b299").is_some() && r.get("b0").is_none());
        r.forget("b299");
        let total: usize = r.map.values().map(|(_, s)| s).sum();
        assert_eq!(r.bytes, total);
    }
}
