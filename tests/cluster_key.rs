//! The cluster key against a rogue host: two network namespaces joined by a veth pair. Keyed
//! nodes run on one; a node without the key, a node with another key and a hand-written pyzmq
//! attacker run on the other. Nothing they send is accepted: they are not listed, their
//! requests get no reply and execute nothing, their events reach no one.

mod common;

use std::time::Duration;

use common::{bin, names, nodes_json, root, spawn, spawn_ready, NetNs, Proc};

const KEY: &str = "0123456789abcdef-cluster-secret";

/// A key file holding `key` (the CLI reads secrets from files only); one per key and test
/// process, left in the temporary directory for the processes that read it.
fn key_file(key: &str) -> String {
    let path = std::env::temp_dir().join(format!(
        "zs-cluster-key-{}-{:x}.key",
        std::process::id(),
        key.bytes()
            .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b))
                .wrapping_mul(0x100000001b3))
    ));
    std::fs::write(&path, format!("{key}\n")).expect("write key file");
    path.to_string_lossy().into_owned()
}

fn serve(ns: &NetNs, name: &str, ip: &str, http: &str, key: Option<&str>) -> Proc {
    let mut c = ns.command(bin());
    c.args([
        "serve",
        "--name",
        name,
        "--collection",
        "power",
        "--store",
        "memory",
        "--http",
        http,
        "--interface",
        ip,
        "--heartbeat-ms",
        "200",
    ]);
    match key {
        Some(k) => c.args(["--cluster-key-file", &key_file(k)]),
        // The rogue host runs an open cluster of its own, on purpose.
        None => c.arg("--open-cluster"),
    };
    spawn_ready(name, c)
}

fn curl(ns: &NetNs, args: &[&str]) -> String {
    let out = ns
        .command("curl")
        .args(["-s", "-m", "5"])
        .args(args)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_rogue_host_without_the_key_cannot_join_call_or_publish() {
    let (host, rogue_host) = (NetNs::new(), NetNs::new());
    let _ = NetNs::link(&host, &rogue_host);
    let _a = serve(&host, "keyed-a", "10.77.0.1", "127.0.0.1:8080", Some(KEY));
    let _b = serve(&host, "keyed-b", "10.77.0.1", "127.0.0.1:8081", Some(KEY));
    let _rogue = serve(&rogue_host, "rogue", "10.77.0.2", "127.0.0.1:8080", None);
    let _wrong = serve(
        &rogue_host,
        "wrong-key",
        "10.77.0.2",
        "127.0.0.1:8081",
        Some("another-key-of-sufficient-length"),
    );

    // Keyed nodes find each other, and only each other.
    let mut c = host.command(bin());
    c.args([
        "nodes",
        "--json",
        "--wait",
        "1.5",
        "--heartbeat-ms",
        "200",
        "--interface",
        "10.77.0.1",
        "--cluster-key-file",
        &key_file(KEY),
    ]);
    assert_eq!(names(&nodes_json(c)), vec!["keyed-a", "keyed-b"]);
    // The wrong-key node sees the rogue-host nodes' datagrams fail too: it lists nobody.
    let mut c = rogue_host.command(bin());
    c.args([
        "nodes",
        "--json",
        "--wait",
        "1.0",
        "--heartbeat-ms",
        "200",
        "--interface",
        "10.77.0.2",
        "--cluster-key-file",
        &key_file("another-key-of-sufficient-length"),
    ]);
    let seen = names(&nodes_json(c));
    assert!(
        !seen.iter().any(|n| n.starts_with("keyed")),
        "the wrong key let it in: {seen:?}"
    );

    // A sniffer with the key on the good host; the rogue creates resources on its own node
    // (its events go out on its PUB socket) — none may reach the sniffer.
    let mut s = host.command(bin());
    s.args([
        "sniff",
        "--json",
        "--interface",
        "10.77.0.1",
        "--heartbeat-ms",
        "200",
        "--cluster-key-file",
        &key_file(KEY),
    ]);
    let sniffer = spawn("sniffer", s);
    // The sniffer listens once a probe created on keyed-b reaches it; then up to the last
    // probe's line is read, so the next event line is one that came after the rogues'.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut probes = 0;
    'listening: loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the sniffer saw no probe within 20 s"
        );
        probes += 1;
        let body = format!(r#"{{"from":"probe-{probes}"}}"#);
        curl(
            &host,
            &["-X", "POST", "http://127.0.0.1:8081/power", "-d", &body],
        );
        while let Ok(line) = sniffer.lines.recv_timeout(Duration::from_millis(300)) {
            if line.contains(&format!("probe-{probes}\"")) {
                break 'listening;
            }
            if line.contains("probe-") {
                sniffer.wait_line(&format!("probe-{probes}\""), Duration::from_secs(5));
                break 'listening;
            }
        }
    }
    for _ in 0..5 {
        curl(
            &rogue_host,
            &[
                "-X",
                "POST",
                "http://127.0.0.1:8080/power",
                "-d",
                r#"{"from":"rogue"}"#,
            ],
        );
        curl(
            &rogue_host,
            &[
                "-X",
                "POST",
                "http://127.0.0.1:8081/power",
                "-d",
                r#"{"from":"wrong-key"}"#,
            ],
        );
    }

    // A hand-written attacker: reads the (authenticated but readable) announcement of keyed-a,
    // sends it requests without and with a forged authenticator, and announces itself.
    let python = std::env::var_os("ZS_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(python.exists(), "pyzmq venv missing: run ./scripts/test");
    let attacker = r#"
import json, socket, struct, time, zmq
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("237.252.249.227", 32000))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton("237.252.249.227"), socket.inet_aton("10.77.0.2")))
s.settimeout(5)
while True:
    d, src = s.recvfrom(65536)
    if d.startswith(b"ZSA1|"):
        ann = json.loads(d.split(b"|", 2)[2])
        if ann["name"] == "keyed-a":
            break
