//! Slow clients and stopping nodes: a client that never finishes its headers is cut off, a
//! trickled body gets 408 at the body timeout, SIGTERM exits within the shutdown bound whatever
//! the clients do, and every write acknowledged before a service stops has its event published.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bin, free_port, spawn, spawn_ready, Proc};
use serde_json::Value;

fn serve_http(http: u16, extra: &[&str]) -> Proc {
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "slow",
        "--collection",
        "power",
        "--store",
        "memory",
        "--discovery",
        "none",
        "--http",
        &format!("127.0.0.1:{http}"),
    ]);
    c.args(extra);
    spawn_ready("serve", c)
}

/// Reads one whole HTTP/1.1 answer (headers and a `Content-Length` body) off a kept-alive
/// connection.
fn read_one_answer(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("an answer within 10 s");
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let length = text[..end]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if got.len() >= end + 4 + length {
            assert!(text.starts_with("HTTP/1.1 200"), "{text}");
            return;
        }
    }
}

/// Reads until the peer closes (or `limit`); returns what arrived and whether it closed.
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true)
            }
            Err(_) => {}
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), false)
}

#[test]
fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let http = free_port();
    let _node = serve_http(http, &["--header-timeout", "1"]);
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .expect("partial headers");
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5));
    assert!(
        closed,
        "the connection is still open 5 s after its headers stalled"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too early"
    );
}

/// A POST whose body arrives one byte a second: 408 at the body timeout, connection closed.
#[test]
fn a_trickled_body_gets_408_at_the_body_timeout() {
    let http = free_port();
    let _node = serve_http(http, &["--body-timeout", "2"]);
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    s.write_all(b"POST /power HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .expect("headers");
    let started = Instant::now();
    let writer = {
        let mut w = s.try_clone().expect("clone");
        std::thread::spawn(move || {
            for _ in 0..10 {
                std::thread::sleep(Duration::from_secs(1));
                if w.write_all(b" ").is_err() {
                    return;
                }
            }
        })
    };
    let (answer, closed) = read_until_closed(&mut s, Duration::from_secs(8));
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(closed, "the connection stays open after 408");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(6),
        "{took:?}"
    );
    let _ = writer.join();
}

/// SIGTERM while a client trickles a body far slower than any timeout allows: the node waits
/// for it at most the shutdown bound, then exits 0.
#[test]
fn sigterm_exits_within_the_shutdown_bound_whatever_the_clients_do() {
    let http = free_port();
    let mut node = serve_http(http, &["--body-timeout", "120", "--shutdown-timeout", "2"]);
    let mut s = TcpStream::connect(("127.0.0.1", http)).expect("connect");
    // One answered request first: the node holds this connection before the trickle starts.
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("health");
    read_one_answer(&mut s);
    s.write_all(b"POST /power HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        .expect("headers");
    let started = Instant::now();
    node.signal(15);
    let code = node.wait_exit(Duration::from_secs(10));
    let took = started.elapsed();
    assert_eq!(code, Some(0), "did not exit cleanly within 10 s");
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    drop(s);
}

/// A service node (no HTTP) behind an API node, 16 clients creating through the API, a sniffer
/// on the service's events. The service gets SIGTERM in the middle: every create the API
/// acknowledged (201) must have reached the sniffer as an event.
#[test]
fn every_acknowledged_write_has_its_event_published_before_exit() {
    let (router, http) = (free_port(), free_port());
    let mut s = Command::new(bin());
    s.args([
        "serve",
        "--name",
        "svc",
        "--no-http",
        "--collection",
        "power",
        "--store",
        "memory",
        "--discovery",
        "none",
        "--router-port",
        &router.to_string(),
        "--heartbeat-ms",
        "200",
    ]);
    let mut service = spawn_ready("svc", s);
    let seeds = format!("static:127.0.0.1:{router}");
    let mut a = Command::new(bin());
    a.args([
        "serve",
        "--name",
        "api",
        "--store",
        "memory",
        "--http",
        &format!("127.0.0.1:{http}"),
        "--discovery",
        &seeds,
        "--heartbeat-ms",
        "200",
    ]);
    let _api = spawn_ready("api", a);
    let mut w = Command::new(bin());
    w.args(["sniff", "--json", "--topic", "power.create"]);
    w.args(["--discovery", &seeds, "--heartbeat-ms", "200"]);
    let sniffer = spawn("sniff", w);
    let base = format!("http://127.0.0.1:{http}");
    // Wait until the API reaches the service and the sniffer hears it.
    common::eventually(
        "the sniffer to hear a create",
        Duration::from_secs(15),
        || {
            let _ = ureq::post(&format!("{base}/power")).send_string(r#"{"warm": true}"#);
            sniffer.lines.recv_timeout(Duration::from_millis(200)).ok()
        },
    );

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let clients: Vec<_> = (0..16)
        .map(|c| {
            let (base, acked) = (base.clone(), acked.clone());
            std::thread::spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(5))
                    .build();
                let mut failures = 0;
                for k in 0..20_000 {
                    if started.elapsed() > Duration::from_secs(20) || failures > 50 {
                        break;
                    }
                    let body = format!(r#"{{"client": {c}, "k": {k}}}"#);
                    match agent.post(&format!("{base}/power")).send_string(&body) {
                        Ok(r) if r.status() == 201 => {
                            let v: Value =
                                serde_json::from_str(&r.into_string().unwrap_or_default())
                                    .unwrap_or(Value::Null);
                            if let Some(id) = v["resource_id"].as_str() {
                                acked.lock().unwrap().push(id.to_owned());
                            }
                        }
                        // The service is gone (503) or stopping: count and go on.
                        _ => failures += 1,
                    }
                }
            })
        })
        .collect();
    // SIGTERM in the middle of the load: once 100 creates were acknowledged, however long
    // that takes on a loaded machine (then the clients stop on the service's refusals).
    common::eventually("100 acknowledged creates", Duration::from_secs(20), || {
        (acked.lock().unwrap().len() >= 100).then_some(())
    });
    service.signal(15);
    assert_eq!(
        service.wait_exit(Duration::from_secs(15)),
        Some(0),
        "the service did not stop cleanly"
    );
    for c in clients {
        c.join().expect("client");
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} creates acknowledged",
        acked.len()
    );
    // Everything the sniffer printed (it keeps what it received after the service left).
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Ok(line) = sniffer
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if let Some(id) = v["event"]["resource_id"].as_str() {
                seen.insert(id.to_owned());
            }
        }
    }
    let missing: Vec<&String> = acked.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged creates have no event, e.g. {:?}",
        missing.len(),
        acked.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
}
