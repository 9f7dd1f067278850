//! Chat between nodes: every process is a node with a page; messages are events on
//! `chat.message`, and peers joining or leaving appear live (`chat.presence`, local events).
//!
//! ```text
//! cargo run --release --example chat -- --name alice --http 127.0.0.1:5002
//! cargo run --release --example chat -- --name bob   --http 127.0.0.1:5003
//! # open http://127.0.0.1:5002/chat/ and http://127.0.0.1:5003/chat/
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use serde_json::{json, Value};
use zeroservices::core::{Announcement, Node, NodeHandle, Service};
use zeroservices::http::{serve, HttpConfig};
use zeroservices::options::{init_telemetry, stop_signal, ClusterArgs};

const PAGE: &str = include_str!("chat/index.html");

#[derive(Parser, Debug)]
struct Args {
    /// Your name in the chat.
    #[arg(long)]
    name: String,
    /// HTTP address of this node's page.
    #[arg(long, default_value = "127.0.0.1:5002")]
    http: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Tells this node's page who comes and goes.
struct Presence;

#[async_trait]
impl Service for Presence {
    async fn on_peer_join(&self, node: &NodeHandle, peer: &Announcement) {
        node.publish_local(
            "chat.presence",
            &json!({"event": "join", "name": peer.name, "node_id": peer.node_id}),
        );
    }
    async fn on_peer_leave(&self, node: &NodeHandle, peer: &Announcement) {
        node.publish_local(
            "chat.presence",
            &json!({"event": "leave", "name": peer.name, "node_id": peer.node_id}),
        );
    }
}

async fn say(
    State(node): State<NodeHandle>,
    body: axum::body::Bytes,
) -> Result<StatusCode, (StatusCode, String)> {
    // JSON whatever the Content-Type, like every ZeroServices route.
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")))?;
    let text = body["text"].as_str().unwrap_or_default().trim();
    if text.is_empty() || text.len() > 2000 {
        return Err((StatusCode::BAD_REQUEST, "text must be 1-2000 bytes".into()));
    }
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let msg = json!({"from": node.name(), "text": text, "ts": ts});
    node.publish("chat.message", &msg)
        .await
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = init_telemetry(args.cluster.otlp_endpoint.as_deref(), &args.name)?;
    let node = args
        .cluster
        .apply(Node::builder(&args.name))?
        .service(Presence)
        .start()
        .await?;
    let listener = tokio::net::TcpListener::bind(&args.http).await?;
    let addr = listener.local_addr()?;
    println!(
        "{}",
        json!({"event": "ready", "http": addr.to_string(), "node_id": node.node_id()})
    );
    let page = Router::new()
        .route("/chat/", get(|| async { Html(PAGE) }))
        .route("/chat/say", post(say))
        .merge(zeroservices::web::client_routes("/chat"))
        .with_state(node.handle());
    serve(
        listener,
        node.handle(),
        HttpConfig::default(),
        Some(page),
        stop_signal(),
    )
    .await?;
    node.shutdown().await;
    Ok(())
}
