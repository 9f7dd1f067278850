//! TodoMVC in React over the generated REST API and the /realtime feed: every change made in
//! one browser (or by curl) appears in every other at once.
//!
//! ```text
//! (cd examples/todo && npm ci)          # React from npm, served locally (no CDN)
//! cargo run --release --example todo    # http://127.0.0.1:5004/todo/
//! ```

use axum::response::{Html, Redirect};
use axum::routing::get;
use axum::Router;
use clap::Parser;
use serde_json::json;
use zeroservices::core::{CollectionSpec, Node};
use zeroservices::http::{serve, HttpConfig};
use zeroservices::options::{init_logging, stop_signal, ClusterArgs, StoreSpec};

const PAGE: &str = include_str!("todo/index.html");

#[derive(Parser, Debug)]
struct Args {
    /// embedded:PATH | memory | mongodb://HOST:PORT/DB
    #[arg(long, default_value = "embedded:./todo-data")]
    store: StoreSpec,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:5004")]
    http: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// React's UMD build from examples/todo/node_modules (installed by `npm ci`).
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_logging();
    let args = Args::parse();
    let store = args.store.open().await?;
    let schema = json!({
        "type": "object",
        "required": ["title", "completed"],
        "properties": {"title": {"type": "string", "minLength": 1, "maxLength": 500}, "completed": {"type": "boolean"}},
        "additionalProperties": false
    });
    let todos = CollectionSpec::new("todos", store.collection("todos")).schema(schema)?;
    let mut builder = args.cluster.apply(Node::builder("todo"))?.collection(todos);
    if let Some(dir) = args.store.state_dir() {
        builder = builder.state_dir(dir);
    }
    let node = builder.start().await?;
    let listener = tokio::net::TcpListener::bind(&args.http).await?;
    let addr = listener.local_addr()?;
    println!(
        "{}",
        json!({"event": "ready", "http": addr.to_string(), "node_id": node.node_id()})
    );
    let page = Router::new()
        .route("/todo/", get(|| async { Html(PAGE) }))
        .route("/todo", get(|| async { Redirect::permanent("/todo/") }))
        .merge(zeroservices::web::client_routes("/todo"));
    serve(
        listener,
        node.clone(),
        HttpConfig::default(),
        Some(page),
        stop_signal(),
    )
    .await?;
    node.shutdown().await;
    Ok(())
}
