//! UDP multicast discovery, as in the original ZeroServices: every node sends its announcement
//! to a group every heartbeat and listens on the same group.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};

use async_trait::async_trait;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{Discovery, DiscoveryContext, Heard};
use crate::cluster_key::{open_datagram, seal_datagram, ClusterKey};
use crate::error::Result;
use crate::protocol::{AnnounceKind, Announcement, MAX_DATAGRAM_BYTES};

/// Group, port, interface and TTL of multicast discovery.
#[derive(Debug, Clone)]
pub struct MulticastConfig {
    /// Multicast group (default 237.252.249.227, as the original).
    pub group: Ipv4Addr,
    /// UDP port (default 32000).
    pub port: u16,
    /// Interface address to join and send on (default: chosen by the kernel's routes).
    pub interface: Ipv4Addr,
    /// Multicast TTL (default 1: the local network only).
    pub ttl: u32,
}

impl Default for MulticastConfig {
    fn default() -> Self {
        MulticastConfig {
            group: Ipv4Addr::new(237, 252, 249, 227),
            port: 32000,
            interface: Ipv4Addr::UNSPECIFIED,
            ttl: 1,
        }
    }
}

/// Multicast discovery.
#[derive(Debug, Default)]
pub struct MulticastDiscovery {
    cfg: MulticastConfig,
}

impl MulticastDiscovery {
    /// Discovery with the given settings.
    pub fn new(cfg: MulticastConfig) -> MulticastDiscovery {
        MulticastDiscovery { cfg }
    }

    fn socket(&self) -> std::io::Result<UdpSocket> {
        let cfg = &self.cfg;
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        // Several nodes on one host share the port; each receives every datagram.
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        // Binding the group address (Linux) keeps unicast traffic to this port out.
        s.bind(&SocketAddr::V4(SocketAddrV4::new(cfg.group, cfg.port)).into())?;
        s.join_multicast_v4(&cfg.group, &cfg.interface)?;
        s.set_multicast_loop_v4(true)?;
        s.set_multicast_ttl_v4(cfg.ttl)?;
        if !cfg.interface.is_unspecified() {
            s.set_multicast_if_v4(&cfg.interface)?;
        }
        s.set_nonblocking(true)?;
        UdpSocket::from_std(s.into())
    }
}

#[async_trait]
impl Discovery for MulticastDiscovery {
    async fn run(self: Box<Self>, mut ctx: DiscoveryContext) -> Result<()> {
        let sock = self.socket()?;
        let to = SocketAddr::V4(SocketAddrV4::new(self.cfg.group, self.cfg.port));
        let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
        let mut tick = tokio::time::interval(ctx.heartbeat);
        let my_id = ctx.me.borrow().node_id.clone();
        let key_holder = ctx.cluster_key.clone();
        let key = key_holder.as_deref();
        loop {
            tokio::select! {
                _ = ctx.shutdown.cancelled() => break,
                _ = tick.tick() => {
                    let me = ctx.me.borrow().clone();
                    send(&sock, to, &me, key).await;
                }
                changed = ctx.me.changed() => {
                    if changed.is_err() { break; }
                    let me = ctx.me.borrow_and_update().clone();
                    send(&sock, to, &me, key).await;
                }
                got = sock.recv_from(&mut buf) => {
                    let (n, from) = match got {
                        Ok(x) => x,
                        Err(e) => { tracing::warn!(error = %e, "discovery: receive failed"); continue; }
                    };
                    let body = match key {
                        Some(k) => match open_datagram(k, &buf[..n]) {
                            Ok(b) => b,
                            Err(e) => {
                                tracing::warn!(%from, error = %e, "discovery: dropped a datagram");
                                continue;
                            }
                        },
                        None => &buf[..n],
                    };
                    match Announcement::decode(body) {
                        Ok(a) if a.node_id == my_id => {} // our own announcement, looped back
                        Ok(a) => {
                            let source: Option<IpAddr> = Some(from.ip()).filter(|ip| !ip.is_unspecified());
                            if ctx.heard.send(Heard { announcement: a, source, direct: true }).await.is_err() {
                                break;
                            }
                        }
                        Err(e) => tracing::warn!(%from, error = %e, "discovery: dropped a malformed datagram"),
                    }
                }
            }
        }
        let mut bye = ctx.me.borrow().clone();
        bye.kind = AnnounceKind::Bye;
        send(&sock, to, &bye, key).await;
        Ok(())
    }
}

async fn send(sock: &UdpSocket, to: SocketAddr, me: &Announcement, key: Option<&ClusterKey>) {
    let body = me.encode();
    let datagram = match key {
        Some(k) => seal_datagram(k, &body),
        None => body.to_vec(),
    };
    if let Err(e) = sock.send_to(&datagram, to).await {
        tracing::warn!(error = %e, "discovery: announce failed");
    }
}
