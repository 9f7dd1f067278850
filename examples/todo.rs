//! TodoMVC in React over the generated REST API and the /realtime feed, per user: every change
//! a user makes in one browser (or by curl) appears in that user's other tabs at once, and no
//! user ever sees another's todos (a read rule `{"owner": "$user"}`).
//!
//! Two demo users, `alice` and `bob` (password: the name). `POST /todo/login
//! {"user","password"}` answers a JWT (`{"token"}`) for the API; the page signs in as the user
//! of `?user=` (alice by default).
//!
//! ```text
//! (cd examples/todo && npm ci)          # React from npm, served locally (no CDN)
//! cargo run --release --example todo    # http://127.0.0.1:5004/todo/ and /todo/?user=bob
//! ```

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde_json::json;
use zeroservices::core::{CollectionSpec, Node};
use zeroservices::http::auth::JwtAuth;
use zeroservices::http::{serve, HttpConfig, ReadRule};
use zeroservices::options::{init_telemetry, stop_signal, ClusterArgs, StoreSpec};

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

/// The demo users and their passwords.
const DEMO_USERS: [(&str, &str); 2] = [("alice", "alice"), ("bob", "bob")];

/// `POST /todo/login`: a token for a demo user, valid for 12 hours.
async fn login(secret: Arc<Vec<u8>>, Json(body): Json<serde_json::Value>) -> Response {
    let (user, password) = (body["user"].as_str(), body["password"].as_str());
    if !DEMO_USERS
        .iter()
        .any(|(u, p)| Some(*u) == user && Some(*p) == password)
    {
        return (StatusCode::UNAUTHORIZED, "unknown user or wrong password").into_response();
    }
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 12 * 3600;
    let claims = json!({"sub": user, "exp": exp, "grants": ["todos/*"]});
    match jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    ) {
        Ok(token) => Json(json!({ "token": token })).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = init_telemetry(args.cluster.otlp_endpoint.as_deref(), "todo")?;
    let store = args.store.open().await?;
    let schema = json!({
        "type": "object",
        "required": ["title", "completed"],
        "properties": {"title": {"type": "string", "minLength": 1, "maxLength": 500}, "completed": {"type": "boolean"}, "owner": {"type": "string"}},
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
    // A secret of this run: tokens die with the process, which suits a demo.
    let secret: Arc<Vec<u8>> = Arc::new((0..32).map(|_| rand::random::<u8>()).collect());
    let key = secret.clone();
    let page = Router::new()
        .route("/todo/login", post(move |body| login(key.clone(), body)))
        .route("/todo/", get(|| async { Html(PAGE) }))
        .route("/todo", get(|| async { Redirect::permanent("/todo/") }))
        .merge(zeroservices::web::client_routes("/todo"));
    serve(
        listener,
        node.handle(),
        HttpConfig {
            auth: Arc::new(JwtAuth::hs256(&secret)),
            read_rules: [(
                "todos".to_owned(),
                ReadRule::new(json!({"owner": "$user"})).map_err(anyhow::Error::msg)?,
            )]
            .into(),
            ..HttpConfig::default()
        },
        Some(page),
        stop_signal(),
    )
    .await?;
    node.shutdown().await;
    Ok(())
}
