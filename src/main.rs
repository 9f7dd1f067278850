//! The `zeroservices` command: `serve` (an all-in-one node), `sniff` (print every event) and
//! `nodes` (list the cluster).
//!
//! ```text
//! cargo run --release -- serve --collection power
//! cargo run --release -- sniff --json
//! cargo run --release -- nodes --json --wait 2
//! ```

// A faster allocator: request handling allocates many small JSON values.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod inspect;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::json;
use zeroservices::core::{CollectionSpec, Node};
use zeroservices::http::{serve, AllowAll, Auth, BasicAuth, HttpConfig, JwtAuth};
use zeroservices::options::{read_secret, stop_signal, ClusterArgs, StoreSpec};

#[derive(Parser, Debug)]
#[command(
    name = "zeroservices",
    version,
    about = "Resource-oriented microservices over ZeroMQ"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a node serving collections, with the REST API and /realtime websocket.
    Serve(Box<ServeArgs>),
    /// Prints every event passing in the cluster, one line each.
    Sniff {
        /// Only events under this topic prefix.
        #[arg(long, default_value = "*")]
        topic: String,
        /// One JSON object per line: {"topic": ..., "event": {...}}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Writes a new project (a resource service, a worker, an API node) that builds and tests.
    New {
        /// Project name.
        name: String,
        /// Directory to create it in.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The ZeroServices checkout the project depends on (default: this one).
        #[arg(long)]
        framework: Option<PathBuf>,
    },
    /// Prints a new random cluster key (32 bytes, hex): `zeroservices keygen > cluster.key`.
    Keygen,
    /// Lists discovered nodes.
    Nodes {
        /// Print one JSON array.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for discovery before printing.
        #[arg(long, default_value_t = 3.0)]
        wait: f64,
        /// Keep printing joins and leaves.
        #[arg(long)]
        watch: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Node name.
    #[arg(long, env = "ZEROSERVICES_NAME", default_value = "zeroservices")]
    name: String,
    /// Collection to serve, optionally with a JSON Schema file: NAME or NAME=schema.json.
    #[arg(
        long = "collection",
        env = "ZEROSERVICES_COLLECTIONS",
        value_delimiter = ','
    )]
    collections: Vec<String>,
    /// Secondary index on a field of a served collection, COLLECTION.PATH (e.g. power.status;
    /// repeatable): filters, sorts with a limit and counts on it read the index, not every record.
    #[arg(long = "index", env = "ZEROSERVICES_INDEXES", value_delimiter = ',')]
    indexes: Vec<String>,
    /// embedded:PATH | memory | mongodb://HOST:PORT/DB
    #[arg(
        long,
        env = "ZEROSERVICES_STORE",
        default_value = "embedded:./zeroservices-data"
    )]
    store: StoreSpec,
    /// HTTP listen address.
    #[arg(long, env = "ZEROSERVICES_HTTP", default_value = "127.0.0.1:5001")]
    http: String,
    /// Do not serve HTTP.
    #[arg(long, env = "ZEROSERVICES_NO_HTTP")]
    no_http: bool,
    /// Read settings from a TOML file (keys are the long flag names).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Another browser origin allowed to call the API (repeatable; `*` for every origin, never
    /// with credentials). Always allowed: the node's own origin and http://localhost:* and
    /// http://127.0.0.1:*; a state-changing request from any other origin gets 403.
    #[arg(
        long = "cors-origin",
        env = "ZEROSERVICES_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// File of HTTP Basic users, one `NAME:PASSWORD[:GRANTS]` per line (`#` comments), where
    /// GRANTS is COLLECTION/ACTION,... (`*` for any; default `*/*`). Turns authentication on.
    #[arg(long, env = "ZEROSERVICES_USERS_FILE")]
    users_file: Option<PathBuf>,
    /// File holding the secret of Bearer JWTs signed with HS256 (grants from the `grants`
    /// claim; at least 16 bytes).
    #[arg(long, env = "ZEROSERVICES_JWT_HS256_SECRET_FILE")]
    jwt_hs256_secret_file: Option<PathBuf>,
    /// Accept Bearer JWTs signed with RS256 by the key whose public half is in this PEM file.
    #[arg(long, env = "ZEROSERVICES_JWT_RS256_PUBLIC_KEY")]
    jwt_rs256_public_key: Option<PathBuf>,
    /// Accept only JWTs whose `iss` claim is this issuer.
    #[arg(long, env = "ZEROSERVICES_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Accept only JWTs whose `aud` claim names this audience (without it, a token that
    /// carries an `aud` claim is refused).
    #[arg(long, env = "ZEROSERVICES_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Grants of callers without credentials when users are configured, e.g. `*/list,*/get`.
    #[arg(long, env = "ZEROSERVICES_ANONYMOUS")]
    anonymous: Option<String>,
    /// A per-user read rule, `COLLECTION=FILTER` where `"$user"` is the caller, e.g.
    /// `todos={"owner":"$user"}`: each user sees and writes only their resources (repeatable).
    #[arg(long = "read-rule", value_name = "COLLECTION=FILTER")]
    read_rules: Vec<String>,
    /// Largest request body in bytes (larger is 413).
    #[arg(long, env = "ZEROSERVICES_BODY_LIMIT", default_value_t = 1024 * 1024)]
    body_limit: usize,
    /// Events a websocket client may fall behind before it gets a resync.
    #[arg(long, env = "ZEROSERVICES_WS_QUEUE", default_value_t = zeroservices::http::CONNECTION_QUEUE)]
    ws_queue: usize,
    /// Events kept for websocket clients that resume.
    #[arg(long, env = "ZEROSERVICES_REPLAY", default_value_t = zeroservices::http::REPLAY_CAPACITY)]
    replay: usize,
    /// Bytes of events kept for websocket clients that resume (the oldest go first).
    #[arg(long, env = "ZEROSERVICES_REPLAY_BYTES", default_value_t = zeroservices::http::REPLAY_BYTES)]
    replay_bytes: usize,
    /// Seconds a client may take to send a request's headers (then the connection closes).
    #[arg(long, env = "ZEROSERVICES_HEADER_TIMEOUT", default_value_t = 10.0, value_parser = seconds)]
    header_timeout: f64,
    /// Seconds a client may take to send a request's body (then 408).
    #[arg(long, env = "ZEROSERVICES_BODY_TIMEOUT", default_value_t = 30.0, value_parser = seconds)]
    body_timeout: f64,
    /// Requests each user (or, without credentials, each client IP) may make: `N/s`, `N/min`
    /// or `N/h`, N at once. Over it: 429 with `Retry-After`. Default: no limit.
    #[arg(long, env = "ZEROSERVICES_RATE_LIMIT", value_name = "N/PERIOD")]
    rate_limit: Option<zeroservices::http::RateLimit>,
    /// Seconds SIGTERM/SIGINT waits for requests in progress before the node stops anyway.
    #[arg(long, env = "ZEROSERVICES_SHUTDOWN_TIMEOUT", default_value_t = 30.0, value_parser = seconds)]
    shutdown_timeout: f64,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// A duration in seconds: finite, above zero, at most a day.
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 86400]")),
    }
}

