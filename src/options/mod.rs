//! Settings shared by the CLI and the examples: where collections are stored, how peers are
//! discovered, where sockets bind, which medium carries messages (see [`medium`]) — each flag
//! also readable from a `ZEROSERVICES_*` variable.

pub mod medium;
#[cfg(feature = "otlp")]
mod otlp;

pub use self::medium::{MediumSpec, NatsArgs};

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use zeroservices_core::{
    discovery::{Discovery, MulticastConfig, MulticastDiscovery, NoDiscovery, StaticDiscovery},
    medium::ZmqConfig,
    resources::Collection,
    store::{EmbeddedStore, MemoryCollection},
    ClusterKey, NodeBuilder,
};

/// Where collections live: `embedded:PATH` (a directory, created if missing), `memory`, or
/// `mongodb://HOST:PORT/DB`.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreSpec {
    /// The embedded persistent store in a directory.
    Embedded(PathBuf),
    /// Volatile memory.
    Memory,
    /// A MongoDB URI.
    Mongo(String),
}

impl FromStr for StoreSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "memory" {
            Ok(StoreSpec::Memory)
        } else if let Some(p) = s.strip_prefix("embedded:") {
            if p.is_empty() {
                return Err("embedded: needs a directory, e.g. embedded:./data".into());
            }
            Ok(StoreSpec::Embedded(PathBuf::from(p)))
        } else if s.starts_with("mongodb://") || s.starts_with("mongodb+srv://") {
            Ok(StoreSpec::Mongo(s.to_owned()))
        } else {
            Err(format!(
                "unknown store {s:?}: use embedded:PATH, memory or mongodb://HOST:PORT/DB"
            ))
        }
    }
}

/// Opened store, handing out collections.
#[derive(Debug, Clone)]
pub enum Store {
    /// Embedded store.
    Embedded(EmbeddedStore),
    /// Memory.
    Memory,
    /// MongoDB.
    Mongo(zeroservices_mongo::MongoStore),
}

impl StoreSpec {
    /// Where a node serving from this store keeps its identity (see
    /// `NodeBuilder::state_dir`): the embedded store's directory; none for the others.
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        match self {
            StoreSpec::Embedded(p) => Some(p),
            _ => None,
        }
    }

    /// Opens the store (for MongoDB: prepares the client; the server may come up later).
    pub async fn open(&self) -> anyhow::Result<Store> {
        match self {
            StoreSpec::Embedded(p) => Ok(Store::Embedded(EmbeddedStore::open(p)?)),
            StoreSpec::Memory => Ok(Store::Memory),
            StoreSpec::Mongo(uri) => Ok(Store::Mongo(
                zeroservices_mongo::MongoStore::connect(uri).await?,
            )),
        }
    }
}

impl Store {
    /// The collection `name`.
    pub fn collection(&self, name: &str) -> Arc<dyn Collection> {
        match self {
            Store::Embedded(s) => Arc::new(s.collection(name)),
            Store::Memory => Arc::new(MemoryCollection::new()),
            Store::Mongo(s) => Arc::new(s.collection(name)),
        }
    }
}

/// How to find peers: `multicast[:GROUP:PORT]`, `static:tcp://HOST:PORT,...` (or
/// `static:HOST:PORT,...`), or `none`.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoverySpec {
    /// UDP multicast.
    Multicast {
        /// Group.
        group: Ipv4Addr,
        /// Port.
        port: u16,
    },
    /// Seed request endpoints.
    Static(Vec<String>),
    /// Lone node.
    None,
}

