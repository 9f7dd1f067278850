//! A fresh install is not an open door: without a cluster key the ZeroMQ ports listen on
//! loopback only and announcements stay there, another address needs `--open-cluster`, `keygen`
//! makes a key, secrets come from files only, and every command refuses to start on a bad key,
//! users or JWT file instead of running without one.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{bin, free_port, names, nodes_json, spawn_ready, NetNs, TempFile};

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

#[test]
fn secrets_are_not_taken_from_the_command_line_or_secret_variables() {
    let base = [
        "serve",
        "--no-http",
        "--store",
        "memory",
        "--discovery",
        "none",
    ];
    for flag in [
        ["--cluster-key", "0123456789abcdef-cluster-secret"],
        ["--user", "admin:secret"],
        ["--jwt-hs256-secret", "a-shared-jwt-secret-of-length"],
    ] {
        let mut args = base.to_vec();
        args.extend(flag);
        let why = refused(&args);
        assert!(why.contains(flag[0]), "{args:?}: {why}");
    }
    for var in [
        "ZEROSERVICES_CLUSTER_KEY",
        "ZEROSERVICES_USERS",
        "ZEROSERVICES_JWT_HS256_SECRET",
    ] {
        let out = Command::new(bin())
            .args(base)
            .env(var, "0123456789abcdef-some-secret")
            .output()
            .expect("run");
        let why = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var} was accepted");
        assert!(why.contains(&format!("{var}_FILE")), "{var}: {why}");
    }
}

#[test]
fn serve_refuses_bad_users_and_jwt_files() {
    let serve = [
        "serve",
        "--no-http",
        "--store",
        "memory",
        "--discovery",
        "none",
    ];
    let missing = std::env::temp_dir().join("zs-no-such-dir/users");
    let missing = missing.to_string_lossy();
    let empty = TempFile::new("users-empty", "# nobody yet\n\n");
    let malformed = TempFile::new("users-bad", "admin:secret\njust-a-name\n");
    let bad_grant = TempFile::new("users-grant", "admin:secret:power\n");
    let short = TempFile::new("jwt-short", "short\n");
    let not_pem = TempFile::new("jwt.pem", "-----BEGIN PUBLIC KEY-----\nnot a key\n");
    for (flag, file, reason) in [
        ("--users-file", missing.to_string(), "users file"),
        ("--users-file", empty.arg(), "names no user"),
        ("--users-file", malformed.arg(), "line 2"),
        ("--users-file", bad_grant.arg(), "line 1"),
        ("--jwt-hs256-secret-file", missing.to_string(), "JWT secret"),
        ("--jwt-hs256-secret-file", short.arg(), "at least 16 bytes"),
        ("--jwt-rs256-public-key", not_pem.arg(), "jwt.pem"),
    ] {
        let mut args = serve.to_vec();
        args.extend([flag, file.as_str()]);
        let why = refused(&args);
        assert!(
            why.contains(reason),
            "{flag} {file}: expected {reason:?} in {why}"
        );
    }
}

/// Two namespaces joined by a veth pair, multicast routed over the link. A keyless node on
/// one announces on loopback only: a listener on the other side of the link hears nothing. The
/// same node with `--open-cluster --interface` is heard (so the listener can hear at all).
#[test]
fn without_a_key_announcements_stay_on_this_host() {
    let (a, b) = (NetNs::new(), NetNs::new());
    let _ = NetNs::link(&a, &b);
    let start = |extra: &[&str]| {
        let mut c = a.command(bin());
        c.args([
            "serve",
            "--name",
            "quiet",
            "--no-http",
            "--store",
            "memory",
            "--heartbeat-ms",
            "200",
        ]);
        c.args(extra);
        spawn_ready("quiet", c)
    };
    let listen = || {
        let mut c = b.command(bin());
        c.args(["nodes", "--json", "--wait", "1.5", "--heartbeat-ms", "200"]);
        c.args(["--interface", "10.77.0.2", "--open-cluster"]);
        names(&nodes_json(c))
    };
    // On its own host it is found (multicast on loopback works).
    let node = start(&[]);
    let mut local = a.command(bin());
    local.args(["nodes", "--json", "--wait", "1.5", "--heartbeat-ms", "200"]);
    assert_eq!(names(&nodes_json(local)), vec!["quiet"]);
    assert!(
        listen().is_empty(),
        "a keyless node was heard beyond loopback"
    );
    drop(node);
    let _open = start(&["--open-cluster", "--interface", "10.77.0.1"]);
    assert_eq!(listen(), vec!["quiet"], "the listener hears an open node");
}
