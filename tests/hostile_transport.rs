//! The hostile battery of the transport: what an attacker on the same network can send to a
//! node's ZeroMQ ports must neither kill it nor degrade it for everyone else. Each test starts
//! a real `serve` process, attacks it over raw TCP (speaking ZMTP by hand where needed), then
//! checks that the process is alive and that ordinary clients are still served.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::zmtp;
use common::{bin, free_port, spawn_ready_logged, Proc};
use serde_json::Value;

/// One attack at a time: several assert what a subscriber or client that keeps up gets (no
/// lost event, every request answered), which holds only if a parallel flood in the same test binary is
/// not starving that client of CPU on a two-core CI machine (CI saw a healthy subscriber lag
/// 10,000 events behind while a neighbouring test flooded).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Target {
    proc: Proc,
    log: std::path::PathBuf,
    router: u16,
    publish: u16,
    http: u16,
    _turn: std::sync::MutexGuard<'static, ()>,
}

fn start(key: Option<&std::path::Path>) -> Target {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (router, publish, http) = (free_port(), free_port(), free_port());
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "target",
        "--store",
        "memory",
        "--collection",
        "power",
    ]);
    c.args(["--discovery", "none", "--bind", "127.0.0.1"]);
    c.args([
        "--router-port",
        &router.to_string(),
        "--pub-port",
        &publish.to_string(),
    ]);
    c.args(["--http", &format!("127.0.0.1:{http}")]);
    if let Some(k) = key {
        c.arg("--cluster-key-file").arg(k);
    }
    let log = std::env::temp_dir().join(format!("zs-hostile-{router}.log"));
    Target {
        proc: spawn_ready_logged("target", c, &log),
        log,
        router,
        publish,
        http,
        _turn: turn,
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Target {
    fn alive(&mut self) -> bool {
        self.proc.child.try_wait().expect("try_wait").is_none()
    }

    fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// A DEALER of an ordinary (keyless) client.
    fn dealer(&self) -> zmq::Socket {
        let d = zmq::Context::new().socket(zmq::DEALER).expect("dealer");
        d.set_rcvtimeo(5000).expect("rcvtimeo");
        d.set_linger(0).expect("linger");
        d.connect(&format!("tcp://127.0.0.1:{}", self.router))
            .expect("connect");
        d
    }

    /// Creates a power over the request port; the reply's `ok`.
    fn create(&self, d: &zmq::Socket, n: u64) -> bool {
        let body = format!(
            r#"{{"collection":"power","action":"create","args":{{"resource_data":{{"value":{n}}}}}}}"#
        );
        let rid = n.to_be_bytes();
        d.send_multipart([&rid[..], b"resource", body.as_bytes()], 0)
            .expect("send");
        loop {
            let Ok(frames) = d.recv_multipart(0) else {
                return false;
            };
            if frames.first().map(|f| &f[..]) == Some(&rid[..]) {
                let v: Value = serde_json::from_slice(&frames[2]).unwrap_or(Value::Null);
                return v["ok"] == true;
            }
        }
    }

    /// `GET /health` over HTTP answers 200.
    fn http_ok(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.http)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let req = "GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
        out.starts_with("HTTP/1.1 200")
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Still alive, and an ordinary client's create succeeds.
    fn assert_serving(&mut self, what: &str) {
        assert!(self.alive(), "{what}: the node died");
        let d = self.dealer();
        assert!(self.create(&d, 1), "{what}: a create failed afterwards");
        assert!(self.http_ok(), "{what}: HTTP no longer answers");
    }
}

/// p99 of `n` creates, one at a time, in milliseconds.
fn create_p99(t: &Target, d: &zmq::Socket, n: u64) -> f64 {
    let mut samples: Vec<f64> = (0..n)
        .map(|i| {
            let start = Instant::now();
            assert!(t.create(d, 1_000_000 + i), "a create failed");
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

/// Creates until an event arrives on `s`, a raw SUB connection that subscribed to everything,
/// or the node closes it (30 s at most).
fn flood_taken_in(t: &Target, d: &zmq::Socket, s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("read timeout");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    for i in 0.. {
        assert!(
            Instant::now() < deadline,
            "no event on the flooding connection within 30 s"
        );
        assert!(t.create(d, 2_000_000 + i), "a create failed");
        loop {
            match s.read(&mut buf) {
                Ok(0) => return, // closed by the node: nothing more of the flood to take in
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => break, // nothing yet: create again
            }
            if got.windows(12).any(|w| w == b"power.create") {
                return;
            }
        }
    }
}

fn huge_frames(t: &mut Target) {
    for port in [t.router, t.publish] {
        // Right after the greeting, before READY.
        let mut s = zmtp::handshake(port, None);
        let _ = s.write_all(&zmtp::huge_frame_header());
        assert!(
            zmtp::closed_within(&mut s, Duration::from_secs(5)),
            "port {port}: connection not closed after a huge frame header (before READY)"
        );
        // After a complete handshake.
        let peer_type = if port == t.router { "DEALER" } else { "SUB" };
        let mut s = zmtp::handshake(port, Some(peer_type));
        let _ = s.write_all(&zmtp::huge_frame_header());
        assert!(
            zmtp::closed_within(&mut s, Duration::from_secs(5)),
            "port {port}: connection not closed after a huge frame header (after READY)"
        );
        // And a huge data frame header, after READY.
        let mut s = zmtp::handshake(port, Some(peer_type));
        let mut h = zmtp::huge_frame_header();
        h[0] = 0x02; // LONG, data
        let _ = s.write_all(&h);
        assert!(
            zmtp::closed_within(&mut s, Duration::from_secs(5)),
            "port {port}: connection not closed after a huge data frame header"
        );
    }
    t.assert_serving("after huge frame headers");
}

#[test]
fn a_huge_frame_header_closes_the_connection_not_the_node() {
    let mut t = start(None);
    huge_frames(&mut t);
}

#[test]
fn a_huge_frame_header_closes_the_connection_not_the_node_with_a_cluster_key() {
    let dir = std::env::temp_dir().join(format!("zs-hostile-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("cluster.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("key");
    let mut t = start(Some(&key));
    // The keyed publisher admits PLAIN subscribers holding the key only: a NULL greeting is
    // refused at once, huge header or not.
    let mut s = TcpStream::connect(("127.0.0.1", t.publish)).expect("connect");
    let _ = s.write_all(&zmtp::greeting());
    let _ = s.write_all(&zmtp::huge_frame_header());
    assert!(
        zmtp::closed_within(&mut s, Duration::from_secs(5)),
        "keyed publish port: a NULL client was not closed"
    );
    let port = t.router;
    let mut s = zmtp::handshake(port, Some("DEALER"));
    let _ = s.write_all(&zmtp::huge_frame_header());
    assert!(
        zmtp::closed_within(&mut s, Duration::from_secs(5)),
        "port {port}: not closed"
    );
    let mut s = zmtp::handshake(port, None);
    let _ = s.write_all(&zmtp::huge_frame_header());
    assert!(
        zmtp::closed_within(&mut s, Duration::from_secs(5)),
        "port {port}: not closed"
    );
    assert!(t.alive(), "the keyed node died");
    assert!(t.http_ok(), "HTTP no longer answers");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connections_that_never_greet_or_close_at_once_give_their_fds_back() {
    let mut t = start(None);
    let baseline = t.open_fds();
    let mut idle = Vec::new();
    for i in 0..2000 {
        let port = if i % 2 == 0 { t.router } else { t.publish };
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            idle.push(s); // never greets; kept open by the test
        }
        drop(TcpStream::connect(("127.0.0.1", port)));
    }
    assert!(
        idle.len() >= 1900,
        "only {} idle connections made",
        idle.len()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = t.open_fds();
    while now > baseline + 10 {
        assert!(
            Instant::now() < deadline,
            "fds still open 10 s later: {now}, baseline {baseline}"
        );
        std::thread::sleep(Duration::from_millis(200));
        now = t.open_fds();
    }
    t.assert_serving("after 4000 idle and closing connections");
    drop(idle);
}

#[test]
fn a_million_subscriptions_neither_bloat_nor_slow_the_node() {
    let mut t = start(None);
    let d = t.dealer();
    // A subscriber that wants everything, so every create is published.
    let sub = zmq::Context::new().socket(zmq::SUB).expect("sub");
    sub.set_subscribe(b"").expect("subscribe");
    sub.connect(&format!("tcp://127.0.0.1:{}", t.publish))
        .expect("connect");
    let _ = create_p99(&t, &d, 200); // warm-up
    let baseline = create_p99(&t, &d, 1000);
    let rss_before = t.rss_kib();
    let mut s = zmtp::handshake(t.publish, Some("SUB"));
    let mut batch = Vec::with_capacity(1 << 20);
    for i in 0..1_000_000u32 {
        let topic = format!("\x01t{i}");
        batch.extend_from_slice(&zmtp::frame(topic.as_bytes(), false));
        if batch.len() > 1 << 19 {
            if s.write_all(&batch).is_err() {
                break; // closed by the node: also fine
            }
            batch.clear();
        }
    }
    // The last subscription wants everything; once an event comes back on this connection,
    // the node has taken in the million before it (one connection is read in order).
    batch.extend_from_slice(&zmtp::frame(b"\x01", false));
    let _ = s.write_all(&batch);
    flood_taken_in(&t, &d, &mut s);
    let during = create_p99(&t, &d, 1000);
    let grown_mib = t.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 50, "RSS grew by {grown_mib} MiB");
    // Every create was answered (`create_p99` asserts each); how fast depends on the machine's
    // load, so the latency is shown, not asserted (issue 26).
    println!("create p99 {during:.2} ms under the flood vs {baseline:.2} ms before");
    t.assert_serving("after a million subscriptions");
}

#[test]
fn a_client_that_never_reads_its_pings_does_not_slow_the_others() {
    let mut t = start(None);
    let flooder = zmq::Context::new().socket(zmq::DEALER).expect("dealer");
    flooder.set_sndhwm(0).expect("hwm");
    flooder.set_linger(0).expect("linger");
    flooder
        .connect(&format!("tcp://127.0.0.1:{}", t.router))
        .expect("connect");
    for i in 0..200_000u64 {
        flooder
            .send_multipart([&i.to_be_bytes()[..], b"ping", b"{}"], 0)
            .expect("send");
    }
    let d = t.dealer();
    // Every one of the other client's creates is answered (`create_p99` asserts each); the
    // latency is shown, not asserted (issue 26).
    let p99 = create_p99(&t, &d, 2000);
    println!("other clients' p99 {p99:.2} ms while a DEALER floods pings");
    t.assert_serving("after 200,000 unread pings");
}

#[test]
fn a_flood_of_command_frames_closes_that_connection_quietly() {
    let mut t = start(None);
    let mut s = zmtp::handshake(t.router, Some("DEALER"));
    let mut cmd = vec![0x04u8, 8, 7];
    cmd.extend_from_slice(b"UNKNOWN");
    let mut batch = Vec::new();
    for _ in 0..100_000 {
        batch.extend_from_slice(&cmd);
    }
    let _ = s.write_all(&batch);
    assert!(
        zmtp::closed_within(&mut s, Duration::from_secs(5)),
        "connection still open after 100,000 unknown commands"
    );
    t.assert_serving("after 100,000 command frames");
    let log = std::fs::read_to_string(&t.log).unwrap_or_default();
    assert!(!log.contains("panicked"), "a panic in the log");
    assert!(
        log.lines().count() < 100,
        "{} log lines",
        log.lines().count()
    );
}

#[test]
fn a_subscriber_that_never_reads_neither_stops_events_nor_loses_them_for_others() {
    let mut t = start(None);
    let ctx = zmq::Context::new();
    let publish = format!("tcp://127.0.0.1:{}", t.publish);
    let stuck = ctx.socket(zmq::SUB).expect("sub");
    stuck.set_rcvhwm(10).expect("hwm");
    stuck.set_subscribe(b"").expect("subscribe");
    stuck.connect(&publish).expect("connect");
    let healthy = ctx.socket(zmq::SUB).expect("sub");
    healthy.set_rcvhwm(0).expect("hwm");
    healthy.set_rcvtimeo(10_000).expect("timeout");
    healthy.set_subscribe(b"power.create").expect("subscribe");
    healthy.connect(&publish).expect("connect");
    let d = t.dealer();
    d.set_sndhwm(0).expect("hwm");
    // Both subscriptions reach the node before the burst.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        assert!(t.create(&d, 0), "warm-up create");
        if healthy.recv_multipart(zmq::DONTWAIT).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no event reached the healthy subscriber"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    while healthy.recv_multipart(zmq::DONTWAIT).is_ok() {}
    const N: u64 = 40_000;
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut got = 0u64;
        while got < N {
            match healthy.recv_multipart(0) {
                Ok(_) => got += 1,
                Err(_) => break, // 10 s without an event
            }
        }
        got
    });
    for i in 0..N {
        let body = format!(
            r#"{{"collection":"power","action":"create","args":{{"resource_data":{{"value":{i}}}}}}}"#
        );
        d.send_multipart([&i.to_be_bytes()[..], b"resource", body.as_bytes()], 0)
            .expect("send");
    }
    let mut ok = 0;
    for _ in 0..N {
        let Ok(frames) = d.recv_multipart(0) else {
            break;
        };
        let v: Value = serde_json::from_slice(&frames[2]).unwrap_or(Value::Null);
        ok += u64::from(v["ok"] == true);
    }
    assert_eq!(ok, N, "every create answered");
    let got = reader.join().expect("reader");
    assert_eq!(got, N, "the healthy subscriber missed events");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "{N} creates took {:?} with a stuck subscriber",
        start.elapsed()
    );
    drop(stuck);
    t.assert_serving("after a stuck subscriber");
}