impl FromStr for DiscoverySpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = MulticastConfig::default();
        if s == "none" {
            return Ok(DiscoverySpec::None);
        }
        if s == "multicast" {
            return Ok(DiscoverySpec::Multicast {
                group: d.group,
                port: d.port,
            });
        }
        if let Some(rest) = s.strip_prefix("multicast:") {
            let (g, p) = rest.rsplit_once(':').ok_or("multicast:GROUP:PORT")?;
            let group: Ipv4Addr = g
                .parse()
                .map_err(|_| format!("bad multicast group {g:?}"))?;
            if !group.is_multicast() {
                return Err(format!("{group} is not a multicast address"));
            }
            let port = p.parse().map_err(|_| format!("bad port {p:?}"))?;
            return Ok(DiscoverySpec::Multicast { group, port });
        }
        if let Some(rest) = s.strip_prefix("static:") {
            let seeds: Vec<String> = rest
                .split(',')
                .filter(|e| !e.is_empty())
                .map(|e| {
                    if e.starts_with("tcp://") {
                        e.to_owned()
                    } else {
                        format!("tcp://{e}")
                    }
                })
                .collect();
            if seeds.is_empty() {
                return Err("static: needs at least one HOST:ROUTER_PORT".into());
            }
            return Ok(DiscoverySpec::Static(seeds));
        }
        Err(format!(
            "unknown discovery {s:?}: use multicast[:GROUP:PORT], static:HOST:PORT,... or none"
        ))
    }
}

