//! The one error type of the core crate; every failure a caller can act on has its own kind.
//!
//! Errors cross the wire as `{"code", "message"}` ([`Error::code`], [`Error::from_wire`]), so a
//! `NotFound` raised on a remote node is a `NotFound` again on the caller's side.

use std::time::Duration;

/// `Result` with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a node, a medium, a collection or a query.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No reply arrived within the request's timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The peer is not (or no longer) in the directory, or its connection broke.
    #[error("peer {0} is gone")]
    PeerGone(String),
    /// No live node provides the collection (it may come back).
    #[error("no live provider for {0}")]
    Unavailable(String),
    /// Unknown collection, resource or action.
    #[error("{0}")]
    NotFound(String),
    /// A resource with this id already exists.
    #[error("{0}")]
    Conflict(String),
    /// The request, query or update is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The data violates the collection's schema; one entry per offending path.
    #[error("schema violation: {}", .0.join("; "))]
    Validation(Vec<String>),
    /// An idempotency key sent again with a different request.
    #[error("{0}")]
    KeyReused(String),
    /// A request with the same idempotency key is still running.
    #[error("{0}")]
    InProgress(String),
    /// The caller is not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// A body or frame exceeds the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// A remote node answered with an error code this version does not know.
    #[error("remote error {code}: {message}")]
    Remote {
        /// Machine-readable code sent by the peer.
        code: String,
        /// Human-readable message sent by the peer.
        message: String,
    },
    /// Socket-level failure (bind, connect, send).
    #[error("transport: {0}")]
    Transport(String),
    /// Storage backend failure.
    #[error("storage: {0}")]
    Storage(String),
    /// Operating-system I/O failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The node is shutting down.
    #[error("node is shutting down")]
    Shutdown,
    /// A bug or an unexpected state; details are logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Stable machine-readable code, as sent on the wire and in HTTP error bodies.
    pub fn code(&self) -> &str {
        match self {
            Error::Timeout(_) => "timeout",
            Error::PeerGone(_) => "peer_gone",
            Error::Unavailable(_) => "unavailable",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::BadRequest(_) => "bad_request",
            Error::Validation(_) => "validation",
            Error::KeyReused(_) => "idempotency_key_reused",
            Error::InProgress(_) => "idempotency_in_progress",
            Error::Forbidden(_) => "forbidden",
            Error::TooLarge(_) => "too_large",
            Error::Remote { code, .. } => code,
            Error::Transport(_) => "transport",
            Error::Storage(_) | Error::Io(_) => "storage",
            Error::Shutdown => "shutdown",
            Error::Internal(_) => "internal",
        }
    }

    /// Rebuilds an error received from a peer as `{"code", "message"}`.
    pub fn from_wire(code: &str, message: String) -> Error {
        match code {
            "timeout" => Error::Timeout(Duration::ZERO),
            "peer_gone" => Error::PeerGone(message),
            "unavailable" => Error::Unavailable(message),
            "not_found" => Error::NotFound(message),
            "conflict" => Error::Conflict(message),
            "bad_request" => Error::BadRequest(message),
            "validation" => Error::Validation(message.split("; ").map(str::to_owned).collect()),
            "idempotency_key_reused" => Error::KeyReused(message),
            "idempotency_in_progress" => Error::InProgress(message),
            "forbidden" => Error::Forbidden(message),
            "too_large" => Error::TooLarge(message),
            "storage" => Error::Storage(message),
            "internal" => Error::Internal(message),
            // A peer that stopped before answering: 503 here too, not a remote 500.
            "shutdown" => Error::Shutdown,
            other => Error::Remote {
                code: other.to_owned(),
                message,
            },
        }
    }

    /// The message to send on the wire (without the code).
    pub fn wire_message(&self) -> String {
        match self {
            Error::Validation(paths) => paths.join("; "),
            Error::NotFound(m)
            | Error::Conflict(m)
            | Error::BadRequest(m)
            | Error::Forbidden(m)
            | Error::KeyReused(m)
            | Error::InProgress(m)
            | Error::TooLarge(m)
            | Error::Unavailable(m)
            | Error::Storage(m)
            | Error::Internal(m) => m.clone(),
            Error::Remote { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::BadRequest(format!("invalid JSON: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_keeps_the_kind() {
        let cases = [
            Error::NotFound("power/1".into()),
            Error::Conflict("dup".into()),
            Error::Validation(vec![
                "/value: not a number".into(),
                "/status: required".into(),
            ]),
            Error::Unavailable("power".into()),
            Error::KeyReused("other request".into()),
            Error::InProgress("running".into()),
        ];
        for e in cases {
            let back = Error::from_wire(e.code(), e.wire_message());
            assert_eq!(back.code(), e.code());
            assert_eq!(back.wire_message(), e.wire_message());
        }
        assert!(matches!(
            Error::from_wire("weird", "x".into()),
            Error::Remote { .. }
        ));
        // A peer that stopped is `Shutdown` here too (an HTTP node answers 503, not 500).
        assert!(matches!(
            Error::from_wire(Error::Shutdown.code(), Error::Shutdown.wire_message()),
            Error::Shutdown
        ));
    }
}
