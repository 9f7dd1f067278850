//! The FOSDEM power demo: an API node, a `power` service on the embedded store, and a worker
//! that squares `value` for every power in status `pending`, plus a live page at `/ui/`.
//!
//! ```text
//! cargo run --release --example power                      # everything in one process
//! cargo run --release --example power -- --role service    # or one role per process
//! cargo run --release --example power -- --role worker
//! cargo run --release --example power -- --role api
//! curl -X POST localhost:5001/power -d '{"value":7,"status":"pending"}'
//! ```

// A faster allocator: request handling allocates many small JSON values.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use axum::response::{Html, Redirect};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use serde_json::json;
use zeroservices::core::{CollectionSpec, Node, NodeType, Worker, WorkerHandle};
use zeroservices::http::{serve, HttpConfig};
use zeroservices::options::{init_telemetry, stop_signal, ClusterArgs, StoreSpec};

/// The page, compiled into the binary so it works from any directory and without internet.
const PAGE: &str = include_str!("power/index.html");
/// A React page of the pending powers, on the client library's `useLiveQuery`.
const PENDING: &str = include_str!("power/pending.html");

#[derive(Parser, Debug)]
struct Args {
    /// all | api | service | worker
    #[arg(long, default_value = "all")]
    role: String,
    /// embedded:PATH | memory
    #[arg(long, default_value = "embedded:./zeroservices-data")]
    store: StoreSpec,
    /// HTTP listen address (roles all and api).
    #[arg(long, default_value = "127.0.0.1:5001")]
    http: String,
    /// Worker role: how long a claimed job stays this worker's before another may run it
    /// (the delay after a worker dies), in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// Worker role: period of the catch-up listing, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    catch_up_ms: u64,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// The FOSDEM worker: squares `value` for every power in status `pending`.
fn squaring_worker(node: &Node, args: &Args) -> anyhow::Result<WorkerHandle> {
    let worker = Worker::new(node)
        .catch_up_every(Duration::from_millis(args.catch_up_ms.max(100)))
        .lease(Duration::from_millis(args.lease_ms))
        .rule("power", json!({"status": "pending"}), |ctx| async move {
            let value = ctx.resource.resource_data["value"].as_f64().unwrap_or(0.0);
            let result = value * value;
            // Integers stay integers in the result (7 → 49, not 49.0).
            let result = if result.fract() == 0.0 && result.abs() < 9e15 {
                json!(result as i64)
            } else {
                json!(result)
            };
            ctx.node
                .collection("power")
                .patch(
                    &ctx.resource.resource_id,
                    // `worker`: which worker process did it (one per job, even with several).
                    json!({"$set": {"status": "done", "result": result, "worker": ctx.node.node_id()}}),
                )
                .await?;
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("worker rule: {e}"))?;
    Ok(worker.start())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = init_telemetry(
        args.cluster.otlp_endpoint.as_deref(),
        &format!("power-{}", args.role),
    )?;
    let (serves, works, http) = match args.role.as_str() {
        "all" => (true, true, true),
        "service" => (true, false, false),
        "worker" => (false, true, false),
        "api" => (false, false, true),
        other => anyhow::bail!("unknown role {other:?}: use all, api, service or worker"),
    };
    let node_type = match args.role.as_str() {
        "worker" => NodeType::Worker,
        "api" => NodeType::Api,
        _ => NodeType::Service,
    };
    // `/ui/` is this example's page: no collection may take its name.
    let mut builder = args
        .cluster
        .apply(Node::builder(&format!("power-{}", args.role)).node_type(node_type))?
        .reserve_names(&["ui"]);
    if serves {
        let store = args.store.open().await?;
        if let Some(dir) = args.store.state_dir() {
            builder = builder.state_dir(dir);
        }
        builder = builder.collection(CollectionSpec::new("power", store.collection("power")));
    }
    let node = builder.start().await?;
    let _worker = if works {
        Some(squaring_worker(&node, &args)?)
    } else {
        None
    };
    if http {
        let listener = tokio::net::TcpListener::bind(&args.http).await?;
        let addr = listener.local_addr()?;
        tracing::info!("power demo on http://{addr}/ui/");
        println!(
            "{}",
            json!({"event": "ready", "role": args.role, "http": addr.to_string(), "node_id": node.node_id()})
        );
        let ui = Router::new()
            .route("/ui/", get(|| async { Html(PAGE) }))
            .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
            .route("/ui/pending.html", get(|| async { Html(PENDING) }))
            .merge(zeroservices::web::client_routes("/ui"));
        serve(
            listener,
            node.handle(),
            HttpConfig::default(),
            Some(ui),
            stop_signal(),
        )
        .await?;
    } else {
        println!(
            "{}",
            json!({"event": "ready", "role": args.role, "node_id": node.node_id()})
        );
        stop_signal().await;
    }
    node.shutdown().await;
    Ok(())
}