/// The cluster flags every node command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// zmq (the nodes connect to each other; zero configuration on one LAN) |
    /// nats://HOST:PORT[,HOST:PORT...] (every node connects to NATS; peers are found there and
    /// --discovery, --bind and the ports are not used)
    #[arg(long, env = "ZEROSERVICES_MEDIUM", default_value = "zmq")]
    pub medium: MediumSpec,
    /// NATS settings.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// multicast[:GROUP:PORT] | static:HOST:ROUTER_PORT,... | none
    #[arg(long, env = "ZEROSERVICES_DISCOVERY", default_value = "multicast")]
    pub discovery: DiscoverySpec,
    /// Interface address for multicast (and advertised in announcements). Default: 127.0.0.1
    /// without a cluster key (protected mode: announcements stay on this host), the system's
    /// choice with one.
    #[arg(long, env = "ZEROSERVICES_INTERFACE")]
    pub interface: Option<Ipv4Addr>,
    /// Address the ZeroMQ sockets bind to. Default: 127.0.0.1 without a cluster key (protected
    /// mode), 0.0.0.0 with one. Another address without a key needs --open-cluster.
    #[arg(long, env = "ZEROSERVICES_BIND")]
    pub bind: Option<IpAddr>,
    /// Allow binding the ZeroMQ sockets beyond loopback without a cluster key: any host that
    /// reaches them is then a full member (docs/security.md).
    #[arg(long, env = "ZEROSERVICES_OPEN_CLUSTER")]
    pub open_cluster: bool,
    /// ROUTER (request) port; 0 = random.
    #[arg(long, env = "ZEROSERVICES_ROUTER_PORT", default_value_t = 0)]
    pub router_port: u16,
    /// PUB (event) port; 0 = random.
    #[arg(long, env = "ZEROSERVICES_PUB_PORT", default_value_t = 0)]
    pub pub_port: u16,
    /// Heartbeat in milliseconds (peers silent for 3 are gone).
    #[arg(long, env = "ZEROSERVICES_HEARTBEAT_MS", default_value_t = 1000)]
    pub heartbeat_ms: u64,
    /// Timeout of requests to other nodes, in milliseconds.
    #[arg(long, env = "ZEROSERVICES_TIMEOUT_MS", default_value_t = 5000)]
    pub timeout_ms: u64,
    /// File holding the shared cluster secret (`zeroservices keygen > cluster.key`): every
    /// datagram, request and event is authenticated with it; nodes without it are ignored
    /// (docs/security.md). Secrets are never taken on the command line, where `ps` shows them.
    #[arg(long, env = "ZEROSERVICES_CLUSTER_KEY_FILE")]
    pub cluster_key_file: Option<PathBuf>,
    /// Export traces over OTLP/HTTP to this endpoint (e.g. http://127.0.0.1:4318, an
    /// OpenTelemetry collector, Jaeger or Zipkin's OTLP port). Off by default.
    #[arg(long, env = "ZEROSERVICES_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl ClusterArgs {
    /// The cluster key from --cluster-key-file, if any. An unreadable, empty or short file is
    /// an error: a node never falls back to running without the key it was given.
    pub fn key(&self) -> anyhow::Result<Option<Arc<ClusterKey>>> {
        if std::env::var_os("ZEROSERVICES_CLUSTER_KEY").is_some() {
            anyhow::bail!("ZEROSERVICES_CLUSTER_KEY is not read: secrets come from files; put the key in a file and set ZEROSERVICES_CLUSTER_KEY_FILE");
        }
        let Some(f) = &self.cluster_key_file else {
            return Ok(None);
        };
        let secret = read_secret(f, "cluster key")?;
        Ok(Some(ClusterKey::new(&secret)))
    }

    /// The address the ZeroMQ sockets bind to, under protected mode: without a cluster key,
    /// loopback unless --open-cluster says otherwise.
    pub fn bind_address(&self, keyed: bool) -> anyhow::Result<IpAddr> {
        let default = if keyed || self.open_cluster {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        };
        let bind = self.bind.unwrap_or(default);
        if let Some(i) = self
            .interface
            .filter(|i| !keyed && !self.open_cluster && !i.is_loopback())
        {
            anyhow::bail!(
                "--interface {i} without a cluster key would announce this node to the network with \
                 no authentication. Make a key (`zeroservices keygen > cluster.key`) and pass \
                 --cluster-key-file cluster.key to every node, or pass --open-cluster to accept that."
            );
        }
        if !keyed && !self.open_cluster && !bind.is_loopback() {
            anyhow::bail!(
                "--bind {bind} without a cluster key would let any host that reaches it call every \
                 service and read every event. Make a key (`zeroservices keygen > cluster.key`) and \
                 pass --cluster-key-file cluster.key to every node, or pass --open-cluster to accept that."
            );
        }
        Ok(bind)
    }

    /// Applies sockets, discovery, heartbeat and the cluster key to a node builder. Fails
    /// (closed) on a bad key or a binding that protected mode refuses.
    /// Also reserves the HTTP routes ([`crate::http::RESERVED_ROUTES`]) as collection names.
    pub fn apply(&self, b: NodeBuilder) -> anyhow::Result<NodeBuilder> {
        let b = b.reserve_names(crate::http::RESERVED_ROUTES);
        let key = self.key()?;
        let timing = |b: NodeBuilder| {
            b.heartbeat(Duration::from_millis(self.heartbeat_ms.max(10)))
                .timeout(Duration::from_millis(self.timeout_ms.max(1)))
        };
        if let MediumSpec::Nats(servers) = &self.medium {
            let b = match key {
                Some(k) => b.cluster_key(k),
                None => b,
            };
            return Ok(timing(b.nats(self.nats.config(servers)?)));
        }
        let bind = self.bind_address(key.is_some())?;
        if key.is_none() && !self.open_cluster {
            tracing::info!(
                "no cluster key: ZeroMQ ports on loopback only; for other hosts make a key with `zeroservices keygen > cluster.key`"
            );
        }
        let advertise = self
            .interface
            .map(|i| i.to_string())
            .or_else(|| (!bind.is_unspecified()).then(|| bind.to_string()));
        let zmq = ZmqConfig {
            bind: Some(bind),
            router_port: self.router_port,
            pub_port: self.pub_port,
            advertise,
            ..ZmqConfig::default()
        };
        let discovery: Box<dyn Discovery> = match &self.discovery {
            DiscoverySpec::None => Box::new(NoDiscovery),
            DiscoverySpec::Static(seeds) => Box::new(StaticDiscovery::new(seeds.clone())),
            DiscoverySpec::Multicast { group, port } => {
                Box::new(MulticastDiscovery::new(MulticastConfig {
                    group: *group,
                    port: *port,
                    // Protected mode: a keyless node announces itself on loopback only.
                    interface: self
                        .interface
                        .unwrap_or(if key.is_none() && !self.open_cluster {
                            Ipv4Addr::LOCALHOST
                        } else {
                            Ipv4Addr::UNSPECIFIED
                        }),
                    ..MulticastConfig::default()
                }))
            }
        };
        let b = match key {
            Some(k) => b.cluster_key(k),
            None => b,
        };
        Ok(timing(b.zmq(zmq).boxed_discovery(discovery)))
    }
}

