//! `zeroservices new NAME` writes a project that builds and whose own test passes. It builds
//! in the workspace's target directory with the workspace's Cargo.lock, so only the new crate
//! compiles.

mod common;

use std::process::Command;

use common::{bin, root};

#[test]
fn a_new_project_builds_and_its_test_passes() {
    let parent = std::env::temp_dir().join(format!("zs-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    std::fs::create_dir_all(&parent).unwrap();
    let out = Command::new(bin())
        .args(["new", "power-plant", "--dir"])
        .arg(&parent)
        .output()
        .expect("new");
    assert!(
        out.status.success(),
        "new failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = parent.join("power-plant");
    for f in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "src/lib.rs",
        "tests/smoke.rs",
        "README.md",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    // Refuses to overwrite, and rejects bad names.
    assert!(!Command::new(bin())
        .args(["new", "power-plant", "--dir"])
        .arg(&parent)
        .status()
        .unwrap()
        .success());
    assert!(!Command::new(bin())
        .args(["new", "9lives", "--dir"])
        .arg(&parent)
        .status()
        .unwrap()
        .success());

    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    // A target directory of its own, dependencies unoptimized and without debug info. Sharing
    // the workspace's (and its dependency profile) was tried (issue 26): the TLS stack differs
    // by features and was rebuilt at opt-level 2, and the test took 157 s instead of 87 s.
    // libzmq is not built again: the workspace built it for this very test binary, and
    // `zmq-sys` declares `links = "zmq"`, so a build-script override hands that library to
    // the new project (cargo then neither builds zeromq-src nor runs the build script).
    let libzmq = built_libzmq(&target);
    let host = host_triple();
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["test", "--offline", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", target.join("new-project"))
        .env("CARGO_PROFILE_DEV_DEBUG", "0");
    cargo.args([
        "--config".to_owned(),
        format!(r#"target.{host}.zmq.rustc-link-lib = ["static=zmq", "stdc++"]"#),
        "--config".to_owned(),
        format!(
            r#"target.{host}.zmq.rustc-link-search = ["native={}"]"#,
            libzmq.display()
        ),
    ]);
    let test = cargo.output().expect("cargo test in the new project");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(
        test.status.success(),
        "generated project's tests failed:\n{log}"
    );
    assert!(
        log.contains("1 passed"),
        "the smoke test did not run:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&parent);
}

/// The directory holding the `libzmq.a` that `zmq-sys` built for the workspace's tests.
fn built_libzmq(target: &std::path::Path) -> std::path::PathBuf {
    let build = target.join("debug").join("build");
    std::fs::read_dir(&build)
        .expect("target/debug/build")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("zmq-sys-"))
        .map(|e| e.path().join("out").join("lib"))
        .find(|lib| lib.join("libzmq.a").exists())
        .expect("no libzmq.a built by zmq-sys in target/debug/build")
}

/// The host's target triple, as rustc reports it.
fn host_triple() -> String {
    let out = Command::new("rustc")
        .arg("-vV")
        .output()
        .expect("rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("host line in rustc -vV")
        .to_owned()
}
