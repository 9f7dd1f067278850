//! A hostile peer cannot stop a node: truncated and garbage ZeroMQ frames, unknown message
//! types, invalid JSON, oversized bodies, raw TCP garbage, a rogue publisher's malformed events
//! and malformed discovery datagrams are logged and dropped (or answered with an error), and the
//! node keeps serving.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::{bin, free_port, names, nodes_json, spawn, spawn_ready, NetNs, Proc};
use serde_json::{json, Value};

fn dealer(endpoint: &str) -> zmq::Socket {
    let d = zmq::Context::new().socket(zmq::DEALER).expect("dealer");
    d.set_rcvtimeo(5000).expect("rcvtimeo");
    d.set_linger(0).expect("linger");
    d.connect(endpoint).expect("connect");
    d
}

fn send(d: &zmq::Socket, frames: &[&[u8]]) {
    d.send_multipart(frames, 0).expect("send");
}

fn call(d: &zmq::Socket, rid: &[u8], kind: &[u8], body: &[u8]) -> Value {
    send(d, &[rid, kind, body]);
    let frames = d.recv_multipart(0).expect("reply within 5 s");
    assert_eq!(frames.len(), 3, "reply frames");
    assert_eq!(&frames[0][..], rid, "request id echoed");
    assert_eq!(&frames[1][..], b"reply");
    serde_json::from_slice(&frames[2]).expect("reply JSON")
}

fn error_code(v: &Value) -> &str {
    assert_eq!(v["ok"], false, "expected an error reply: {v}");
    v["error"]["code"].as_str().unwrap_or("")
}

fn start_node(router: u16, publish: u16) -> Proc {
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "target",
        "--store",
        "memory",
        "--collection",
        "power",
        "--discovery",
        "none",
    ]);
    // With HTTP, the node wants every event (its websocket hub), so it subscribes to peers'
    // publishers and reads what a rogue one sends.
    c.args([
        "--http",
        "127.0.0.1:0",
        "--bind",
        "127.0.0.1",
        "--router-port",
        &router.to_string(),
        "--pub-port",
        &publish.to_string(),
    ]);
    spawn_ready("target", c)
}

