//! nx-27017, the MongoDB-compatible test server from `.venv`, for tests that need a database
//! several nodes share.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::root;

/// A program of the test venv (`ZS_PYTHON`'s directory, else `.venv/bin`).
pub fn venv_bin(name: &str) -> PathBuf {
    let p = std::env::var_os("ZS_PYTHON")
        .map(|p| PathBuf::from(p).with_file_name(name))
        .unwrap_or_else(|| root().join(".venv/bin").join(name));
    assert!(
        p.exists(),
        "{} missing: run ./scripts/test (it installs nx-27017 and pymongo into .venv)",
        p.display()
    );
    p
}

/// A running nx-27017, killed on drop.
pub struct Nx(Child);

impl Drop for Nx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts nx-27017 on `port` with its data in `dir` and waits until it listens.
pub fn start_nx(port: u16, dir: &std::path::Path) -> Nx {
    let child = Command::new(venv_bin("nx-27017"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(dir)
        .arg("--log-file")
        .arg(dir.join("nx.log"))
        .arg("--pid-file")
        .arg(dir.join("nx.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nx-27017");
    super::eventually("nx-27017 to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    Nx(child)
}
