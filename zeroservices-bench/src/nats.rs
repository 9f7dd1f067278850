//! The NATS side of W1 and W2: the framework on the NATS medium (`nats-core`,
//! `nats-resource`, `nats`) beside bare async-nats programs (`nats-raw`) doing the same
//! request/reply and pub/sub on the same server, the baseline they are measured against.
//! The driver starts one `nats-server` for them and passes its URL in `BENCH_NATS_URL`.

use bytes::Bytes;
use futures::StreamExt as _;
use serde_json::{json, Value};
use zeroservices_core::medium::{JetStreamMode, NatsConfig};

use crate::stats::{emit, env_or};

/// The server the participants use.
pub(crate) fn url() -> String {
    env_or("BENCH_NATS_URL", "nats://127.0.0.1:4222".to_string())
}

/// The framework's NATS medium for the benchmark: events are not kept (the bare pub/sub it
/// is compared with keeps none either).
pub(crate) fn config() -> NatsConfig {
    let mut c = NatsConfig::new([url()]);
    c.jetstream = JetStreamMode::Off;
    c
}

/// A bare client, buffering as many messages per subscription as the framework's medium.
pub(crate) async fn connect() -> anyhow::Result<async_nats::Client> {
    Ok(async_nats::ConnectOptions::new()
        .subscription_capacity(256 * 1024)
        .connect(url())
        .await?)
}

/// The subject of the bare W1 service.
pub(crate) const W1_SUBJECT: &str = "w1.get";

/// The bare W1 service: parses each request, answers the pre-encoded item.
pub(crate) async fn raw_service(item: &str) -> anyhow::Result<()> {
    let c = connect().await?;
    let mut sub = c.subscribe(W1_SUBJECT).await?;
    c.flush().await?;
    emit(json!({"event": "ready"}));
    let reply = Bytes::from(format!(r#"{{"ok":true,"data":{item}}}"#));
    while let Some(m) = sub.next().await {
        let _req: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
        if let Some(to) = m.reply {
            c.publish(to, reply.clone()).await?;
        }
    }
    Ok(())
}

/// One bare W1 request: whether the reply holds the item.
pub(crate) async fn raw_call(c: &async_nats::Client, check: fn(&Value) -> bool) -> bool {
    match c
        .request(
            W1_SUBJECT,
            Bytes::from_static(br#"{"action":"get","id":"1"}"#),
        )
        .await
    {
        Ok(m) => serde_json::from_slice::<Value>(&m.payload).is_ok_and(|v| check(&v["data"])),
        Err(_) => false,
    }
}
