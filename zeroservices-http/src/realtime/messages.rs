//! What a `/realtime` client may send, parsed: topic messages, and the live-query forms
//! (`subscribe` naming a `collection`, `unsubscribe` naming a `query`).

use std::collections::HashMap;

use serde::Deserialize;

use crate::live;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(super) enum ClientMessage {
    Subscribe {
        topics: Vec<String>,
        #[serde(default)]
        since: HashMap<String, u64>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    Auth {
        token: String,
    },
    Ping,
    /// The original's `{"type":"join","data":{"topics":[...]}}`: subscribe.
    Join {
        data: Topics,
    },
    /// The original's `{"type":"leave","data":{"topics":[...]}}`: unsubscribe.
    Leave {
        data: Topics,
    },
}

#[derive(Deserialize)]
pub(super) struct Topics {
    pub(super) topics: Vec<String>,
}

pub(super) fn error_msg(code: &str, message: &str) -> axum::extract::ws::Utf8Bytes {
    crate::outgoing::error_message(code, message)
}

/// A message for the live queries rather than the topics.
pub(super) enum LiveMessage {
    Subscribe(live::LiveSubscribe),
    Unsubscribe(String),
}

/// `subscribe` naming a `collection`, or `unsubscribe` naming a `query`.
pub(super) fn live_message(text: &str) -> Option<LiveMessage> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        collection: Option<String>,
        #[serde(default)]
        query: Option<String>,
    }
    let p: Peek = serde_json::from_str(text).ok()?;
    match (p.kind.as_str(), p.collection, p.query) {
        ("subscribe", Some(_), _) => serde_json::from_str(text).ok().map(LiveMessage::Subscribe),
        ("unsubscribe", _, Some(q)) => Some(LiveMessage::Unsubscribe(q)),
        _ => None,
    }
}
