//! The directory: which peers are alive, what they provide, how to reach them and how fast they
//! answer. One per node, shared by cheap clones.

use parking_lot::{Mutex, MutexGuard};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::Announcement;

/// What the directory knows about one peer.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's latest announcement (endpoints already resolved).
    pub announcement: Announcement,
    /// When the peer was last heard directly.
    pub last_seen: Instant,
    /// Round-trip time of the latest ping, if any answered. A peer that never answered is
    /// "unverified": under a flood of announcements it is the first to be evicted.
    pub rtt: Option<Duration>,
    /// Its connection was refused or reset: no request goes to it until it announces itself
    /// again.
    pub down: bool,
}

/// Peers the directory holds at most. Past it, a newcomer evicts the stalest peer that never
/// answered a ping, or is refused when every peer has answered.
pub(crate) const MAX_PEERS: usize = 1024;
/// New peers admitted per second at most: a flood of forged announcements (each a new node id)
/// costs a parse each, not a connection each; real newcomers re-announce and get in a moment
/// later.
pub(crate) const MAX_JOINS_PER_SECOND: u32 = 256;
/// Collection names remembered at most (for 503 rather than 404 once their providers left).
pub(crate) const MAX_SEEN_COLLECTIONS: usize = 4096;

/// Result of recording an announcement.
#[derive(Debug)]
pub enum Upsert {
    /// A peer not known before; `replaced` is an older node at the same request endpoint (a
    /// restart with a new node_id), now removed.
    Joined {
        /// The node this one replaces, if any.
        replaced: Option<Box<PeerInfo>>,
        /// A peer that never answered, evicted to make room (the table is full).
        evicted: Option<Box<PeerInfo>>,
    },
    /// Not recorded: the table is full of peers that answered, or too many peers joined in
    /// the last second.
    Refused,
    /// A known peer changed its announcement (e.g. its collections).
    Updated,
    /// A known peer, unchanged.
    Refreshed,
    /// A relayed announcement of a peer already known: nothing changed.
    Ignored,
}

/// Shared view of the cluster. Cloning is cheap.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    // A blocking (parking_lot) Mutex: every operation is a short map update; never held across an await.
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    peers: HashMap<String, PeerInfo>,
    /// Every collection name ever provided by a peer (to tell "gone" (503) from "unknown" (404)).
    seen: BTreeSet<String>,
    /// Round-robin cursor per collection.
    cursor: HashMap<String, usize>,
    /// Start of the current one-second join window and the peers admitted in it.
    joins: Option<(Instant, u32)>,
    /// Peers admitted but not yet connected by the medium: recorded (so a repeat announcement
    /// is not a second join) but not shown, since a request to them would find no connection.
    joining: HashSet<String>,
}

