//! [`NatsDiscovery`]: announcements on `<prefix>.announce`, sealed with the cluster key as
//! multicast datagrams are. A node announces every heartbeat and whenever its announcement
//! changes, and once more (at most every 100 ms) when it hears a node it did not know, so a
//! newcomer learns the cluster at once instead of after a heartbeat.

use std::time::{Duration, Instant};

use async_nats::Client;
use async_trait::async_trait;
use futures::StreamExt as _;

use crate::cluster_key::{open_datagram, seal_datagram, ClusterKey};
use crate::discovery::{Discovery, DiscoveryContext, Heard};
use crate::error::{Error, Result};
use crate::medium::NatsMedium;
use crate::protocol::{AnnounceKind, Announcement};

/// Finds peers through the NATS server of a [`NatsMedium`] (see the module doc). A node on
/// NATS uses it whatever discovery was set.
#[derive(Debug)]
pub struct NatsDiscovery {
    client: Client,
    subject: String,
}

impl NatsDiscovery {
    /// Announces on the server and subject of `medium`.
    pub fn new(medium: &NatsMedium) -> NatsDiscovery {
        NatsDiscovery {
            client: medium.client(),
            subject: medium.announce_subject(),
        }
    }

    async fn send(&self, me: &Announcement, key: Option<&ClusterKey>) {
        let body = me.encode();
        let payload = match key {
            Some(k) => seal_datagram(k, &body).into(),
            None => body,
        };
        if let Err(e) = self.client.publish(self.subject.clone(), payload).await {
            tracing::warn!(error = %e, "discovery: announce on NATS failed");
        }
    }
}

#[async_trait]
impl Discovery for NatsDiscovery {
    async fn run(self: Box<Self>, mut ctx: DiscoveryContext) -> Result<()> {
        let mut sub = self
            .client
            .subscribe(self.subject.clone())
            .await
            .map_err(|e| Error::Transport(format!("subscribing to {}: {e}", self.subject)))?;
        let key_holder = ctx.cluster_key.clone();
        let key = key_holder.as_deref();
        let my_id = ctx.me.borrow().node_id.clone();
        let mut tick = tokio::time::interval(ctx.heartbeat);
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let me = ctx.me.borrow().clone();
                    self.send(&me, key).await;
                    last_sent = Instant::now();
                }
                changed = ctx.me.changed() => {
                    if changed.is_err() { break; }
                    let me = ctx.me.borrow_and_update().clone();
                    self.send(&me, key).await;
                    last_sent = Instant::now();
                }
                msg = sub.next() => {
                    let Some(msg) = msg else { break };
                    let body = match key {
                        Some(k) => match open_datagram(k, &msg.payload) {
                            Ok(b) => b,
                            Err(e) => {
                                tracing::warn!(error = %e, "discovery: dropped an announcement");
                                continue;
                            }
                        },
                        None => &msg.payload[..],
                    };
                    let a = match Announcement::decode(body) {
                        Ok(a) if a.node_id == my_id => continue,
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "discovery: dropped a malformed announcement");
                            continue;
                        }
                    };
                    let newcomer = a.kind == AnnounceKind::Announce && ctx.directory.peer(&a.node_id).is_none();
                    if ctx.heard.send(Heard { announcement: a, source: None, direct: true }).await.is_err() {
                        break;
                    }
                    if newcomer && last_sent.elapsed() > Duration::from_millis(100) {
                        let me = ctx.me.borrow().clone();
                        self.send(&me, key).await;
                        last_sent = Instant::now();
                    }
                }
            }
        }
        let mut bye = ctx.me.borrow().clone();
        bye.kind = AnnounceKind::Bye;
        self.send(&bye, key).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.client.flush()).await;
        Ok(())
    }
}
