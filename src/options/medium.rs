//! `--medium`: ZeroMQ between the nodes (one LAN, zero configuration; the default) or a NATS
//! server or cluster (several subnets, Kubernetes, events kept in JetStream), with the NATS
//! connection's settings.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use zeroservices_core::medium::{JetStreamMode, NatsConfig};

/// What carries the nodes' messages: `zmq`, or `nats://HOST:PORT[,HOST:PORT...]` (also
/// `tls://`, and `nats://USER:PASS@HOST:PORT`).
#[derive(Debug, Clone, PartialEq)]
pub enum MediumSpec {
    /// ZeroMQ sockets between the nodes, found by the discovery.
    Zmq,
    /// NATS, at these server URLs.
    Nats(Vec<String>),
}

impl FromStr for MediumSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "zmq" {
            return Ok(MediumSpec::Zmq);
        }
        if s.starts_with("nats://") || s.starts_with("tls://") {
            let servers: Vec<String> = s
                .split(',')
                .filter(|e| !e.is_empty())
                .map(|e| {
                    if e.contains("://") {
                        e.to_owned()
                    } else {
                        format!("nats://{e}")
                    }
                })
                .collect();
            return Ok(MediumSpec::Nats(servers));
        }
        Err(format!(
            "unknown medium {s:?}: use zmq or nats://HOST:PORT[,HOST:PORT...]"
        ))
    }
}

/// Whether events are kept in JetStream: `auto` (when the server has it), `on`, `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JetStreamArg {
    /// When the server has JetStream.
    Auto,
    /// Required.
    On,
    /// Never.
    Off,
}

/// The NATS settings (used with `--medium nats://...`).
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS credentials file (`.creds`: JWT and nkey seed).
    #[arg(long, env = "ZEROSERVICES_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// PEM file of the CAs that sign the NATS servers' certificates (for tls:// servers).
    #[arg(long, env = "ZEROSERVICES_NATS_CA")]
    pub nats_ca: Option<PathBuf>,
    /// Refuse NATS servers that do not offer TLS.
    #[arg(long, env = "ZEROSERVICES_NATS_REQUIRE_TLS")]
    pub nats_require_tls: bool,
    /// First token of every subject: clusters with other prefixes share the NATS server
    /// without seeing each other.
    #[arg(long, env = "ZEROSERVICES_NATS_PREFIX", default_value = "zs")]
    pub nats_prefix: String,
    /// Keep events in a JetStream stream (replay after restarts, durable worker queues).
    #[arg(
        long,
        env = "ZEROSERVICES_JETSTREAM",
        value_enum,
        default_value = "auto"
    )]
    pub jetstream: JetStreamArg,
    /// Copies of the events stream in a NATS cluster (3 survives losing a server).
    #[arg(long, env = "ZEROSERVICES_JETSTREAM_REPLICAS", default_value_t = 1)]
    pub jetstream_replicas: usize,
    /// How long the stream keeps an event, in seconds.
    #[arg(long, env = "ZEROSERVICES_JETSTREAM_MAX_AGE", default_value_t = 86_400)]
    pub jetstream_max_age_s: u64,
    /// Events the stream keeps at most.
    #[arg(
        long,
        env = "ZEROSERVICES_JETSTREAM_MAX_MSGS",
        default_value_t = 1_000_000
    )]
    pub jetstream_max_msgs: i64,
}

impl NatsArgs {
    /// The medium's configuration for these servers.
    pub fn config(&self, servers: &[String]) -> anyhow::Result<NatsConfig> {
        if self.nats_prefix.is_empty()
            || !self
                .nats_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            anyhow::bail!(
                "--nats-prefix {:?}: use letters, digits, - and _ only",
                self.nats_prefix
            );
        }
        let mut cfg = NatsConfig::new(servers.iter().cloned());
        cfg.prefix = self.nats_prefix.clone();
        cfg.credentials_file = self.nats_creds.clone();
        cfg.ca_file = self.nats_ca.clone();
        cfg.require_tls = self.nats_require_tls;
        cfg.jetstream = match self.jetstream {
            JetStreamArg::Auto => JetStreamMode::Auto,
            JetStreamArg::On => JetStreamMode::On,
            JetStreamArg::Off => JetStreamMode::Off,
        };
        cfg.replicas = self.jetstream_replicas.clamp(1, 5);
        cfg.stream_max_age = Duration::from_secs(self.jetstream_max_age_s.max(1));
        cfg.stream_max_msgs = self.jetstream_max_msgs.max(1);
        Ok(cfg)
    }
}
