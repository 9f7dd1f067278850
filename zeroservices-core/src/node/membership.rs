//! Membership: announcements heard, peers joining and leaving, heartbeat expiry and pings,
//! and the discovery task.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{NodeHandle, PeerEvent, MISSED_HEARTBEATS};
use crate::directory::{resolve_endpoint, Upsert};
use crate::discovery::{Discovery, DiscoveryContext, Heard};
use crate::protocol::{AnnounceKind, Announcement};

impl NodeHandle {
    /// Adds a peer by hand (as if announced).
    pub async fn add_peer(&self, a: Announcement) {
        self.handle_heard(Heard {
            announcement: a,
            source: None,
            direct: true,
        })
        .await;
    }

    pub(super) async fn handle_heard(&self, h: Heard) {
        let mut a = h.announcement;
        if a.node_id == self.inner.node_id {
            return;
        }
        a.endpoints.request = resolve_endpoint(&a.endpoints.request, h.source);
        a.endpoints.publish = resolve_endpoint(&a.endpoints.publish, h.source);
        if a.kind == AnnounceKind::Bye {
            if let Some(p) = self.inner.directory.remove(&a.node_id) {
                self.peer_left(p.announcement).await;
            }
            return;
        }
        let provides_mine = a.collections.iter().any(|c| self.hosted(c).is_some());
        let before = self
            .inner
            .directory
            .peer(&a.node_id)
            .map(|p| p.announcement.endpoints);
        match self.inner.directory.upsert(a.clone(), h.direct) {
            Upsert::Joined { replaced, evicted } => {
                for old in replaced.into_iter().chain(evicted).map(|b| *b) {
                    self.peer_left(old.announcement).await;
                }
                self.connect(&a).await;
                // Shown only now: a caller that sees the peer finds its connection.
                self.inner.directory.connected(&a.node_id);
                tracing::info!(peer = %a.name, node_id = %a.node_id, "peer joined");
                let _ = self.inner.peer_events.send(PeerEvent::Joined(a.clone()));
                // Measure the round-trip time at once, so /health and `nodes` show it.
                let (n, id, limit) = (
                    self.clone(),
                    a.node_id.clone(),
                    self.inner.heartbeat.max(Duration::from_millis(100)),
                );
                self.inner.tracker.spawn(async move {
                    if let Ok(Ok(rtt)) = tokio::time::timeout(limit, n.ping(&id)).await {
                        n.inner.directory.set_rtt(&id, rtt);
                    }
                });
                let n = self.clone();
                self.inner
                    .tracker
                    .spawn(async move { n.inner.service.on_peer_join(&n, &a).await });
            }
            Upsert::Refused => {
                tracing::debug!(peer = %a.node_id, "peer table full of verified peers; announcement ignored");
            }
            // The same node_id at new endpoints: a node with a durable identity restarted
            // before it expired here. Its old connections lead nowhere.
            Upsert::Updated if before.is_some_and(|b| b != a.endpoints) => {
                tracing::info!(peer = %a.name, node_id = %a.node_id, "peer restarted at new endpoints");
                self.inner.medium.disconnect_peer(&a.node_id).await;
                self.connect(&a).await;
            }
            Upsert::Updated | Upsert::Refreshed | Upsert::Ignored => {}
        }
        if provides_mine {
            self.refuse_split_collections();
        }
    }