ep = ann["endpoints"]["request"].replace("0.0.0.0", src[0])
ctx = zmq.Context()
dealer = ctx.socket(zmq.DEALER)
dealer.connect(ep)
create = json.dumps({"collection": "power", "action": "create", "args": {"resource_data": {"from": "attacker"}}}).encode()
dealer.send_multipart([b"r1", b"resource", create])
dealer.send_multipart([b"r2", b"resource", create, b"1.00112233445566778899aabbccddeeff.%s" % (b"00" * 32)])
dealer.send_multipart([b"r3", b"ping", b"{}"])
fake = dict(ann, node_id="attacker", name="attacker")
s2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s2.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("10.77.0.2"))
for _ in range(5):
    s2.sendto(json.dumps(fake).encode(), ("237.252.249.227", 32000))
    s2.sendto(d, ("237.252.249.227", 32000))  # a replayed authentic datagram
    time.sleep(0.1)
replies = 1 if dealer.poll(2000) else 0
print("ATTACKER replies=%d" % replies, flush=True)
"#;
    let mut pc = rogue_host.command(&python);
    pc.args(["-c", attacker]);
    let att = spawn("attacker", pc);
    let line = att.wait_line("ATTACKER", Duration::from_secs(20));
    assert_eq!(
        line.trim(),
        "ATTACKER replies=0",
        "the keyed node answered an unauthenticated request"
    );

    // Nothing was created on the keyed nodes, nothing reached the sniffer, the attacker and
    // the rogues are not listed.
    let listed = curl(&host, &["http://127.0.0.1:8080/power"]);
    assert!(
        !listed.contains("rogue") && !listed.contains("wrong-key") && !listed.contains("attacker"),
        "keyed-a executed something: {listed}"
    );
    curl(
        &host,
        &[
            "-X",
            "POST",
            "http://127.0.0.1:8080/power",
            "-d",
            r#"{"from":"keyed-a"}"#,
        ],
    );
    let first = sniffer.wait_line("power.create", Duration::from_secs(5));
    assert!(
        first.contains("keyed-a"),
        "the first event the sniffer saw is not keyed-a's: {first}"
    );
    let mut c = host.command(bin());
    c.args([
        "nodes",
        "--json",
        "--wait",
        "1.0",
        "--heartbeat-ms",
        "200",
        "--interface",
        "10.77.0.1",
        "--cluster-key-file",
        &key_file(KEY),
    ]);
    assert_eq!(
        names(&nodes_json(c)),
        vec!["keyed-a", "keyed-b", "sniffer"],
        "only keyed members (the sniffer has the key)"
    );
}

/// With a key, the publish port admits only subscribers holding it: a plain SUB (no
/// credentials) and one with a made-up PLAIN password receive nothing, while `sniff` with the
/// key receives the same events.
#[test]
fn a_subscriber_without_the_key_receives_no_event() {
    let (router, publish, http) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let key = key_file(KEY);
    let mut c = std::process::Command::new(bin());
    c.args([
        "serve",
        "--name",
        "keyed",
        "--collection",
        "power",
        "--store",
        "memory",
        "--discovery",
        "none",
        "--bind",
        "127.0.0.1",
        "--router-port",
        &router.to_string(),
        "--pub-port",
        &publish.to_string(),
        "--http",
        &format!("127.0.0.1:{http}"),
        "--cluster-key-file",
        &key,
    ]);
    let _node = spawn_ready("keyed", c);
    let ctx = zmq::Context::new();
    let sub = |password: Option<&str>| {
        let s = ctx.socket(zmq::SUB).expect("sub");
        if let Some(p) = password {
            s.set_plain_username(Some("zeroservices")).expect("user");
            s.set_plain_password(Some(p)).expect("password");
        }
        s.set_rcvtimeo(100).expect("timeout");
        s.connect(&format!("tcp://127.0.0.1:{publish}"))
            .expect("connect");
        s.set_subscribe(b"").expect("subscribe");
        s
    };
    let plain = sub(None);
    let guessing = sub(Some("0123456789abcdef0123456789abcdef"));
    let mut w = std::process::Command::new(bin());
    w.args(["sniff", "--json", "--topic", "power"]);
    w.args(["--discovery", &format!("static:127.0.0.1:{router}")]);
    w.args(["--heartbeat-ms", "200", "--cluster-key-file", &key]);
    let sniffer = spawn("sniffer", w);
    let base = format!("http://127.0.0.1:{http}");
    common::eventually(
        "the keyed sniffer to receive",
        Duration::from_secs(15),
        || {
            let _ = ureq::post(&format!("{base}/power")).send_string(r#"{"n": 1}"#);
            sniffer.lines.recv_timeout(Duration::from_millis(200)).ok()
        },
    );
    for i in 0..20 {
        let _ = ureq::post(&format!("{base}/power")).send_string(&format!(r#"{{"n": {i}}}"#));
        for (name, s) in [("plain", &plain), ("guessing", &guessing)] {
            if let Ok(m) = s.recv_multipart(0) {
                panic!("a {name} subscriber without the key received {m:?}");
            }
        }
    }
}
