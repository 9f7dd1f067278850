//! Static discovery: announce to seed request endpoints (and every peer learned from them)
//! through the node's medium, for clouds and containers where multicast does not pass.
//!
//! Each heartbeat the node sends an `announce` request to every seed and known peer; the reply
//! carries the peer's own announcement and the peers it knows, so one seed is enough to learn
//! the whole cluster.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Discovery, DiscoveryContext, Heard};
use crate::error::Result;
use crate::medium::MessageKind;
use crate::protocol::{decode_reply, AnnounceKind, Announcement};

/// Discovery from seed endpoints such as `tcp://10.0.0.5:5555` (a seed node's request endpoint).
#[derive(Debug)]
pub struct StaticDiscovery {
    seeds: Vec<String>,
}

impl StaticDiscovery {
    /// Discovery seeded with these ROUTER endpoints.
    pub fn new(seeds: impl IntoIterator<Item = impl Into<String>>) -> StaticDiscovery {
        StaticDiscovery {
            seeds: seeds.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Deserialize)]
struct AnnounceReply {
    node: Announcement,
    #[serde(default)]
    peers: Vec<Announcement>,
}

#[async_trait]
impl Discovery for StaticDiscovery {
    async fn run(self: Box<Self>, ctx: DiscoveryContext) -> Result<()> {
        let mut tick = tokio::time::interval(ctx.heartbeat);
        let timeout = ctx.heartbeat.max(Duration::from_millis(200));
        let mut targets_now: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let me = ctx.me.borrow().clone();
            targets_now = targets(&self.seeds, &ctx, &me);
            ctx.medium.forget_endpoints(&targets_now);
            let body = me.encode();
            let calls = targets_now.iter().map(|ep| {
                let (medium, body) = (ctx.medium.clone(), body.clone());
                async move {
                    let reply = medium
                        .request_endpoint(ep, MessageKind::Announce, body, timeout)
                        .await;
                    (ep.clone(), reply)
                }
            });
            for (ep, res) in futures::future::join_all(calls).await {
                let reply = res
                    .and_then(|b| decode_reply(&b))
                    .and_then(|v| serde_json::from_value::<AnnounceReply>(v).map_err(Into::into));
                match reply {
                    Ok(r) => {
                        let mut heard = vec![Heard {
                            announcement: r.node,
                            source: None,
                            direct: true,
                        }];
                        heard.extend(r.peers.into_iter().filter(|p| p.node_id != me.node_id).map(
                            |p| Heard {
                                announcement: p,
                                source: None,
                                direct: false,
                            },
                        ));
                        for h in heard {
                            if ctx.heard.send(h).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(endpoint = %ep, error = %e, "static discovery: no answer")
                    }
                }
            }
        }
        // Say bye to everyone we know, briefly; a peer that does not answer finds out by timeout.
        let mut bye = ctx.me.borrow().clone();
        bye.kind = AnnounceKind::Bye;
        let body = bye.encode();
        let calls = targets_now.iter().map(|ep| {
            ctx.medium.request_endpoint(
                ep,
                MessageKind::Announce,
                body.clone(),
                Duration::from_millis(300),
            )
        });
        let _ = futures::future::join_all(calls).await;
        ctx.medium.forget_endpoints(&[]);
        Ok(())
    }
}

fn targets(seeds: &[String], ctx: &DiscoveryContext, me: &Announcement) -> Vec<String> {
    let mut t: Vec<String> = seeds.to_vec();
    for p in ctx.directory.peers() {
        t.push(p.announcement.endpoints.request);
    }
    t.retain(|ep| *ep != me.endpoints.request);
    t.sort();
    t.dedup();
    t
}