fn main() -> anyhow::Result<()> {
    // The config file adds the flags that neither the command line nor their variable set
    // (flag > variable > file > default).
    let mut args: Vec<String> = std::env::args().collect();
    if let Some(path) = zeroservices::config::config_arg(&args) {
        let cli = Cli::command();
        let serve = cli
            .find_subcommand("serve")
            .context("the serve command is missing")?;
        let extra =
            zeroservices::config::args_from_file(std::path::Path::new(&path), serve, &args)?;
        args.extend(extra);
    }
    // Variables that once carried secrets themselves: refuse rather than run without what
    // the operator meant to configure (the cluster key's is checked by `ClusterArgs::key`).
    for (var, instead) in [
        ("ZEROSERVICES_USERS", "ZEROSERVICES_USERS_FILE"),
        (
            "ZEROSERVICES_JWT_HS256_SECRET",
            "ZEROSERVICES_JWT_HS256_SECRET_FILE",
        ),
    ] {
        if std::env::var_os(var).is_some() {
            anyhow::bail!(
                "{var} is not read: secrets come from files; put it in a file and set {instead}"
            );
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let command = Cli::parse_from(args).command;
    let _telemetry = match &command {
        Command::Serve(a) => {
            zeroservices::options::init_telemetry(a.cluster.otlp_endpoint.as_deref(), &a.name)?
        }
        _ => zeroservices::options::init_telemetry(None, "")?,
    };
    match command {
        Command::Serve(a) => run_serve(*a).await,
        Command::New {
            name,
            dir,
            framework,
        } => {
            let framework = framework.unwrap_or_else(zeroservices::skeleton::framework_dir);
            let out = zeroservices::skeleton::generate(&name, &dir, &framework)?;
            println!(
                "created {}: cd {} && cargo test && cargo run",
                out.display(),
                out.display()
            );
            Ok(())
        }
        Command::Sniff {
            topic,
            json,
            cluster,
        } => inspect::run_sniff(topic, json, cluster).await,
        Command::Keygen => {
            let key: [u8; 32] = rand::random();
            println!(
                "{}",
                key.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            Ok(())
        }
        Command::Nodes {
            json,
            wait,
            watch,
            cluster,
        } => inspect::run_nodes(json, wait, watch, cluster).await,
    }
}

/// `--index COLLECTION.PATH` values, each naming a served collection.
fn parse_indexes(
    indexes: &[String],
    collections: &[String],
) -> anyhow::Result<Vec<(String, String)>> {
    let served: Vec<&str> = collections
        .iter()
        .map(|c| c.split_once('=').map_or(c.as_str(), |(n, _)| n))
        .collect();
    indexes
        .iter()
        .map(|i| {
            let (c, path) = i
                .split_once('.')
                .filter(|(c, p)| !c.is_empty() && !p.is_empty())
                .with_context(|| {
                    format!("--index {i:?}: expected COLLECTION.PATH, e.g. power.status")
                })?;
            anyhow::ensure!(
                served.contains(&c),
                "--index {i:?}: collection {c:?} is not served here (--collection)"
            );
            Ok((c.to_owned(), path.to_owned()))
        })
        .collect()
}

async fn run_serve(a: ServeArgs) -> anyhow::Result<()> {
    a.cluster.key()?; // report a bad key or auth setting before starting anything
    auth_from(&a)?;
    let read_rules = read_rules_from(&a.read_rules)?;
    let mut b = a.cluster.apply(Node::builder(&a.name))?;
    // A node without collections (an API node) opens no store and creates no data directory.
    let indexes = parse_indexes(&a.indexes, &a.collections)?;
    if !a.collections.is_empty() {
        let store = a.store.open().await?;
        if let Some(dir) = a.store.state_dir() {
            b = b.state_dir(dir);
        }
        for c in &a.collections {
            let (name, schema) = match c.split_once('=') {
                Some((n, path)) => (n, Some(PathBuf::from(path))),
                None => (c.as_str(), None),
            };
            // Idempotency records live next to the data: they survive a restart, and every
            // provider of a shared store (MongoDB) sees them.
            let mut spec = CollectionSpec::new(name, store.collection(name))
                .idempotency_store(store.collection(&format!("_idempotency_{name}")));
            if let Some(path) = schema {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading schema {}", path.display()))?;
                let doc = serde_json::from_str(&text)
                    .with_context(|| format!("parsing schema {}", path.display()))?;
                spec = spec.schema(doc)?;
            }
            for (_, path) in indexes.iter().filter(|(c, _)| c == name) {
                spec = spec.index(path);
            }
            b = b.collection(spec);
        }
    }
    let node = b.start().await?;
    let me = node.announcement();
    let ready = |http: Option<String>| {
        // One machine-readable line on stdout when the node serves: scripts and tests wait on it.
        println!(
            "{}",
            json!({"event": "ready", "name": me.name, "node_id": me.node_id, "endpoints": me.endpoints, "http": http})
        );
    };
    if a.no_http {
        ready(None);
        stop_signal().await;
    } else {
        let listener = tokio::net::TcpListener::bind(&a.http)
            .await
            .with_context(|| format!("binding HTTP on {}", a.http))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "HTTP API listening");
        ready(Some(addr.to_string()));
        let cfg = HttpConfig {
            auth: auth_from(&a)?,
            cors_origins: a.cors_origins,
            body_limit: a.body_limit,
            ws_queue: a.ws_queue,
            replay_capacity: a.replay,
            replay_bytes: a.replay_bytes,
            header_timeout: Duration::from_secs_f64(a.header_timeout),
            body_timeout: Duration::from_secs_f64(a.body_timeout),
            shutdown_timeout: Duration::from_secs_f64(a.shutdown_timeout),
            read_rules,
            rate_limit: a.rate_limit,
        };
        serve(listener, node.handle(), cfg, None, stop_signal()).await?;
    }
    tracing::info!("stopping: saying bye, finishing in-flight requests, flushing the store");
    node.shutdown().await;
    Ok(())
}

fn grants(spec: &str) -> anyhow::Result<Vec<(String, String)>> {
    spec.split(',')
        .filter(|g| !g.is_empty())
        .map(|g| {
            let (c, a) = g
                .split_once('/')
                .with_context(|| format!("grant {g:?} must be COLLECTION/ACTION"))?;
            Ok((c.to_owned(), a.to_owned()))
        })
        .collect()
}

/// `--read-rule COLLECTION=FILTER` values.
fn read_rules_from(
    values: &[String],
) -> anyhow::Result<std::collections::HashMap<String, zeroservices::http::ReadRule>> {
    let mut rules = std::collections::HashMap::new();
    for v in values {
        let (c, filter) = v
            .split_once('=')
            .with_context(|| format!("--read-rule {v:?}: expected COLLECTION=FILTER"))?;
        let filter: serde_json::Value = serde_json::from_str(filter)
            .with_context(|| format!("--read-rule {v:?}: the filter is not JSON"))?;
        let rule = zeroservices::http::ReadRule::new(filter)
            .map_err(|e| anyhow::anyhow!("--read-rule {v:?}: {e}"))?;
        rules.insert(c.to_owned(), rule);
    }
    Ok(rules)
}

fn auth_from(a: &ServeArgs) -> anyhow::Result<Arc<dyn Auth>> {
    let anonymous = grants(a.anonymous.as_deref().unwrap_or(""))?;
    let anon: Vec<(&str, &str)> = anonymous
        .iter()
        .map(|(c, x)| (c.as_str(), x.as_str()))
        .collect();
    let configured = [
        a.users_file.is_some(),
        a.jwt_hs256_secret_file.is_some(),
        a.jwt_rs256_public_key.is_some(),
    ];
    if configured.iter().filter(|c| **c).count() > 1 {
        anyhow::bail!(
            "choose one of --users-file, --jwt-hs256-secret-file, --jwt-rs256-public-key"
        );
    }
    if (a.jwt_issuer.is_some() || a.jwt_audience.is_some())
        && a.jwt_hs256_secret_file.is_none()
        && a.jwt_rs256_public_key.is_none()
    {
        anyhow::bail!("--jwt-issuer and --jwt-audience need --jwt-hs256-secret-file or --jwt-rs256-public-key");
    }
    let jwt = if let Some(path) = &a.jwt_hs256_secret_file {
        Some(JwtAuth::hs256(&read_secret(path, "JWT secret")?))
    } else if let Some(path) = &a.jwt_rs256_public_key {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the JWT public key {}", path.display()))?;
        Some(JwtAuth::rs256(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?)
    } else {
        None
    };
    if let Some(mut jwt) = jwt {
        if let Some(iss) = &a.jwt_issuer {
            jwt = jwt.issuer(iss);
        }
        if let Some(aud) = &a.jwt_audience {
            jwt = jwt.audience(aud);
        }
        return Ok(Arc::new(jwt.anonymous(&anon)));
    }
    match &a.users_file {
        Some(path) => basic_from_file(path, &anon),
        None => Ok(Arc::new(AllowAll)),
    }
}

/// HTTP Basic users from a file: one `NAME:PASSWORD[:GRANTS]` per line, blank lines and `#`
/// comments skipped. A missing file, a malformed line or a file without users is an error: the
/// API never starts open because its users could not be read.
fn basic_from_file(path: &std::path::Path, anon: &[(&str, &str)]) -> anyhow::Result<Arc<dyn Auth>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the users file {}", path.display()))?;
    let mut auth = BasicAuth::new();
    let mut count = 0;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{} line {}", path.display(), n + 1);
        let mut parts = line.splitn(3, ':');
        let (Some(name), Some(pass)) = (parts.next(), parts.next()) else {
            anyhow::bail!("{}: expected NAME:PASSWORD[:GRANTS]", at());
        };
        if name.is_empty() || pass.is_empty() {
            anyhow::bail!("{}: empty user name or password", at());
        }
        let g = grants(parts.next().unwrap_or("*/*")).with_context(at)?;
        let refs: Vec<(&str, &str)> = g.iter().map(|(c, a)| (c.as_str(), a.as_str())).collect();
        auth = auth.user(name, pass, &refs);
        count += 1;
    }
    if count == 0 {
        anyhow::bail!("the users file {} names no user", path.display());
    }
    Ok(Arc::new(auth.anonymous(anon)))
}
