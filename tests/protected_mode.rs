//! A fresh install is not an open door: without a cluster key the ZeroMQ ports listen on
//! loopback only, another address needs `--open-cluster`, `keygen` makes a key, and every
//! command refuses to start on a bad key file instead of running without one.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, free_port, spawn_ready};

/// The addresses `pid` listens on (TCP), from `ss`.
fn listening(pid: u32) -> Vec<String> {
    let out = Command::new("ss").args(["-Hltnp"]).output().expect("ss");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&format!("pid={pid},")))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

/// Runs `args`, which must fail within 10 s; returns its stderr.
fn refused(args: &[&str]) -> String {
    let mut child = Command::new(bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let out = child.wait_with_output().expect("output");
            assert!(!status.success(), "{args:?} started");
            return String::from_utf8_lossy(&out.stderr).into_owned();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{args:?} still running after 10 s: it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn without_a_key_the_zeromq_ports_listen_on_loopback_only() {
    let http = free_port();
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "fresh",
        "--store",
        "memory",
        "--collection",
        "power",
    ]);
    c.args([
        "--discovery",
        "none",
        "--http",
        &format!("127.0.0.1:{http}"),
    ]);
    let node = spawn_ready("fresh", c);
    let addrs = listening(node.child.id());
    assert!(addrs.len() >= 3, "ROUTER, PUB and HTTP expected: {addrs:?}");
    assert!(
        addrs.iter().all(|a| a.starts_with("127.0.0.1:")),
        "a port beyond loopback without a key: {addrs:?}"
    );
}

#[test]
fn another_address_without_a_key_needs_open_cluster() {
    let why = refused(&[
        "serve",
        "--no-http",
        "--store",
        "memory",
        "--discovery",
        "none",
        "--bind",
        "0.0.0.0",
    ]);
    assert!(
        why.contains("keygen") && why.contains("--open-cluster"),
        "{why}"
    );
    let why = refused(&["nodes", "--wait", "0.1", "--interface", "10.1.2.3"]);
    assert!(why.contains("--open-cluster"), "{why}");
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "open",
        "--no-http",
        "--store",
        "memory",
        "--discovery",
        "none",
    ]);
    c.args(["--bind", "0.0.0.0", "--open-cluster"]);
    let node = spawn_ready("open", c);
    assert!(
        listening(node.child.id())
            .iter()
            .any(|a| a.starts_with("0.0.0.0:")),
        "--open-cluster did not bind 0.0.0.0"
    );
}

#[test]
fn keygen_makes_a_key_that_opens_the_network() {
    let out = Command::new(bin()).arg("keygen").output().expect("keygen");
    assert!(out.status.success());
    let key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(key.len(), 64, "{key}");
    assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    let again = Command::new(bin()).arg("keygen").output().expect("keygen");
    assert_ne!(
        String::from_utf8_lossy(&again.stdout).trim(),
        key,
        "not random"
    );
    let file = std::env::temp_dir().join(format!("zs-keygen-{}.key", std::process::id()));
    std::fs::write(&file, format!("{key}\n")).expect("write key");
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        "keyed",
        "--no-http",
        "--store",
        "memory",
        "--discovery",
        "none",
    ]);
    c.arg("--cluster-key-file").arg(&file);
    let node = spawn_ready("keyed", c);
    assert!(
        listening(node.child.id())
            .iter()
            .any(|a| a.starts_with("0.0.0.0:")),
        "a keyed node binds every interface by default"
    );
    let _ = std::fs::remove_file(&file);
}

#[test]
fn every_command_refuses_a_bad_key_file() {
    let short = std::env::temp_dir().join(format!("zs-short-{}.key", std::process::id()));
    std::fs::write(&short, "too-short\n").expect("write");
    let missing = std::env::temp_dir().join("zs-no-such-dir/cluster.key");
    for file in [&short, &missing] {
        let f = file.to_string_lossy();
        for cmd in [
            vec!["sniff", "--discovery", "none"],
            vec!["nodes", "--wait", "0.1", "--discovery", "none"],
            vec![
                "serve",
                "--no-http",
                "--store",
                "memory",
                "--discovery",
                "none",
            ],
        ] {
            let mut args = cmd.clone();
            args.extend(["--cluster-key-file", &f]);
            let why = refused(&args);
            assert!(
                why.contains("cluster key") || why.contains(&*f),
                "{args:?}: no reason given: {why}"
            );
        }
    }
    let _ = std::fs::remove_file(&short);
}
