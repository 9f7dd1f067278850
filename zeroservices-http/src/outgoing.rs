//! What a `/realtime` connection sends, as one type: acknowledgements, errors, `resync`, and
//! the live-query messages. (Events themselves go out as the hub serialized them once.)

use axum::extract::ws::Utf8Bytes;
use serde::Serialize;
use serde_json::Value;

/// A message from the server to a websocket client.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum ServerMessage<'a> {
    /// A client message that could not be honoured; the connection stays open.
    Error {
        error: ErrorBody<'a>,
    },
    /// The answer to `ping`.
    Pong,
    /// New credentials accepted.
    Authenticated,
    /// Topics subscribed.
    #[serde(rename = "subscribed")]
    Subscribed {
        topics: &'a [String],
    },
    /// Topics unsubscribed.
    #[serde(rename = "unsubscribed")]
    Unsubscribed {
        topics: &'a [String],
    },
    /// A live query opened: its first page.
    #[serde(rename = "subscribed")]
    LiveSubscribed {
        query: &'a str,
        collection: &'a str,
        items: &'a [zeroservices_core::resources::Resource],
        total: u64,
    },
    /// A live query ended (`found`: whether there was one by that id).
    #[serde(rename = "unsubscribed")]
    LiveUnsubscribed {
        query: &'a str,
        found: bool,
    },
    /// Reload: events of `node_id` (or of every node, on overflow) may have been missed.
    Resync {
        node_id: Option<&'a str>,
        reason: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        missed: Option<u64>,
    },
    /// A live query was dropped (too many members): reload it.
    #[serde(rename = "resync")]
    LiveResync {
        query: &'a str,
        reason: &'a str,
    },
    /// A resource entered, changed in, or left a live query.
    Enter(Change<'a>),
    Update(Change<'a>),
    Leave(Change<'a>),
}

/// The `error` of an error message.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorBody<'a> {
    pub(crate) code: &'a str,
    pub(crate) message: &'a str,
}

/// A live query's change of one resource.
#[derive(Debug, Serialize)]
pub(crate) struct Change<'a> {
    pub(crate) query: &'a str,
    pub(crate) collection: &'a str,
    pub(crate) resource_id: &'a str,
    pub(crate) action: &'a str,
    pub(crate) node_id: &'a str,
    pub(crate) seq: u64,
    pub(crate) ts: u64,
    /// The data after the change (`enter`, `update`; never on `leave`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) resource_data: Option<&'a Value>,
    /// The update document (`update` of a patch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) patch: Option<&'a Value>,
}

impl ServerMessage<'_> {
    /// The message as websocket text.
    pub(crate) fn text(&self) -> Utf8Bytes {
        // Plain data (strings, numbers, JSON values): serializing it cannot fail.
        serde_json::to_string(self)
            .unwrap_or_else(|_| {
                r#"{"type":"error","error":{"code":"internal","message":"unserializable message"}}"#
                    .to_owned()
            })
            .into()
    }
}

/// An error message.
pub(crate) fn error_message(code: &str, message: &str) -> Utf8Bytes {
    ServerMessage::Error {
        error: ErrorBody { code, message },
    }
    .text()
}
