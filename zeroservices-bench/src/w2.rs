//! W2 — event fan-out: one publisher, several subscriber processes; `framework` publishes with
//! `Node::publish` and subscribes with `Node::subscribe` (peers found by static discovery),
//! `raw` uses libzmq's PUB/SUB alone (the `zmq` crate) with the same frames and no high-water
//! mark, as the `zmq-raw` peer of WORKLOADS.md does. On NATS: `nats` (the framework on the
//! NATS medium) and `nats-raw` (bare async-nats publish/subscribe on the same server).

use std::io::BufRead;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use bytes::Bytes;
use serde_json::{json, Value};
use zeroservices_core::{discovery::StaticDiscovery, medium::ZmqConfig, Node};

use crate::stats::{emit, env_or};

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

fn event(seq: u64) -> Value {
    json!({"seq": seq, "ts": now_ms(), "kind": "power.created", "data": {"id": format!("p-{seq:07}"), "watts": 1500}})
}

enum Publisher {
    Framework(Node),
    Raw(zmq::Socket),
    NatsRaw(async_nats::Client),
}

impl Publisher {
    async fn send(&mut self, topic: &str, v: &Value) -> anyhow::Result<()> {
        match self {
            Publisher::Framework(n) => Ok(n.publish(topic, v).await?),
            // A PUB send never blocks: it queues (HWM 0: without bound) or drops.
            Publisher::Raw(p) => {
                Ok(p.send_multipart([topic.as_bytes(), v.to_string().as_bytes()], 0)?)
            }
            Publisher::NatsRaw(c) => Ok(c
                .publish(topic.to_owned(), Bytes::from(v.to_string()))
                .await?),
        }
    }
}

pub(crate) async fn publisher(imp: &str) -> anyhow::Result<()> {
    let port: u16 = env_or("BENCH_PORT", 0);
    let events: u64 = env_or("BENCH_EVENTS", 200_000);
    let mut p = match imp {
        "framework" => Publisher::Framework(
            Node::builder("w2-pub")
                .zmq(ZmqConfig {
                    router_port: port,
                    ..ZmqConfig::loopback()
                })
                .start()
                .await?,
        ),
        "raw" => {
            let s = zmq::Context::new().socket(zmq::PUB)?;
            s.set_sndhwm(0)?;
            s.bind(&format!("tcp://127.0.0.1:{port}"))?;
            Publisher::Raw(s)
        }
        "nats" => Publisher::Framework(
            Node::builder("w2-pub")
                .nats(crate::nats::config())
                .start()
                .await?,
        ),
        "nats-raw" => Publisher::NatsRaw(crate::nats::connect().await?),
        other => bail!("unknown implementation {other}"),
    };
    // stdin: "go" starts the burst; EOF ends the process.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
        std::process::exit(0);
    });
    emit(json!({"event": "ready"}));
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = tick.tick() => p.send("warmup", &json!({"warmup": true})).await?,
            line = rx.recv() => match line.as_deref() {
                Some("go") => break,
                Some(_) => {}
                None => return Ok(()),
            },
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let start = Instant::now();
    // As WORKLOADS.md asks of event-loop peers: batches of publish calls, then one turn of the
    // runtime so sockets can drain (libzmq's own I/O thread writes the raw PUB's queue).
    let batch = 1000;
    for seq in 0..events {
        p.send("bench", &event(seq)).await?;
        if seq % batch == batch - 1 {
            tokio::task::yield_now().await;
        }
    }
    if let Publisher::NatsRaw(c) = &p {
        c.flush().await?;
    }
    let elapsed = start.elapsed().as_secs_f64();
    emit(
        json!({"event": "sent", "count": events, "elapsed_s": elapsed, "send_rate": events as f64 / elapsed}),
    );
    // Stay alive until the harness closes stdin.
    while rx.recv().await.is_some() {}
    Ok(())
}

enum Source {
    /// The node is kept alive for as long as the subscription is read.
    Framework {
        _node: Node,
        sub: zeroservices_core::Subscription,
    },
    Raw(zmq::Socket),
    NatsRaw(async_nats::Subscriber),
}

impl Source {
    /// The next event within `wait`: (is it a `bench` event, its payload).
    async fn next(&mut self, wait: Duration) -> Option<(bool, Bytes)> {
        match self {
            Source::Framework { sub, .. } => tokio::time::timeout(wait, sub.recv())
                .await
                .ok()
                .flatten()
                .map(|ev| (&*ev.topic == "bench", ev.payload)),
            // The raw subscriber is the process's only work: a blocking receive with a timeout.
            Source::Raw(s) => loop {
                s.set_rcvtimeo(i32::try_from(wait.as_millis()).unwrap_or(i32::MAX))
                    .ok()?;
                let mut f = s.recv_multipart(0).ok()?;
                if f.len() == 2 {
                    let payload = Bytes::from(f.pop()?);
                    return Some((f[0] == b"bench", payload));
                }
            },
            Source::NatsRaw(sub) => {
                use futures::StreamExt as _;
                let m = tokio::time::timeout(wait, sub.next()).await.ok()??;
                Some((m.subject.as_str() == "bench", m.payload))
            }
        }
    }
}

