//! `--otlp-endpoint`: the node's spans (target `zs_trace`, see `zeroservices_core::trace`)
//! exported over OTLP/HTTP (protobuf) by a batch processor on its own thread, and the W3C
//! trace context read from and written to them for the core.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{filter_fn, FilterFn};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How often finished spans are sent (they are also sent when the node stops).
const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// The traces URL of an OTLP/HTTP endpoint given as its base (`http://collector:4318`) or
/// as the full traces URL.
pub(crate) fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

/// The provider exporting to `endpoint` as `service`.
pub(crate) fn provider(endpoint: &str, service: &str) -> anyhow::Result<SdkTracerProvider> {
    let url = traces_url(endpoint);
    anyhow::ensure!(
        url.starts_with("http://") || url.starts_with("https://"),
        "--otlp-endpoint {endpoint:?}: expected an http:// or https:// URL"
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}

/// The layer turning the node's spans into OpenTelemetry spans (and no other span).
pub(crate) fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let only_ours: FilterFn = filter_fn(|m| m.target() == zeroservices_core::trace::TARGET);
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("zeroservices"))
        .with_filter(only_ours)
}

/// W3C trace context on `tracing` spans, through `tracing-opentelemetry`.
#[derive(Debug)]
pub(crate) struct Propagation;

impl zeroservices_core::trace::Propagator for Propagation {
    fn current(&self) -> Option<String> {
        let cx = Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }

    fn set_parent(&self, span: &Span, traceparent: &str) {
        let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
        let cx = TraceContextPropagator::new().extract(&carrier);
        if let Err(e) = span.set_parent(cx) {
            tracing::debug!(error = %e, "trace parent not set");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_endpoint_is_a_base_or_the_traces_url() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/v1/traces"),
            "http://c:4318/v1/traces"
        );
    }
}