/// Resolves once SIGINT or SIGTERM arrives.
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs to stderr (stdout is kept for the machine-readable `ready` line), at the level given by
/// `ZEROSERVICES_LOG` (a `tracing` filter such as `debug` or `zeroservices_core=trace`;
/// default `info`). For commands that export no traces; see [`init_telemetry`].
pub fn init_logging() {
    if let Err(e) = init_telemetry(None, "") {
        eprintln!("logging not set up: {e}");
    }
}

/// What [`init_telemetry`] set up; dropping it sends the spans not sent yet.
#[derive(Debug, Default)]
#[must_use = "dropping it stops the trace export"]
pub struct Telemetry {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("traces not all exported: {e}");
            }
        }
    }
}

/// Logs as [`init_logging`] does and, given an OTLP/HTTP endpoint (`--otlp-endpoint`, e.g.
/// `http://127.0.0.1:4318`), exports the node's spans there as `service`: one trace per
/// change across nodes (see `zeroservices_core::trace`). Without an endpoint, tracing costs
/// nothing: no span is made.
pub fn init_telemetry(otlp_endpoint: Option<&str>, service: &str) -> anyhow::Result<Telemetry> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;

    let filter = tracing_subscriber::EnvFilter::try_from_env("ZEROSERVICES_LOG")
        .unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let registry = tracing_subscriber::registry().with(logs);
    let Some(endpoint) = otlp_endpoint else {
        registry.try_init()?;
        return Ok(Telemetry::default());
    };
    #[cfg(feature = "otlp")]
    {
        let provider = otlp::provider(endpoint, service)?;
        registry.with(otlp::layer(&provider)).try_init()?;
        if zeroservices_core::trace::install(otlp::Propagation).is_err() {
            anyhow::bail!("tracing is already set up in this process");
        }
        Ok(Telemetry {
            provider: Some(provider),
        })
    }
    #[cfg(not(feature = "otlp"))]
    {
        let _ = (registry, service);
        anyhow::bail!("--otlp-endpoint {endpoint}: this build has no `otlp` feature")
    }
}

/// Reads a secret from a file: surrounding whitespace (a trailing newline) is dropped, and a
/// secret shorter than 16 bytes, an empty file or an unreadable one is an error naming the file.
pub fn read_secret(path: &std::path::Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("reading the {what} file {}: {e}", path.display()))?;
    let secret = bytes.trim_ascii();
    if secret.len() < 16 {
        anyhow::bail!(
            "the {what} in {} must be at least 16 bytes (it has {})",
            path.display(),
            secret.len()
        );
    }
    Ok(secret.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_store_and_discovery_specs() {
        assert_eq!("memory".parse::<StoreSpec>(), Ok(StoreSpec::Memory));
        assert_eq!(
            "embedded:./d".parse::<StoreSpec>(),
            Ok(StoreSpec::Embedded("./d".into()))
        );
        assert!("redis://x".parse::<StoreSpec>().is_err());
        assert_eq!(
            "static:127.0.0.1:5555".parse::<DiscoverySpec>(),
            Ok(DiscoverySpec::Static(vec!["tcp://127.0.0.1:5555".into()]))
        );
        assert_eq!(
            "multicast:239.1.2.3:4000".parse::<DiscoverySpec>(),
            Ok(DiscoverySpec::Multicast {
                group: "239.1.2.3".parse().unwrap(),
                port: 4000
            })
        );
        assert!("multicast:10.0.0.1:4000".parse::<DiscoverySpec>().is_err());
        assert_eq!("none".parse::<DiscoverySpec>(), Ok(DiscoverySpec::None));
    }
}
