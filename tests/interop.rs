//! Interop with a plain libzmq peer: `tests/interop/peer.py` (pyzmq, written from
//! docs/protocol.md only) hears a node's multicast announcement inside a network namespace,
//! requests, gets the reply and receives the node's event; the node in turn lists the Python
//! peer it heard.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{bin, names, nodes_json, root, spawn, spawn_ready, NetNs};

fn python() -> PathBuf {
    let p = std::env::var_os("ZS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "the pyzmq virtualenv is missing at {}: run ./scripts/test (it creates .venv with pyzmq)",
        p.display()
    );
    p
}

#[test]
fn a_pyzmq_peer_following_the_protocol_document_joins_requests_and_receives_events() {
    let py = python();
    let ns = NetNs::new();
    let mut c = ns.command(bin());
    c.args([
        "serve",
        "--name",
        "power-service",
        "--no-http",
        "--store",
        "memory",
        "--collection",
        "power",
        "--heartbeat-ms",
        "200",
    ]);
    let _node = spawn_ready("node", c);

    let mut pc = ns.command(&py);
    pc.arg(root().join("tests/interop/peer.py"))
        .env("LINGER", "3");
    let peer = spawn("pyzmq-peer", pc);
    peer.wait_line("INTEROP OK", Duration::from_secs(30));

    let mut nc = ns.command(bin());
    nc.args(["nodes", "--json", "--wait", "1.0", "--heartbeat-ms", "200"]);
    let listed = names(&nodes_json(nc));
    assert!(
        listed.contains(&"pyzmq-peer".to_string()),
        "node list {listed:?} lacks the Python peer"
    );
    assert!(
        listed.contains(&"power-service".to_string()),
        "node list {listed:?}"
    );
}