impl Source {
    /// Reads straight from the framework subscription or the raw SUB socket (no extra hop).
    async fn open(imp: &str, index: usize, port: u16) -> anyhow::Result<Source> {
        Ok(match imp {
            "framework" | "nats" => {
                let b = Node::builder(&format!("w2-sub-{index}"));
                let b = if imp == "nats" {
                    b.nats(crate::nats::config())
                } else {
                    b.zmq(ZmqConfig::loopback())
                        .discovery(StaticDiscovery::new([format!("tcp://127.0.0.1:{port}")]))
                };
                let node = b.heartbeat(Duration::from_millis(200)).start().await?;
                let sub = node.subscribe_many(vec!["bench".into(), "warmup".into()], 1 << 20);
                Source::Framework { _node: node, sub }
            }
            "raw" => {
                let s = zmq::Context::new().socket(zmq::SUB)?;
                s.set_rcvhwm(0)?;
                s.set_subscribe(b"bench")?;
                s.set_subscribe(b"warmup")?;
                s.connect(&format!("tcp://127.0.0.1:{port}"))?;
                Source::Raw(s)
            }
            "nats-raw" => {
                let c = crate::nats::connect().await?;
                // One subscription for both subjects, as the framework has one stream.
                let sub = c.subscribe("*").await?;
                Source::NatsRaw(sub)
            }
            other => bail!("unknown implementation {other}"),
        })
    }
}

pub(crate) async fn subscriber(imp: &str, index: usize) -> anyhow::Result<()> {
    let port: u16 = env_or("BENCH_PORT", 0);
    let expected: u64 = env_or("BENCH_EVENTS", 200_000);
    let idle = Duration::from_secs_f64(env_or("BENCH_IDLE_S", 3.0));
    let cap = Duration::from_secs(env_or("BENCH_TIME_CAP_S", 90));
    let peer = format!("w2-{imp}");
    let mut source = Source::open(imp, index, port).await?;
    // ready on the first warmup event
    loop {
        match source.next(Duration::from_secs(30)).await {
            Some((false, _)) => break,
            Some(_) => {}
            None => bail!("no warmup event within 30 s"),
        }
    }
    emit(json!({"event": "ready", "subscriber": index}));
    let ready_at = Instant::now();
    let (mut received, mut out_of_order, mut last_seq) = (0u64, 0u64, None::<u64>);
    let (mut first_ts, mut first_recv, mut last_recv_wall, mut first_delay) =
        (None::<f64>, None::<Instant>, 0.0f64, None::<f64>);
    let mut last_at = Instant::now();
    let stop_reason = loop {
        if received >= expected {
            break "all";
        }
        if ready_at.elapsed() > cap {
            break "time cap";
        }
        let wait = if received > 0 {
            idle.saturating_sub(last_at.elapsed())
        } else {
            cap.saturating_sub(ready_at.elapsed())
        };
        let Some((is_bench, payload)) = source.next(wait).await else {
            break if received > 0 { "idle" } else { "time cap" };
        };
        if !is_bench {
            continue;
        }
        let v: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
        let now_wall = now_ms();
        last_at = Instant::now();
        received += 1;
        let seq = v["seq"].as_u64().unwrap_or(0);
        if last_seq.is_some_and(|l| seq < l) {
            out_of_order += 1;
        }
        last_seq = Some(seq);
        if first_ts.is_none() {
            let ts = v["ts"].as_f64().unwrap_or(now_wall);
            first_ts = Some(ts);
            first_recv = Some(Instant::now());
            first_delay = Some(now_wall - ts);
        }
        last_recv_wall = now_wall;
    };
    let span_s = first_ts
        .map(|t| (last_recv_wall - t) / 1000.0)
        .unwrap_or(0.0);
    let recv_span_s = first_recv
        .map(|f| (last_at - f).as_secs_f64())
        .unwrap_or(0.0);
    let lost = expected.saturating_sub(received);
    emit(
        json!({"event": "result", "peer": peer, "subscriber": index, "expected": expected, "received": received, "lost": lost,
                "loss_pct": lost as f64 * 100.0 / expected as f64, "out_of_order": out_of_order, "stop_reason": stop_reason,
                "span_s": span_s, "events_per_s": if span_s > 0.0 { received as f64 / span_s } else { 0.0 },
                "recv_span_s": recv_span_s, "first_event_delay_ms": first_delay}),
    );
    Ok(())
}
