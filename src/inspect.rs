//! `sniff` (print every event) and `nodes` (list the cluster): observer nodes that look at
//! the cluster and change nothing.

use std::time::Duration;

use serde_json::json;
use zeroservices::core::{Node, NodeType, PeerEvent};
use zeroservices::options::{stop_signal, ClusterArgs};

/// Prints every event on `topic` until SIGINT/SIGTERM.
pub(crate) async fn run_sniff(
    topic: String,
    as_json: bool,
    cluster: ClusterArgs,
) -> anyhow::Result<()> {
    let node = cluster
        .apply(Node::builder("sniffer").node_type(NodeType::Observer))?
        .start()
        .await?;
    let mut sub = node.subscribe(&topic);
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        let ev = tokio::select! {
            _ = &mut stop => break,
            ev = sub.recv() => match ev { Some(e) => e, None => break },
        };
        let data = ev
            .json()
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&ev.payload)));
        if as_json {
            println!("{}", json!({"topic": &*ev.topic, "event": data}));
        } else {
            println!("{:<40} {}", ev.topic, data);
        }
    }
    node.shutdown().await;
    Ok(())
}

/// Lists the peers heard within `wait` seconds (then, with `watch`, arrivals and departures).
pub(crate) async fn run_nodes(
    as_json: bool,
    wait: f64,
    watch: bool,
    cluster: ClusterArgs,
) -> anyhow::Result<()> {
    let node = cluster
        .apply(Node::builder("nodes").node_type(NodeType::Observer))?
        .start()
        .await?;
    let mut events = node.peer_events();
    tokio::time::sleep(Duration::from_secs_f64(wait.clamp(0.0, 3600.0))).await;
    // Give each peer one ping round so round-trip times are filled in.
    for p in node.directory().peers() {
        if let Ok(rtt) = node.ping(&p.announcement.node_id).await {
            node.directory().set_rtt(&p.announcement.node_id, rtt);
        }
    }
    let peers = node.directory().peers();
    if as_json {
        let list: Vec<_> = peers
            .iter()
            .map(|p| {
                let a = &p.announcement;
                json!({"name": a.name, "node_id": a.node_id, "node_type": a.node_type, "collections": a.collections,
                       "endpoints": a.endpoints, "rtt_ms": p.rtt.map(|r| r.as_secs_f64() * 1000.0),
                       "stores": a.stores, "refused": a.refused})
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
    } else {
        println!(
            "{:<20} {:<10} {:<34} {:<24} {:>9}",
            "NAME", "TYPE", "NODE ID", "COLLECTIONS", "RTT (ms)"
        );
        for p in &peers {
            let a = &p.announcement;
            let rtt = p
                .rtt
                .map(|r| format!("{:.3}", r.as_secs_f64() * 1000.0))
                .unwrap_or_else(|| "-".into());
            println!(
                "{:<20} {:<10} {:<34} {:<24} {:>9}",
                a.name,
                a.node_type.as_str(),
                a.node_id,
                a.collections.join(","),
                rtt
            );
            println!(
                "{:<20} request {}  publish {}",
                "", a.endpoints.request, a.endpoints.publish
            );
            for (c, why) in &a.refused {
                println!("{:<20} REFUSED {c}: {why}", "");
            }
        }
    }
    if watch {
        let stop = stop_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                ev = events.recv() => match ev {
                    Ok(PeerEvent::Joined(a)) => println!("+ {} {} {}", a.name, a.node_type.as_str(), a.node_id),
                    Ok(PeerEvent::Left(a)) => println!("- {} {} {}", a.name, a.node_type.as_str(), a.node_id),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                },
            }
        }
    }
    node.shutdown().await;
    Ok(())
}
