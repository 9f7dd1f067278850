//! Distributed tracing: the hooks through which one trace follows a change across nodes (an
//! HTTP request, the resource request to the provider, its store write, the event, a worker's
//! job and the job's own requests).
//!
//! The core does not depend on OpenTelemetry. A program that exports traces installs a
//! [`Propagator`] once (the `zeroservices` binary does with `--otlp-endpoint`); then the node
//! opens spans (target [`TARGET`]) and carries the W3C `traceparent` of the current span in
//! every resource request and change event it sends. Without one, nothing of this runs: no
//! span is created and nothing is added to messages.
//!
//! ```
//! use zeroservices_core::trace::{self, Propagator};
//!
//! #[derive(Debug)]
//! struct Printing;
//! impl Propagator for Printing {
//!     fn current(&self) -> Option<String> { None }
//!     fn set_parent(&self, _span: &tracing::Span, traceparent: &str) { println!("{traceparent}"); }
//! }
//! assert!(!trace::enabled());
//! trace::install(Printing).expect("the first propagator of the process");
//! assert!(trace::enabled());
//! // A remote parent is handed to the propagator when the span is made.
//! let _span = trace::span("handle power.create", "server", Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
//! ```

use std::sync::OnceLock;

use tracing::Span;

/// The `tracing` target of the spans the node opens.
pub const TARGET: &str = "zs_trace";

/// Reads and sets trace context on `tracing` spans: implemented over `tracing-opentelemetry`.
pub trait Propagator: Send + Sync + std::fmt::Debug + 'static {
    /// The W3C `traceparent` of the current span, when it belongs to a trace.
    fn current(&self) -> Option<String>;
    /// Makes the remote span `traceparent` the parent of `span` (called before it is entered).
    fn set_parent(&self, span: &Span, traceparent: &str);
}

static PROPAGATOR: OnceLock<Box<dyn Propagator>> = OnceLock::new();

/// Installs the process's propagator; an error (giving it back) when one is installed already.
pub fn install<P: Propagator>(p: P) -> Result<(), Box<dyn Propagator>> {
    PROPAGATOR.set(Box::new(p))
}

/// True once a propagator is installed.
pub fn enabled() -> bool {
    PROPAGATOR.get().is_some()
}

/// The `traceparent` of the current span (`None` when tracing is off).
pub fn current() -> Option<String> {
    PROPAGATOR.get()?.current()
}

/// Whether `tp` has the shape of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
pub fn is_traceparent(tp: &str) -> bool {
    let parts: Vec<&str> = tp.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    parts.len() == 4
        && parts[0] == "00"
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
        && parts[2].bytes().any(|b| b != b'0')
}

/// A span named `name` of OpenTelemetry kind `kind` (`server`, `client`, `producer`,
/// `consumer` or `internal`): the child of `parent` (a remote `traceparent`) when given and
/// well formed, else of the current span. [`Span::none`] when tracing is off.
pub fn span(name: &str, kind: &'static str, parent: Option<&str>) -> Span {
    let Some(p) = PROPAGATOR.get() else {
        return Span::none();
    };
    let span = tracing::info_span!(target: TARGET, "zs", otel.name = name, otel.kind = kind);
    if let Some(tp) = parent.filter(|tp| is_traceparent(tp)) {
        p.set_parent(&span, tp);
    }
    span
}

#[cfg(test)]
mod tests {
    use super::is_traceparent;

    #[test]
    fn only_well_formed_traceparents_are_taken() {
        assert!(is_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(!is_traceparent(bad), "{bad}");
        }
    }
}
