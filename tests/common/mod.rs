//! Fixtures for cross-process tests: child processes killed on drop, private network
//! namespaces for multicast (removed on drop), free ports, and waits with deadlines that say
//! what they waited for.
#![allow(dead_code, unreachable_pub)]

pub mod nx;
pub mod zmtp;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `zeroservices` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zeroservices"))
}

/// An example binary built by `cargo test` (target/<profile>/examples/NAME).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let p = profile_dir.join("examples").join(name);
    assert!(
        p.exists(),
        "example {name} not built at {} (cargo test builds examples)",
        p.display()
    );
    p
}

/// Workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free TCP port on 127.0.0.1, never handed out twice by one test process.
///
/// Ports come from below the kernel's ephemeral range, so a port picked here cannot be taken
/// meanwhile by a random bind (`tcp://127.0.0.1:*`, port 0) of a node another test started,
/// which is what a port the kernel chose and we released could be.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(12_000));
    let span = high - low;
    let start = (std::process::id().wrapping_mul(7919)) % span;
    for _ in 0..span {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = low + (start + k) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// A child process with its stdout lines on a channel; SIGKILLed on drop.
pub struct Proc {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
    pub name: String,
}

impl Proc {
    /// Waits for a stdout line containing `needle`; panics with `what` after `limit`.
    pub fn wait_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => continue,
                Err(_) => panic!(
                    "{}: no line containing {needle:?} within {limit:?}",
                    self.name
                ),
            }
        }
    }

    /// Sends a signal by number (15 = TERM, 9 = KILL).
    pub fn signal(&self, sig: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for exit at most `limit`; returns the exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (stdout captured line by line, stderr inherited so failures are visible).
pub fn spawn(name: &str, cmd: Command) -> Proc {
    spawn_with_stderr(name, cmd, Stdio::inherit())
}

/// [`spawn_ready`] with stderr (the log) written to `log`.
pub fn spawn_ready_logged(name: &str, cmd: Command, log: &std::path::Path) -> Proc {
    let f = std::fs::File::create(log).expect("log file");
    let p = spawn_with_stderr(name, cmd, Stdio::from(f));
    p.wait_line("\"ready\"", Duration::from_secs(10));
    p
}

fn spawn_with_stderr(name: &str, mut cmd: Command, stderr: Stdio) -> Proc {
    cmd.stdout(Stdio::piped())
        .stderr(stderr)
        .stdin(Stdio::null());
    cmd.env(
        "ZEROSERVICES_LOG",
        std::env::var("ZEROSERVICES_LOG").unwrap_or_else(|_| "warn".into()),
    );
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Proc {
        child,
        lines: rx,
        name: name.to_owned(),
    }
}

/// [`spawn`], then waits (at most 10 s) for the process's `{"event":"ready",...}` line.
pub fn spawn_ready(name: &str, cmd: Command) -> Proc {
    let p = spawn(name, cmd);
    p.wait_line("\"ready\"", Duration::from_secs(10));
    p
}

/// A private network namespace with only `lo`, multicast on and routed through it. Nothing in
/// it can reach any other network. Removed (with its processes) on drop. Needs root.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> NetNs {
        let name = format!("zst-{}-{}", std::process::id(), rand_suffix());
        let run = |args: &[&str]| {
            let st = Command::new("ip")
                .args(args)
                .status()
                .expect("run ip (iproute2 must be installed)");
            assert!(
                st.success(),
                "ip {args:?} failed: namespaces need root and iproute2"
            );
        };
        run(&["netns", "add", &name]);
        let ns = NetNs { name };
        run(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        run(&[
            "netns",
            "exec",
            &ns.name,
            "ip",
            "link",
            "set",
            "lo",
            "multicast",
            "on",
        ]);
        run(&[
            "netns",
            "exec",
            &ns.name,
            "ip",
            "route",
            "add",
            "224.0.0.0/4",
            "dev",
            "lo",
        ]);
        ns
    }

    /// Joins two namespaces with a veth pair: `a` gets 10.77.0.1/24, `b` 10.77.0.2/24, and
    /// multicast is routed over the link in both (a two-host LAN).
    /// Returns the interface names (in `a`, in `b`).
    pub fn link(a: &NetNs, b: &NetNs) -> (String, String) {
        let tag = rand_suffix();
        let (va, vb) = (
            format!("za{}", &tag[..tag.len().min(8)]),
            format!("zb{}", &tag[..tag.len().min(8)]),
        );
        let run = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().expect("ip");
            assert!(st.success(), "ip {args:?} failed");
        };
        run(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        run(&["link", "set", &va, "netns", &a.name]);
        run(&["link", "set", &vb, "netns", &b.name]);
        for (ns, dev, ip) in [(a, &va, "10.77.0.1/24"), (b, &vb, "10.77.0.2/24")] {
            run(&["-n", &ns.name, "addr", "add", ip, "dev", dev]);
            run(&["-n", &ns.name, "link", "set", dev, "up"]);
            run(&["-n", &ns.name, "link", "set", dev, "multicast", "on"]);
            run(&[
                "-n",
                &ns.name,
                "route",
                "replace",
                "224.0.0.0/4",
                "dev",
                dev,
            ]);
        }
        (va, vb)
    }

    /// A command running `program` inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(&self.name).arg(program);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

fn rand_suffix() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}", t ^ (std::process::id() << 8))
}

/// Polls `f` until it returns `Some`, at most `limit`; panics naming `what`.
pub fn eventually<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// `zeroservices nodes --json` output, parsed.
pub fn nodes_json(cmd: Command) -> serde_json::Value {
    let mut cmd = cmd;
    let out = cmd.output().expect("run nodes");
    assert!(
        out.status.success(),
        "nodes failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "nodes --json printed invalid JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Names in a `nodes --json` array.
pub fn names(v: &serde_json::Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect();
    n.sort();
    n
}

/// A file in the temporary directory, removed on drop (users, keys and secrets for the CLI,
/// which reads secrets from files only).
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "zs-{}-{}-{name}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::write(&path, contents).expect("write temporary file");
        TempFile(path)
    }

    /// The path, for an argument.
    pub fn arg(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `zeroservices serve` of the `power` collection on `store`, without HTTP or discovery, its
/// request port `port` on loopback, heartbeat 200 ms; once it is ready.
pub fn serve_power(name: &str, port: u16, store: &str) -> Proc {
    let mut c = Command::new(bin());
    c.args([
        "serve",
        "--name",
        name,
        "--no-http",
        "--collection",
        "power",
    ]);
    c.args([
        "--store",
        store,
        "--discovery",
        "none",
        "--bind",
        "127.0.0.1",
    ]);
    c.args(["--router-port", &port.to_string(), "--heartbeat-ms", "200"]);
    spawn_ready(name, c)
}
