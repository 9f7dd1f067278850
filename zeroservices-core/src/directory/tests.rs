//! Unit tests of the directory: replacement at an endpoint, expiry, provider choice, bounds.

use super::*;
use crate::protocol::{AnnounceKind, Endpoints, NodeType, PROTOCOL_VERSION};

fn ann(id: &str, req: &str, cols: &[&str]) -> Announcement {
    Announcement {
        version: PROTOCOL_VERSION,
        kind: AnnounceKind::Announce,
        node_id: id.into(),
        name: "n".into(),
        node_type: NodeType::Service,
        collections: cols.iter().map(|c| c.to_string()).collect(),
        endpoints: Endpoints {
            request: req.into(),
            publish: format!("{req}-pub"),
        },
        heartbeat_ms: 10,
        stores: Default::default(),
        started_ms: 0,
        refused: Default::default(),
    }
}

/// Records `a` as the node does: a peer admitted is shown once its connection exists.
fn upsert(d: &Directory, a: Announcement, direct: bool) -> Upsert {
    let id = a.node_id.clone();
    let r = d.upsert(a, direct);
    d.connected(&id);
    r
}

#[test]
fn a_peer_admitted_is_hidden_until_the_medium_connected_it() {
    // Seen in CI: a caller that found the peer in the directory requested it before the
    // node had connected it, and got `PeerGone`.
    let d = Directory::new();
    assert!(matches!(
        d.upsert(ann("a", "tcp://h:1", &["power"]), true),
        Upsert::Joined { .. }
    ));
    assert!(d.peers().is_empty());
    assert!(d.peer("a").is_none());
    assert!(d.providers("power").is_empty());
    assert!(d.pick_provider("power", &[]).is_none());
    assert!(d.live_collections().is_empty());
    // A repeat while connecting is not a second join.
    assert!(matches!(
        d.upsert(ann("a", "tcp://h:1", &["power"]), true),
        Upsert::Refreshed
    ));
    d.connected("a");
    assert_eq!(d.peers().len(), 1);
    assert!(d.peer("a").is_some());
    assert_eq!(d.providers("power"), vec!["a".to_string()]);
}

#[test]
fn only_providers_of_the_first_store_serve_a_collection() {
    let d = Directory::new();
    let with_store = |id: &str, req: &str, store: &str, started: u64| {
        let mut a = ann(id, req, &["power"]);
        a.stores.insert("power".into(), store.into());
        a.started_ms = started;
        a
    };
    upsert(&d, with_store("late", "tcp://h:1", "embedded:b", 20), true);
    upsert(&d, with_store("early", "tcp://h:2", "embedded:a", 10), true);
    upsert(
        &d,
        with_store("sharer", "tcp://h:3", "embedded:a", 30),
        true,
    );
    upsert(&d, ann("old-version", "tcp://h:4", &["power"]), true);
    assert_eq!(d.providers("power"), vec!["early", "old-version", "sharer"]);
    for _ in 0..6 {
        assert_ne!(d.pick_provider("power", &[]).as_deref(), Some("late"));
    }
}

