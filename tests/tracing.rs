//! Distributed tracing of the power demo across three processes (API node, service, worker),
//! each exporting to a small OTLP/HTTP receiver run by the test: the request's trace — begun
//! by the caller's `traceparent` header — holds the HTTP span, the request to the service, its
//! store write, the worker's job (reached through the event) and the job's patch with its own
//! store write, each the child of the one before; on ZeroMQ and on NATS. Writes the trace as a
//! tree to `target/power-trace-<medium>.txt`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{example, free_port, spawn_ready, Proc};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message;
use serde_json::Value;

/// One span as received.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent: String,
    start: u64,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Reads HTTP/1.1 requests on one connection (keep-alive) and decodes each OTLP body.
fn serve_connection(stream: TcpStream, spans: Arc<Mutex<Vec<Got>>>) {
    let mut out = match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        // Request line, then headers up to the blank line.
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if let Ok(req) = ExportTraceServiceRequest::decode(body.as_slice()) {
            let mut got = spans.lock().expect("spans");
            for rs in req.resource_spans {
                let service = rs
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| match kv.value.as_ref().and_then(|v| v.value.clone()) {
                        Some(AnyValue::StringValue(s)) => Some(s),
                        _ => None,
                    })
                    .unwrap_or_default();
                for s in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
                    got.push(Got {
                        service: service.clone(),
                        name: s.name,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent: hex(&s.parent_span_id),
                        start: s.start_time_unix_nano,
                    });
                }
            }
        }
        let ok =
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if out.write_all(ok).is_err() {
            return;
        }
    }
}

/// An OTLP/HTTP receiver on a free port; the spans it got.
fn receiver() -> (u16, Arc<Mutex<Vec<Got>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let s = spans.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let s = s.clone();
            std::thread::spawn(move || serve_connection(stream, s));
        }
    });
    (port, spans)
}

fn power(role: &str, otlp: u16, extra: &[&str]) -> Proc {
    let mut c = Command::new(example("power"));
    c.args(["--role", role, "--store", "memory", "--bind", "127.0.0.1"]);
    c.args(["--heartbeat-ms", "200", "--otlp-endpoint"]);
    c.arg(format!("http://127.0.0.1:{otlp}"));
    c.args(extra);
    spawn_ready(&format!("power-{role}"), c)
}

/// The trace as an indented tree (children in start order).
fn tree(spans: &[Got], root_parent: &str) -> String {
    fn walk(spans: &[Got], parent: &str, depth: usize, out: &mut String) {
        let mut kids: Vec<&Got> = spans.iter().filter(|s| s.parent == parent).collect();
        kids.sort_by_key(|s| s.start);
        for k in kids {
            out.push_str(&format!(
                "{}{}  [{}]\n",
                "  ".repeat(depth),
                k.name,
                k.service
            ));
            walk(spans, &k.span_id, depth + 1, out);
        }
    }
    let mut out = String::new();
    walk(spans, root_parent, 0, &mut out);
    out
}

#[test]
fn one_trace_follows_a_power_from_the_http_request_to_the_workers_patch() {
    let (otlp, spans) = receiver();
    let router = free_port();
    let _service = power("service", otlp, &["--router-port", &router.to_string()]);
    let seed = format!("static:127.0.0.1:{router}");
    let _worker = power(
        "worker",
        otlp,
        &["--discovery", &seed, "--catch-up-ms", "60000"],
    );
    let http = free_port();
    let _api = power(
        "api",
        otlp,
        &["--discovery", &seed, "--http", &format!("127.0.0.1:{http}")],
    );
    check_one_trace(&spans, http, "zmq");
}