/// Replaces a `0.0.0.0` host in `tcp://0.0.0.0:PORT` by `source` (or 127.0.0.1 when unknown).
pub(crate) fn resolve_endpoint(ep: &str, source: Option<IpAddr>) -> String {
    match ep.strip_prefix("tcp://0.0.0.0:") {
        Some(port) => {
            let host = match source {
                Some(IpAddr::V4(ip)) => ip.to_string(),
                Some(IpAddr::V6(ip)) => format!("[{ip}]"),
                None => "127.0.0.1".to_owned(),
            };
            format!("tcp://{host}:{port}")
        }
        None => ep.to_owned(),
    }
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Directory {
        Directory::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain maps stay consistent even if a holder panicked.
        self.inner.lock()
    }

    /// Records an announcement (endpoints must already be resolved).
    pub fn upsert(&self, a: Announcement, direct: bool) -> Upsert {
        let mut inner = self.lock();
        for c in &a.collections {
            if inner.seen.len() >= MAX_SEEN_COLLECTIONS {
                break;
            }
            if !inner.seen.contains(c) {
                inner.seen.insert(c.clone());
            }
        }
        let now = Instant::now();
        if let Some(p) = inner.peers.get_mut(&a.node_id) {
            if !direct {
                return Upsert::Ignored;
            }
            p.last_seen = now;
            p.down = false;
            if p.announcement != a {
                p.announcement = a;
                return Upsert::Updated;
            }
            return Upsert::Refreshed;
        }
        let same_endpoint = inner
            .peers
            .values()
            .find(|p| p.announcement.endpoints.request == a.endpoints.request);
        // A node restarted at the same endpoint replaces its old entry, unless that one is
        // verifiably alive (answered a ping, seen within its heartbeat, connection up): then
        // the newcomer is a stranger claiming a live peer's endpoint. A real restart gets in
        // once the old entry goes quiet (a heartbeat) or its connection breaks.
        if same_endpoint.is_some_and(|p| {
            p.rtt.is_some()
                && !p.down
                && now.duration_since(p.last_seen)
                    <= Duration::from_millis(p.announcement.heartbeat_ms)
        }) {
            return Upsert::Refused;
        }
        let old_id = same_endpoint.map(|p| p.announcement.node_id.clone());
        let window = match inner.joins {
            Some((start, n)) if now.duration_since(start) < Duration::from_secs(1) => (start, n),
            _ => (now, 0),
        };
        if window.1 >= MAX_JOINS_PER_SECOND {
            return Upsert::Refused;
        }
        inner.joins = Some((window.0, window.1 + 1));
        let replaced = old_id.and_then(|id| inner.peers.remove(&id)).map(Box::new);
        let mut evicted = None;
        if inner.peers.len() >= MAX_PEERS {
            let stalest = inner
                .peers
                .values()
                .filter(|p| p.rtt.is_none())
                .min_by_key(|p| p.last_seen)
                .map(|p| p.announcement.node_id.clone());
            match stalest {
                Some(id) => evicted = inner.peers.remove(&id).map(Box::new),
                None => return Upsert::Refused,
            }
        }
        inner.joining.insert(a.node_id.clone());
        inner.peers.insert(
            a.node_id.clone(),
            PeerInfo {
                announcement: a,
                last_seen: now,
                rtt: None,
                down: false,
            },
        );
        Upsert::Joined { replaced, evicted }
    }

    /// Marks a peer whose connection was refused or reset: it is not picked as a provider
    /// until its next direct announcement.
    pub fn mark_down(&self, node_id: &str) {
        if let Some(p) = self.lock().peers.get_mut(node_id) {
            p.down = true;
        }
    }

    /// Shows a peer that [`Upsert::Joined`] admitted, once the medium has connected it: until
    /// then `peers`, `peer` and the provider lookups leave it out.
    pub fn connected(&self, node_id: &str) {
        self.lock().joining.remove(node_id);
    }

    /// Forgets a peer; returns what was known of it.
    pub fn remove(&self, node_id: &str) -> Option<PeerInfo> {
        let mut inner = self.lock();
        inner.joining.remove(node_id);
        inner.peers.remove(node_id)
    }

    /// Removes and returns peers silent for more than `missed` of their own heartbeats.
    pub fn expire(&self, missed: u32) -> Vec<PeerInfo> {
        let now = Instant::now();
        let mut inner = self.lock();
        let dead: Vec<String> = inner
            .peers
            .values()
            .filter(|p| {
                let limit = Duration::from_millis(p.announcement.heartbeat_ms) * missed;
                now.duration_since(p.last_seen) > limit
            })
            .map(|p| p.announcement.node_id.clone())
            .collect();
        for id in &dead {
            inner.joining.remove(id);
        }
        dead.iter()
            .filter_map(|id| inner.peers.remove(id))
            .collect()
    }

    /// Records a measured round-trip time. A peer that answered a ping is alive: it counts as
    /// seen now, so a flood that crowds its announcements out of the discovery socket does not
    /// expire it.
    pub fn set_rtt(&self, node_id: &str, rtt: Duration) {
        if let Some(p) = self.lock().peers.get_mut(node_id) {
            p.rtt = Some(rtt);
            p.last_seen = Instant::now();
        }
    }

    /// Every live peer.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let inner = self.lock();
        let mut v: Vec<PeerInfo> = shown(&inner).cloned().collect();
        drop(inner);
        v.sort_by(|a, b| a.announcement.name.cmp(&b.announcement.name));
        v
    }

    /// One peer.
    pub fn peer(&self, node_id: &str) -> Option<PeerInfo> {
        let inner = self.lock();
        if inner.joining.contains(node_id) {
            return None;
        }
        inner.peers.get(node_id).cloned()
    }

    /// Node ids of live peers providing `collection` from the store that serves it (see
    /// `store_winner`: a provider with another, unshared store is left out).
    pub fn providers(&self, collection: &str) -> Vec<String> {
        let inner = self.lock();
        let mut v: Vec<String> = serving(&inner, collection)
            .map(|p| p.announcement.node_id.clone())
            .collect();
        v.sort();
        v
    }

    /// Picks the next provider of `collection` in round-robin order, skipping `exclude`. Peers
    /// that have answered a ping come first: one that never did (just joined, or a forged
    /// announcement) is picked only when no other is left.
    pub fn pick_provider(&self, collection: &str, exclude: &[String]) -> Option<String> {
        let mut inner = self.lock();
        let mut candidates: Vec<(bool, &String)> = serving(&inner, collection)
            .filter(|p| !exclude.contains(&p.announcement.node_id))
            .map(|p| (p.rtt.is_some(), &p.announcement.node_id))
            .collect();
        if candidates.iter().any(|(verified, _)| *verified) {
            candidates.retain(|(verified, _)| *verified);
        }
        if candidates.is_empty() {
            return None;
        }
        candidates.sort_unstable_by(|a, b| a.1.cmp(b.1));
        let n = candidates.len();
        let chosen_index = inner
            .cursor
            .get(collection)
            .copied()
            .unwrap_or(0)
            .wrapping_add(1);
        let chosen = candidates[chosen_index % n].1.clone();
        inner.cursor.insert(collection.to_owned(), chosen_index);
        Some(chosen)
    }

    /// Collections provided by live peers.
    pub fn live_collections(&self) -> BTreeSet<String> {
        let inner = self.lock();
        shown(&inner)
            .flat_map(|p| p.announcement.collections.iter().cloned())
            .collect()
    }

    /// True when some peer has ever provided `collection`.
    pub fn has_seen(&self, collection: &str) -> bool {
        self.lock().seen.contains(collection)
    }

    /// Every collection ever provided by a peer.
    pub fn seen_collections(&self) -> BTreeSet<String> {
        self.lock().seen.clone()
    }
}

/// Peers admitted and connected (see [`Directory::connected`]).
fn shown(inner: &Inner) -> impl Iterator<Item = &PeerInfo> {
    inner
        .peers
        .values()
        .filter(|p| !inner.joining.contains(&p.announcement.node_id))
}

/// Live providers of `collection` whose store is the one serving it.
fn serving<'a>(inner: &'a Inner, collection: &'a str) -> impl Iterator<Item = &'a PeerInfo> + 'a {
    let store = |p: &'a PeerInfo| {
        p.announcement
            .stores
            .get(collection)
            .map_or("", String::as_str)
    };
    let live = move || {
        shown(inner)
            .filter(move |p| !p.down && p.announcement.collections.iter().any(|c| c == collection))
    };
    let winner = crate::protocol::store_winner(live().map(|p| {
        (
            store(p),
            p.announcement.started_ms,
            p.announcement.node_id.as_str(),
        )
    }));
    live().filter(move |p| winner.is_none_or(|w| store(p).is_empty() || store(p) == w))
}

#[cfg(test)]
mod tests;