#[test]
fn restart_at_same_endpoint_replaces_old_node() {
    let d = Directory::new();
    assert!(matches!(
        upsert(&d, ann("a", "tcp://h:1", &["power"]), true),
        Upsert::Joined { replaced: None, .. }
    ));
    assert!(matches!(
        upsert(&d, ann("a", "tcp://h:1", &["power"]), true),
        Upsert::Refreshed
    ));
    match upsert(&d, ann("b", "tcp://h:1", &["power"]), true) {
        Upsert::Joined {
            replaced: Some(old),
            ..
        } => assert_eq!(old.announcement.node_id, "a"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(d.providers("power"), vec!["b".to_string()]);
}

#[test]
fn a_live_verified_peer_is_not_replaced_by_a_stranger_at_its_endpoint() {
    let d = Directory::new();
    upsert(&d, ann("real", "tcp://h:1", &["power"]), true);
    d.set_rtt("real", Duration::from_millis(1));
    assert!(matches!(
        upsert(&d, ann("forged", "tcp://h:1", &["power"]), true),
        Upsert::Refused
    ));
    assert_eq!(d.providers("power"), vec!["real".to_string()]);
    // Its connection broke (a restart): the new node at that endpoint takes over.
    d.mark_down("real");
    assert!(matches!(
        upsert(&d, ann("restarted", "tcp://h:1", &["power"]), true),
        Upsert::Joined {
            replaced: Some(_),
            ..
        }
    ));
    assert_eq!(d.providers("power"), vec!["restarted".to_string()]);
}

#[test]
fn a_peer_answering_pings_does_not_expire() {
    let d = Directory::new();
    upsert(&d, ann("a", "tcp://h:1", &["power"]), true);
    std::thread::sleep(Duration::from_millis(40));
    d.set_rtt("a", Duration::from_millis(1));
    assert!(d.expire(3).is_empty(), "expired despite answering a ping");
    std::thread::sleep(Duration::from_millis(40));
    assert_eq!(d.expire(3).len(), 1, "silent since its ping");
}

#[test]
fn relayed_announcements_do_not_refresh_and_silent_peers_expire() {
    let d = Directory::new();
    upsert(&d, ann("a", "tcp://h:1", &["power"]), true);
    std::thread::sleep(Duration::from_millis(40));
    assert!(matches!(
        upsert(&d, ann("a", "tcp://h:1", &["power"]), false),
        Upsert::Ignored
    ));
    let gone = d.expire(3);
    assert_eq!(gone.len(), 1);
    assert!(d.providers("power").is_empty());
    assert!(d.has_seen("power"));
}

#[test]
fn providers_that_answered_are_picked_before_the_others() {
    let d = Directory::new();
    upsert(&d, ann("real", "tcp://h:1", &["power"]), true);
    upsert(&d, ann("forged", "tcp://h:2", &["power"]), true);
    d.set_rtt("real", Duration::from_millis(1));
    for _ in 0..4 {
        assert_eq!(d.pick_provider("power", &[]), Some("real".into()));
    }
    assert_eq!(
        d.pick_provider("power", &["real".into()]),
        Some("forged".into())
    );
}

#[test]
fn providers_are_picked_round_robin() {
    let d = Directory::new();
    upsert(&d, ann("a", "tcp://h:1", &["power"]), true);
    upsert(&d, ann("b", "tcp://h:2", &["power"]), true);
    let picks: BTreeSet<String> = (0..4)
        .filter_map(|_| d.pick_provider("power", &[]))
        .collect();
    assert_eq!(picks.len(), 2);
    assert_eq!(d.pick_provider("power", &["a".into()]), Some("b".into()));
    assert_eq!(d.pick_provider("nothing", &[]), None);
}

#[test]
fn a_down_provider_is_skipped_until_it_announces_again() {
    let d = Directory::new();
    upsert(&d, ann("a", "tcp://h:1", &["power"]), true);
    upsert(&d, ann("b", "tcp://h:2", &["power"]), true);
    d.mark_down("a");
    assert_eq!(d.providers("power"), vec!["b".to_string()]);
    upsert(&d, ann("a", "tcp://h:1", &["power"]), false);
    assert_eq!(
        d.providers("power"),
        vec!["b".to_string()],
        "a relayed announcement is not enough"
    );
    upsert(&d, ann("a", "tcp://h:1", &["power"]), true);
    assert_eq!(d.providers("power").len(), 2);
}

#[test]
fn a_full_table_evicts_the_stalest_unverified_peer_and_keeps_verified_ones() {
    let d = Directory::new();
    upsert(&d, ann("real", "tcp://real:1", &["power"]), true);
    d.set_rtt("real", Duration::from_millis(1));
    for i in 0..MAX_PEERS + 500 {
        let id = format!("forged-{i}");
        d.lock().joins = None; // not what this test is about
        let r = upsert(&d, ann(&id, &format!("tcp://f:{i}"), &[]), true);
        if i >= MAX_PEERS - 1 {
            match r {
                Upsert::Joined {
                    evicted: Some(p), ..
                } => {
                    assert!(
                        p.announcement.node_id.starts_with("forged-"),
                        "evicted {p:?}"
                    )
                }
                other => panic!("expected an eviction, got {other:?}"),
            }
        }
    }
    assert_eq!(d.peers().len(), MAX_PEERS);
    assert_eq!(d.providers("power"), vec!["real".to_string()]);
    // Only verified peers left: a newcomer is refused.
    for p in d.peers() {
        d.set_rtt(&p.announcement.node_id, Duration::from_millis(1));
    }
    d.lock().joins = None;
    assert!(matches!(
        upsert(&d, ann("late", "tcp://l:1", &[]), true),
        Upsert::Refused
    ));
}

#[test]
fn joins_are_rate_limited_but_known_peers_are_refreshed() {
    let d = Directory::new();
    upsert(&d, ann("real", "tcp://real:1", &["power"]), true);
    let mut refused = 0;
    for i in 0..1000 {
        let r = upsert(
            &d,
            ann(&format!("f{i}"), &format!("tcp://f:{i}"), &[]),
            true,
        );
        refused += usize::from(matches!(r, Upsert::Refused));
    }
    assert_eq!(refused, 1000 - (MAX_JOINS_PER_SECOND as usize - 1));
    assert!(matches!(
        upsert(&d, ann("real", "tcp://real:1", &["power"]), true),
        Upsert::Refreshed
    ));
}

#[test]
fn unspecified_hosts_resolve_to_the_source() {
    let src: IpAddr = "10.1.2.3".parse().unwrap();
    assert_eq!(
        resolve_endpoint("tcp://0.0.0.0:5", Some(src)),
        "tcp://10.1.2.3:5"
    );
    assert_eq!(
        resolve_endpoint("tcp://0.0.0.0:5", None),
        "tcp://127.0.0.1:5"
    );
    assert_eq!(
        resolve_endpoint("tcp://10.0.0.9:5", Some(src)),
        "tcp://10.0.0.9:5"
    );
}
