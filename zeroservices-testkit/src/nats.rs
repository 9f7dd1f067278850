//! A `nats-server` for tests: started on a free loopback port with JetStream and its store in a
//! fresh temporary directory, killed (and the directory removed) when dropped. A test that
//! needs one fails, never skips, when `nats-server` is not installed (`.ci/run` installs
//! Debian's).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A running `nats-server` (see the module doc).
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    /// Client port on 127.0.0.1.
    pub port: u16,
    /// Its directory (configuration and JetStream store).
    pub dir: PathBuf,
}

/// A port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "zs-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

impl NatsServer {
    /// Starts a server with JetStream on a free port and waits until it accepts clients.
    pub fn start() -> NatsServer {
        NatsServer::start_with("")
    }

    /// [`NatsServer::start`], with more configuration lines.
    pub fn start_with(extra_config: &str) -> NatsServer {
        let port = free_port();
        let dir = temp_dir("nats");
        // max_payload: the protocol's body limit (8 MiB) plus the frames around it.
        let config = format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 9MB\njetstream {{ store_dir: {:?} }}\n{extra_config}\n",
            dir.join("js")
        );
        let conf = dir.join("nats.conf");
        std::fs::write(&conf, config).expect("write nats.conf");
        let log = std::fs::File::create(dir.join("nats.log")).expect("nats.log");
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start nats-server ({e}): install it (Debian: apt-get install nats-server; .ci/run does)")
            });
        let server = NatsServer { child, port, dir };
        server.wait_ready(Duration::from_secs(10));
        server
    }

    /// Waits until the port accepts connections.
    pub fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                start.elapsed() < limit,
                "nats-server did not listen on {} within {limit:?}; log: {}",
                self.port,
                std::fs::read_to_string(self.dir.join("nats.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
