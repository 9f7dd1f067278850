//! The driver behind `run`: starts every participant as a child process of this binary, runs
//! the workloads in order, and prints a table (and JSON) with each figure and its ratio to the
//! baseline measured in the same run.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::stats::rss_kib;

struct Part {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
}

impl Part {
    fn start(name: &str, args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Part> {
        let mut c = Command::new(std::env::current_exe()?);
        c.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        c.env("BENCH_DEADLINE_S", "300")
            .env("ZEROSERVICES_LOG", "error");
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().with_context(|| format!("spawn {name}"))?;
        let stdin = child.stdin.take();
        let out = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Part {
            name: name.to_owned(),
            child,
            stdin,
            lines: rx,
        })
    }

    fn wait(&self, event: &str, limit: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(v) if v["event"] == event => return Ok(v),
                Ok(v) if v["event"] == "error" => bail!("{}: {}", self.name, v["error"]),
                Ok(_) => continue,
                Err(_) => bail!("{}: no {event:?} line within {limit:?}", self.name),
            }
        }
    }

    fn say(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            let _ = writeln!(s, "{line}");
        }
    }

    fn rss(&self) -> Option<u64> {
        rss_kib(self.child.id())
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        self.stdin.take(); // closing stdin asks services to exit
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

struct Sizes {
    w1_count: usize,
    w1_warmup: usize,
    w1_secs: f64,
    w2_events: u64,
    w3_warm: f64,
    w3_secs: f64,
    w3c_posts: usize,
    w3c_warmup: usize,
    fanout_posts: usize,
}

fn w1(imp: &str, s: &Sizes, extra: &[(&str, String)]) -> anyhow::Result<Value> {
    let p = port()?.to_string();
    let mut env = vec![("BENCH_PORT", p.clone())];
    env.extend_from_slice(extra);
    let svc = Part::start(&format!("w1-service {imp}"), &["w1-service", imp], &env)?;
    svc.wait("ready", Duration::from_secs(10))?;
    let idle = svc.rss();
    let run = |mode: &str| -> anyhow::Result<Value> {
        let mut env = vec![
            ("BENCH_PORT", p.clone()),
            ("BENCH_MODE", mode.into()),
            ("BENCH_COUNT", s.w1_count.to_string()),
            ("BENCH_WARMUP", s.w1_warmup.to_string()),
            ("BENCH_DURATION_S", s.w1_secs.to_string()),
            ("BENCH_INFLIGHT", "64".into()),
        ];
        env.extend_from_slice(extra);
        let c = Part::start(
            &format!("w1-client {imp} {mode}"),
            &["w1-client", imp],
            &env,
        )?;
        c.wait("result", Duration::from_secs(90))
    };
    let latency = run("latency")?;
    let throughput = run("throughput")?;
    Ok(
        json!({"latency": latency, "throughput": throughput, "service_rss_kib": {"idle": idle, "end": svc.rss()}}),
    )
}

fn w2(imp: &str, s: &Sizes, extra: &[(&str, String)]) -> anyhow::Result<Value> {
    let p = port()?.to_string();
    let mut env = vec![
        ("BENCH_PORT", p),
        ("BENCH_EVENTS", s.w2_events.to_string()),
        ("BENCH_IDLE_S", "3".to_string()),
    ];
    env.extend_from_slice(extra);
    let mut publisher = Part::start(&format!("w2-pub {imp}"), &["w2-pub", imp], &env)?;
    publisher.wait("ready", Duration::from_secs(10))?;
    let idle = publisher.rss();
    let subs: Vec<Part> = (0..4)
        .map(|i| {
            Part::start(
                &format!("w2-sub {imp} {i}"),
                &["w2-sub", imp, &i.to_string()],
                &env,
            )
        })
        .collect::<anyhow::Result<_>>()?;
    for sub in &subs {
        sub.wait("ready", Duration::from_secs(30))?;
    }
    publisher.say("go");
    let results: Vec<Value> = subs
        .iter()
        .map(|s| s.wait("result", Duration::from_secs(120)))
        .collect::<anyhow::Result<_>>()?;
    let sent = publisher.wait("sent", Duration::from_secs(60))?;
    let rates: Vec<f64> = results
        .iter()
        .filter_map(|r| r["events_per_s"].as_f64())
        .collect();
    let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    let slowest = rates.iter().cloned().fold(f64::INFINITY, f64::min);
    let received: u64 = results.iter().filter_map(|r| r["received"].as_u64()).sum();
    let loss =
        100.0 * (4 * s.w2_events - received.min(4 * s.w2_events)) as f64 / (4 * s.w2_events) as f64;
    Ok(
        json!({"events_per_s_mean": mean, "events_per_s_slowest": slowest, "loss_pct": loss, "sent": sent,
              "subscribers": results, "publisher_rss_kib": {"idle": idle, "end": publisher.rss()}}),
    )
}

/// A create through a short HTTP exchange, to have an id for GET.
fn create_one(addr: &str) -> anyhow::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    let body = crate::w3::BODY;
    write!(s, "POST /power HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let json_start = out.find("\r\n\r\n").context("response")? + 4;
    let v: Value = serde_json::from_str(&out[json_start..])?;
    Ok(v["resource_id"].as_str().unwrap_or("0").to_owned())
}

fn w3(mode: &str, s: &Sizes) -> anyhow::Result<Value> {
    let p = port()?;
    let mut parts = Vec::new();
    if mode == "split" {
        let sp = port()?;
        let svc = Part::start(
            "w3-server service",
            &["w3-server", "service"],
            &[("BENCH_PORT", sp.to_string())],
        )?;
        svc.wait("ready", Duration::from_secs(10))?;
        parts.push(svc);
        let api = Part::start(
            "w3-server api",
            &["w3-server", "api"],
            &[
                ("BENCH_PORT", p.to_string()),
                ("BENCH_SEED_PORT", sp.to_string()),
            ],
        )?;
        api.wait("ready", Duration::from_secs(15))?;
        parts.push(api);
    } else {
        let srv = Part::start(
            &format!("w3-server {mode}"),
            &["w3-server", mode],
            &[("BENCH_PORT", p.to_string())],
        )?;
        srv.wait("ready", Duration::from_secs(10))?;
        parts.push(srv);
    }
    let idle: Vec<Option<u64>> = parts.iter().map(Part::rss).collect();
    let url = format!("http://127.0.0.1:{p}");
    let load = |method: &str, path: &str, status: &str| -> anyhow::Result<Value> {
        let l = Part::start(
            "w3-load",
            &[
                "w3-load",
                &url,
                method,
                path,
                "32",
                &s.w3_warm.to_string(),
                &s.w3_secs.to_string(),
                status,
            ],
            &[],
        )?;
        l.wait("result", Duration::from_secs(120))
    };
    let post = load("POST", "/power", "201")?;
    let id = create_one(&format!("127.0.0.1:{p}"))?;
    let get = load("GET", &format!("/power/{id}"), "200")?;
    let realtime_with = |clients: usize, posts: usize, warmup: usize| -> anyhow::Result<Value> {
        let c = Part::start(
            "w3c-client",
            &["w3c-client"],
            &[
                ("BENCH_URL", url.clone()),
                ("BENCH_CLIENTS", clients.to_string()),
                ("BENCH_COUNT", posts.to_string()),
                ("BENCH_WARMUP", warmup.to_string()),
            ],
        )?;
        c.wait("result", Duration::from_secs(120))
    };
    let (realtime, fanout) = match mode {
        "baseline" => (Value::Null, Value::Null),
        "all" => (
            realtime_with(16, s.w3c_posts, s.w3c_warmup)?,
            realtime_with(1000, s.fanout_posts, 10)?,
        ),
        _ => (realtime_with(16, s.w3c_posts, s.w3c_warmup)?, Value::Null),
    };
    let end: Vec<Option<u64>> = parts.iter().map(Part::rss).collect();
    Ok(
        json!({"post": post, "get": get, "realtime": realtime, "fanout_1000": fanout, "server_rss_kib": {"idle": idle, "end": end}}),
    )
}

use crate::report::{f, ratio};

/// The W3 servers measured: bare axum, one node on the memory store, the same on the embedded
/// store, and the service + API split.
pub(crate) const W3_MODES: [&str; 4] = ["baseline", "all", "all-embedded", "split"];

impl Sizes {
    /// The counts of WORKLOADS.md, or tiny ones for a smoke test.
    fn new(quick: bool) -> Sizes {
        if quick {
            Sizes {
                w1_count: 300,
                w1_warmup: 50,
                w1_secs: 0.5,
                w2_events: 2_000,
                w3_warm: 0.1,
                w3_secs: 0.5,
                w3c_posts: 20,
                w3c_warmup: 5,
                fanout_posts: 5,
            }
        } else {
            Sizes {
                w1_count: 20_000,
                w1_warmup: 1_000,
                w1_secs: 10.0,
                w2_events: 200_000,
                w3_warm: 2.0,
                w3_secs: 10.0,
                w3c_posts: 2_000,
                w3c_warmup: 100,
                fanout_posts: 200,
            }
        }
    }
}

/// The short hash of the commit measured (empty outside a git checkout).
fn commit() -> String {
    Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

pub(crate) fn run(as_json: bool, quick: bool) -> anyhow::Result<()> {
    let s = Sizes::new(quick);
    // BENCH_ONLY=w1:nats-raw,w2:nats,... runs only those (workload:implementation).
    let only: Option<Vec<String>> = std::env::var("BENCH_ONLY")
        .ok()
        .map(|v| v.split(',').map(str::to_owned).collect());
    let want = |w: &str, imp: &str| {
        only.as_ref()
            .is_none_or(|o| o.iter().any(|x| x == &format!("{w}:{imp}") || x == w))
    };
    let started = Instant::now();
    let mut w1s = serde_json::Map::new();
    for imp in ["raw", "core", "resource", "resource-create"] {
        if !want("w1", imp) {
            continue;
        }
        eprintln!("W1 {imp} …");
        w1s.insert(imp.into(), w1(imp, &s, &[])?);
    }
    let mut w2s = serde_json::Map::new();
    for imp in ["raw", "framework"] {
        if !want("w2", imp) {
            continue;
        }
        eprintln!("W2 {imp} …");
        w2s.insert(imp.into(), w2(imp, &s, &[])?);
    }
    nats_workloads(&s, &want, &mut w1s, &mut w2s)?;
    let mut w3s = serde_json::Map::new();
    for mode in W3_MODES {
        if !want("w3", mode) {
            continue;
        }
        eprintln!("W3 {mode} …");
        w3s.insert(mode.into(), w3(mode, &s)?);
    }
    let (w1v, w2v, w3v) = (Value::Object(w1s), Value::Object(w2s), Value::Object(w3s));
    let tp = |imp: &str| f(&w1v, &[imp, "throughput", "req_per_s"]);
    let ratios = json!({
        "w1_core_vs_raw_throughput": ratio(tp("core"), tp("raw")),
        "w1_resource_vs_raw_throughput": ratio(tp("resource"), tp("raw")),
        "w1_resource_vs_core_throughput": ratio(tp("resource"), tp("core")),
        "w1_resource_create_vs_core_throughput": ratio(tp("resource-create"), tp("core")),
        "w1_core_vs_raw_p99_latency": ratio(f(&w1v, &["core", "latency", "latency", "p99_ms"]), f(&w1v, &["raw", "latency", "latency", "p99_ms"])),
        "w1_nats_core_vs_nats_raw_throughput": ratio(tp("nats-core"), tp("nats-raw")),
        "w1_nats_resource_vs_nats_raw_throughput": ratio(tp("nats-resource"), tp("nats-raw")),
        "w1_nats_resource_vs_zmq_resource_throughput": ratio(tp("nats-resource"), tp("resource")),
        "w2_nats_vs_nats_raw_events_per_s": ratio(f(&w2v, &["nats", "events_per_s_mean"]), f(&w2v, &["nats-raw", "events_per_s_mean"])),
        "w2_nats_vs_zmq_framework_events_per_s": ratio(f(&w2v, &["nats", "events_per_s_mean"]), f(&w2v, &["framework", "events_per_s_mean"])),
        "w2_framework_vs_raw_events_per_s": ratio(f(&w2v, &["framework", "events_per_s_mean"]), f(&w2v, &["raw", "events_per_s_mean"])),
        "w3_all_vs_axum_post": ratio(f(&w3v, &["all", "post", "req_per_s"]), f(&w3v, &["baseline", "post", "req_per_s"])),
        "w3_all_vs_axum_get": ratio(f(&w3v, &["all", "get", "req_per_s"]), f(&w3v, &["baseline", "get", "req_per_s"])),
        "w3_all_embedded_vs_all_post": ratio(f(&w3v, &["all-embedded", "post", "req_per_s"]), f(&w3v, &["all", "post", "req_per_s"])),
        "w3_split_vs_axum_post": ratio(f(&w3v, &["split", "post", "req_per_s"]), f(&w3v, &["baseline", "post", "req_per_s"])),
        "w3_split_vs_axum_get": ratio(f(&w3v, &["split", "get", "req_per_s"]), f(&w3v, &["baseline", "get", "req_per_s"])),
    });
    let commit = commit();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let doc = json!({"commit": commit, "cores": cores, "quick": quick, "elapsed_s": started.elapsed().as_secs_f64(),
                     "w1": w1v, "w2": w2v, "w3": w3v, "ratios": ratios});
    let mut table = crate::report::table(&w1v, &w2v, &w3v, &ratios);
    let mut row = |name: &str, value: String| table.push_str(&format!("{name:<52} {value}\n"));
    row(
        "elapsed (s)",
        format!("{:.1}", started.elapsed().as_secs_f64()),
    );
    if as_json {
        eprint!("{table}");
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{table}");
    }
    Ok(())
}

/// W1 and W2 over NATS, on a `nats-server` started for them (JetStream not used).
fn nats_workloads(
    s: &Sizes,
    want: &dyn Fn(&str, &str) -> bool,
    w1s: &mut serde_json::Map<String, Value>,
    w2s: &mut serde_json::Map<String, Value>,
) -> anyhow::Result<()> {
    let w1_imps = ["nats-raw", "nats-core", "nats-resource"];
    let w2_imps = ["nats-raw", "nats"];
    let wanted = w1_imps.iter().any(|i| want("w1", i)) || w2_imps.iter().any(|i| want("w2", i));
    if !wanted {
        return Ok(()); // no nats-server needed
    }
    let nats = zeroservices_testkit::nats::NatsServer::start();
    let env = [("BENCH_NATS_URL", nats.url())];
    for imp in w1_imps {
        if want("w1", imp) {
            eprintln!("W1 {imp} …");
            w1s.insert(imp.into(), w1(imp, s, &env)?);
        }
    }
    for imp in w2_imps {
        if want("w2", imp) {
            eprintln!("W2 {imp} …");
            w2s.insert(imp.into(), w2(imp, s, &env)?);
        }
    }
    Ok(())
}

/// The bounded soak: three nodes, mixed load for `secs` seconds, RSS sampled every 10 s.
pub(crate) fn soak(secs: u64) -> anyhow::Result<()> {
    let (svc_port, http_port) = (port()?, port()?);
    // Participants must outlive the soak (their default hard deadline is 300 s).
    let deadline = ("BENCH_DEADLINE_S", (secs + 120).to_string());
    let svc = Part::start(
        "service",
        &["w3-server", "service"],
        &[("BENCH_PORT", svc_port.to_string()), deadline.clone()],
    )?;
    svc.wait("ready", Duration::from_secs(10))?;
    let api = Part::start(
        "api",
        &["w3-server", "api"],
        &[
            ("BENCH_PORT", http_port.to_string()),
            ("BENCH_SEED_PORT", svc_port.to_string()),
            deadline.clone(),
        ],
    )?;
    api.wait("ready", Duration::from_secs(15))?;
    let worker = Part::start(
        "worker",
        &["soak-worker"],
        &[("BENCH_SEED_PORT", svc_port.to_string()), deadline.clone()],
    )?;
    worker.wait("ready", Duration::from_secs(15))?;
    let load = Part::start(
        "load",
        &[
            "soak-load",
            &format!("127.0.0.1:{http_port}"),
            &secs.to_string(),
        ],
        &[deadline],
    )?;
    let warmup = (secs / 5).max(10);
    let started = Instant::now();
    let mut samples: Vec<Value> = Vec::new();
    let nodes = [("service", &svc), ("api", &api), ("worker", &worker)];
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(
            Duration::from_secs(10)
                .min(Duration::from_secs(secs).saturating_sub(started.elapsed())),
        );
        let t = started.elapsed().as_secs();
        let row: serde_json::Map<String, Value> = nodes
            .iter()
            .map(|(n, p)| (n.to_string(), json!(p.rss())))
            .collect();
        eprintln!("t={t:>4}s rss KiB {}", Value::Object(row.clone()));
        samples.push(json!({"t_s": t, "rss_kib": row}));
    }
    let result = load.wait("result", Duration::from_secs(60))?;
    let after_warmup = samples
        .iter()
        .find(|s| s["t_s"].as_u64().unwrap_or(0) >= warmup)
        .cloned()
        .unwrap_or(Value::Null);
    let end = samples.last().cloned().unwrap_or(Value::Null);
    let mut growth = serde_json::Map::new();
    for (n, _) in nodes {
        let (a, b) = (
            after_warmup["rss_kib"][n].as_f64().unwrap_or(f64::NAN),
            end["rss_kib"][n].as_f64().unwrap_or(f64::NAN),
        );
        growth.insert(n.to_string(), json!((b / a - 1.0) * 100.0));
    }
    println!(
        "{}",
        serde_json::to_string_pretty(
            &json!({"secs": secs, "warmup_s": warmup, "load": result, "growth_pct_after_warmup": growth, "samples": samples})
        )?
    );
    Ok(())
}