#[test]
fn hostile_frames_are_dropped_and_the_node_keeps_serving() {
    let (rport, pport) = (free_port(), free_port());
    let mut node = start_node(rport, pport);
    let endpoint = format!("tcp://127.0.0.1:{rport}");

    // Raw TCP garbage on both sockets, and a truncated ZMTP greeting.
    for port in [rport, pport] {
        for junk in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            &[0xffu8; 10][..],
            &[0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3][..],
            &[0u8; 4096][..],
        ] {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.write_all(junk);
            }
        }
    }

    let d = dealer(&endpoint);
    // Wrong frame counts and a non-UTF-8 kind: dropped without a reply.
    send(&d, &[b"only-one"]);
    send(&d, &[b"r", b"request"]);
    send(&d, &[b"r", b"request", b"{}", b"extra", b"frames"]);
    send(&d, &[b"r", b"\xff\xfe", b"{}"]);
    send(&d, &[b"r", b"reply", b"{}"]);
    // Answered with errors.
    assert_eq!(
        error_code(&call(&d, b"1", b"frobnicate", b"{}")),
        "bad_request"
    );
    assert_eq!(
        error_code(&call(&d, b"2", b"resource", b"{not json")),
        "bad_request"
    );
    assert_eq!(
        error_code(&call(&d, b"3", b"request", b"[1,2")),
        "bad_request"
    );
    assert_eq!(
        error_code(&call(
            &d,
            b"4",
            b"resource",
            br#"{"collection":"power","action":"create","args":5}"#
        )),
        "bad_request"
    );
    assert_eq!(error_code(&call(&d, b"5", b"resource", br#"{"collection":"power","action":"patch","resource_id":"x","args":{"patch":{"$bogus":{}}}}"#)), "bad_request");
    assert_eq!(
        error_code(&call(&d, b"6", b"announce", b"\x00\x01garbage")),
        "bad_request"
    );
    // A frame over the 8 MiB limit closes the connection before it is read (libzmq's
    // ZMQ_MAXMSGSIZE); the DEALER reconnects and is served again.
    let big = vec![b'x'; 9 * 1024 * 1024];
    send(&d, &[b"7", b"resource", &big]);

    // A rogue "peer" announces itself with a publisher that publishes malformed events, and a
    // request endpoint that is not ZeroMQ at all. The publisher is an XPUB, so the test sees
    // the node's subscriptions come and go instead of waiting for them.
    let rogue_pub = zmq::Context::new().socket(zmq::XPUB).expect("xpub");
    rogue_pub.set_linger(0).expect("linger");
    rogue_pub.set_rcvtimeo(10_000).expect("rcvtimeo");
    rogue_pub.bind("tcp://127.0.0.1:*").expect("bind rogue pub");
    let rogue_pub_ep = rogue_pub
        .get_last_endpoint()
        .expect("endpoint")
        .expect("utf-8");
    let not_zmq = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let rogue = json!({"version": 1, "node_id": "rogue", "name": "rogue", "collections": ["power"],
        "endpoints": {"request": format!("tcp://{}", not_zmq.local_addr().unwrap()), "publish": rogue_pub_ep},
        "heartbeat_ms": 60000});
    let announced = call(&d, b"8", b"announce", rogue.to_string().as_bytes());
    assert_eq!(announced["ok"], true, "announce accepted: {announced}");
    // The node subscribes (`\x01` + prefix) once it has connected.
    let wait_for = |marker: u8, what: &str| loop {
        let m = rogue_pub
            .recv_bytes(0)
            .unwrap_or_else(|e| panic!("no {what} within 10 s: {e}"));
        if m.first() == Some(&marker) {
            break;
        }
    };
    wait_for(1, "subscription from the node");
    for _ in 0..20 {
        let _ = rogue_pub.send_multipart([&b"power.create.1"[..]], 0);
        let _ = rogue_pub.send_multipart([&b"power.create.1"[..], b"{}", b"third"], 0);
        let _ = rogue_pub.send_multipart([&b"\xff\xfe"[..], b"{}"], 0);
        let _ = rogue_pub.send_multipart([&b"power.create.1"[..], b"{not json"], 0);
    }
    // Over the size limit: the node drops the connection (its subscriptions leave, `\x00`),
    // after reading everything sent before it.
    let _ = rogue_pub.send_multipart([&b"power.create.1"[..], &vec![b'{'; 9 * 1024 * 1024]], 0);
    wait_for(0, "disconnect after the oversized event");

    // Still serving: a create succeeds (the rogue provider of `power` does not matter here,
    // because the node serves `power` itself) and the process is alive.
    let ok = call(
        &d,
        b"9",
        b"resource",
        br#"{"collection":"power","action":"create","args":{"resource_data":{"value":3}}}"#,
    );
    assert_eq!(ok["ok"], true, "create after the attack: {ok}");
    assert_eq!(ok["data"]["resource_data"], json!({"value": 3}));
    let ping = call(&d, b"10", b"ping", b"{}");
    assert_eq!(ping, json!({"ok": true, "data": {}}));
    assert!(
        node.child.try_wait().expect("try_wait").is_none(),
        "node exited"
    );
}

#[test]
fn malformed_datagrams_are_dropped_and_discovery_goes_on() {
    let ns = NetNs::new();
    let mut c = ns.command(bin());
    c.args([
        "serve",
        "--name",
        "target",
        "--no-http",
        "--store",
        "memory",
        "--heartbeat-ms",
        "200",
    ]);
    let mut node = spawn_ready("target", c);
    let script = r#"
import socket, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dst = ("237.252.249.227", 32000)
good = {"version": 1, "node_id": "x", "name": "x", "endpoints": {"request": "tcp://127.0.0.1:1", "publish": "tcp://127.0.0.1:2"}}
junk = [b"", b"\xff\xfe\x00", b"{}", b"[1,2,3]", b"null", b"{" * 5000, b"x" * 60000,
        json.dumps(dict(good, version=99)).encode(),
        json.dumps(dict(good, node_id="")).encode(),
        json.dumps(dict(good, endpoints={"request": "http://evil", "publish": "tcp://a:1"})).encode(),
        json.dumps(dict(good, heartbeat_ms=0)).encode(),
        json.dumps(dict(good, collections="notalist")).encode()]
for _ in range(20):
    for j in junk:
        s.sendto(j, dst)
print("SENT", flush=True)
"#;
    let mut py = ns.command("python3");
    py.args(["-c", script]);
    let sender = spawn("junk-sender", py);
    sender.wait_line("SENT", Duration::from_secs(10));
    let mut nc = ns.command(bin());
    nc.args(["nodes", "--json", "--wait", "1.0", "--heartbeat-ms", "200"]);
    assert_eq!(
        names(&nodes_json(nc)),
        vec!["target"],
        "only the real node is listed"
    );
    assert!(
        node.child.try_wait().expect("try_wait").is_none(),
        "node exited"
    );
}
