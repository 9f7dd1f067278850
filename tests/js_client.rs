//! The JavaScript client (`clients/js`) against a real node: its `node --test` suite, run by
//! `cargo test` with this build's `zeroservices` binary. Node 20 or later (the websocket of
//! the platform, behind `--experimental-websocket` on 20).

mod common;

use std::process::Command;

#[test]
fn the_javascript_client_suite_passes() {
    let out = Command::new("node")
        .args(["--experimental-websocket", "--test", "test/"])
        .current_dir(common::root().join("clients/js"))
        .env("ZS_BIN", common::bin())
        .output()
        .expect("node (20 or later) must be installed to test clients/js");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node --test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# pass 5"), "not every case ran:\n{stdout}");
}