    /// Stops serving each collection that a peer serves from another store which came first
    /// (see [`crate::protocol::store_winner`]): two unshared stores behind one collection would
    /// split its data. The refusal is logged and announced (`nodes` shows it).
    pub(super) fn refuse_split_collections(&self) {
        let me = self.announcement();
        let peers = self.inner.directory.peers();
        for c in &me.collections {
            let Some(mine) = me.stores.get(c) else {
                continue;
            };
            let providers: Vec<&Announcement> = peers
                .iter()
                .filter(|p| !p.down && p.announcement.collections.contains(c))
                .map(|p| &p.announcement)
                .collect();
            fn store<'a>(a: &'a Announcement, c: &str) -> &'a str {
                a.stores.get(c).map_or("", String::as_str)
            }
            let candidates = providers
                .iter()
                .map(|a| (store(a, c), a.started_ms, a.node_id.as_str()))
                .chain(std::iter::once((
                    mine.as_str(),
                    me.started_ms,
                    me.node_id.as_str(),
                )));
            let Some(winner) = crate::protocol::store_winner(candidates) else {
                continue;
            };
            if winner == mine {
                continue;
            }
            let first = providers.iter().find(|a| store(a, c) == winner);
            let reason = format!(
                "{c:?} is already served by {} ({}) from another store ({winner}); this node's store ({mine}) is not shared with it, and serving both would split the data. Point every provider of {c:?} at one shared store (e.g. one MongoDB database) or give this collection another name.",
                first.map_or("?", |a| a.name.as_str()),
                first.map_or("?", |a| a.node_id.as_str()),
            );
            tracing::error!(collection = %c, "refusing to serve: {reason}");
            self.inner.hosted.write().remove(c);
            self.inner.me.send_modify(|me| {
                me.collections.retain(|x| x != c);
                me.stores.remove(c);
                me.refused.insert(c.clone(), reason);
            });
            self.inner.serve_collections(self.local_collections());
        }
    }

    /// Opens the connections to a peer (a failure is logged: discovery tries again).
    async fn connect(&self, a: &Announcement) {
        if let Err(e) = self
            .inner
            .medium
            .connect_peer(&a.node_id, &a.endpoints)
            .await
        {
            tracing::warn!(peer = %a.node_id, error = %e, "cannot connect to peer");
        }
    }

    pub(super) async fn peer_left(&self, a: Announcement) {
        self.inner.medium.disconnect_peer(&a.node_id).await;
        tracing::info!(peer = %a.name, node_id = %a.node_id, "peer left");
        let _ = self.inner.peer_events.send(PeerEvent::Left(a.clone()));
        let n = self.clone();
        self.inner
            .tracker
            .spawn(async move { n.inner.service.on_peer_leave(&n, &a).await });
    }
}

pub(super) async fn heard_loop(node: NodeHandle, mut rx: mpsc::Receiver<Heard>) {
    loop {
        tokio::select! {
            _ = node.inner.shutdown.cancelled() => return,
            h = rx.recv() => match h {
                Some(h) => node.handle_heard(h).await,
                None => return,
            },
        }
    }
}

pub(super) async fn housekeeping(node: NodeHandle) {
    // Expiry is checked 4 times per heartbeat so a dead peer is noticed soon after its third
    // missed heartbeat; pings go out once per heartbeat.
    let mut tick = tokio::time::interval(node.inner.heartbeat / 4);
    let mut round: u64 = 0;
    loop {
        tokio::select! {
            _ = node.inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        round += 1;
        for gone in node.inner.directory.expire(MISSED_HEARTBEATS) {
            tracing::info!(peer = %gone.announcement.name, "peer silent for {MISSED_HEARTBEATS} heartbeats");
            node.peer_left(gone.announcement).await;
        }
        if round % 4 != 1 {
            continue;
        }
        for p in node.inner.directory.peers() {
            let n = node.clone();
            let id = p.announcement.node_id;
            let limit = node.inner.heartbeat;
            node.inner.tracker.spawn(async move {
                if let Ok(Ok(rtt)) = tokio::time::timeout(limit, n.ping(&id)).await {
                    n.inner.directory.set_rtt(&id, rtt);
                }
            });
        }
    }
}

pub(super) async fn run_discovery(d: Box<dyn Discovery>, ctx: DiscoveryContext) {
    if let Err(e) = d.run(ctx).await {
        tracing::error!(error = %e, "discovery stopped");
    }
}