/// The same over NATS (the job comes from the JetStream work queue): the trace context
/// travels in the same request and event bodies.
#[test]
fn one_trace_follows_a_power_on_nats_too() {
    let nats = zeroservices_testkit::nats::NatsServer::start();
    let url = nats.url();
    let (otlp, spans) = receiver();
    let _service = power("service", otlp, &["--medium", &url]);
    let _worker = power(
        "worker",
        otlp,
        &["--medium", &url, "--catch-up-ms", "60000"],
    );
    let http = free_port();
    let _api = power(
        "api",
        otlp,
        &["--medium", &url, "--http", &format!("127.0.0.1:{http}")],
    );
    check_one_trace(&spans, http, "nats");
}

/// Sends a pending power through the API node at `http` with the caller's own `traceparent`
/// and checks the spans received as one trace with the right parents.
fn check_one_trace(spans: &Arc<Mutex<Vec<Got>>>, http: u16, medium: &str) {
    let base = format!("http://127.0.0.1:{http}/power");
    common::eventually(
        "the API node to route power",
        Duration::from_secs(10),
        || ureq::get(&base).call().ok().map(|_| ()),
    );

    // The caller's own trace: everything below must join it.
    let trace_id = match medium {
        "zmq" => "4bf92f3577b34da6a3ce929d0e0e4736",
        _ => "5cf92f3577b34da6a3ce929d0e0e4737",
    };
    let caller_span = "00f067aa0ba902b7";
    let r = ureq::post(&base)
        .set("traceparent", &format!("00-{trace_id}-{caller_span}-01"))
        .send_string(r#"{"value": 7, "status": "pending"}"#)
        .expect("create");
    let created: Value = serde_json::from_str(&r.into_string().expect("body")).expect("json");
    let id = created["resource_id"].as_str().expect("id").to_owned();
    common::eventually("the worker to square it", Duration::from_secs(15), || {
        let v: Value = serde_json::from_str(
            &ureq::get(&format!("{base}/{id}"))
                .call()
                .ok()?
                .into_string()
                .ok()?,
        )
        .ok()?;
        (v["resource_data"]["result"] == 49).then_some(())
    });

    let expected = [
        "POST /power",
        "request power.create",
        "handle power.create",
        "store create power",
        "job power",
        "request power.patch",
        "handle power.patch",
        "store patch power",
    ];
    let trace = common::eventually("every span exported", Duration::from_secs(15), || {
        let got: Vec<Got> = spans
            .lock()
            .expect("spans")
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect();
        expected
            .iter()
            .all(|n| got.iter().any(|s| s.name == *n))
            .then_some(got)
    });
    let by_name: HashMap<&str, &Got> = trace.iter().map(|s| (s.name.as_str(), s)).collect();
    let parent_of = |child: &str, parent: &str| {
        let (c, p) = (by_name[child], by_name[parent]);
        assert_eq!(
            c.parent,
            p.span_id,
            "{child} ({}) is not a child of {parent} ({})\n{}",
            c.service,
            p.service,
            tree(&trace, caller_span)
        );
    };
    assert_eq!(
        by_name["POST /power"].parent, caller_span,
        "the caller's traceparent"
    );
    parent_of("request power.create", "POST /power");
    parent_of("handle power.create", "request power.create");
    parent_of("store create power", "handle power.create");
    parent_of("job power", "handle power.create");
    parent_of("request power.patch", "job power");
    parent_of("handle power.patch", "request power.patch");
    parent_of("store patch power", "handle power.patch");
    let services = |names: &[&str]| -> Vec<String> {
        names.iter().map(|n| by_name[n].service.clone()).collect()
    };
    assert_eq!(
        services(&[
            "POST /power",
            "handle power.create",
            "job power",
            "handle power.patch"
        ]),
        [
            "power-api",
            "power-service",
            "power-worker",
            "power-service"
        ]
    );
    let text = tree(&trace, caller_span);
    eprintln!("{text}");
    let target = std::env::current_exe().ok().and_then(|e| {
        e.ancestors()
            .nth(3)
            .map(|p| p.join(format!("power-trace-{medium}.txt")))
    });
    if let Some(path) = target {
        let _ = std::fs::write(path, &text);
    }
}
