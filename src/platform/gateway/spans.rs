//! Optional export of the gateway's spans over OTLP/HTTP (JSON) through the OpenTelemetry
//! crates: one server span per sampled invocation, with the ids the function saw in its `traceparent`
//! ([`TraceContext`]), so a collector (the OpenTelemetry Collector, Jaeger, Tempo) joins the
//! gateway's span to the caller's and the function's own. Spans leave in batches from a tokio
//! task; a collector that is down costs dropped spans, never a slower invocation.

use super::*;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
use std::time::SystemTime;

/// The exporter could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("cannot export spans to {endpoint}; check --otlp-endpoint (an http:// URL of an OTLP/HTTP collector)")]
pub struct SpanExportError {
    /// Where spans were to go.
    pub endpoint: String,
    /// Why not.
    #[source]
    pub source: opentelemetry_otlp::ExporterBuildError,
}

/// The gateway's span exporter; shut it down to send what is still buffered. The gateway knows
/// each span whole when the call ends (its ids are the ones the function was given), so it hands
/// finished spans straight to the SDK's batch processor: no tracer picks ids of its own.
pub struct SpanExport {
    processor: Arc<BatchSpanProcessor<opentelemetry_sdk::runtime::Tokio>>,
    scope: InstrumentationScope,
}

impl std::fmt::Debug for SpanExport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpanExport").finish_non_exhaustive()
    }
}

impl SpanExport {
    /// Spans to the OTLP/HTTP collector at `endpoint` (its base URL, e.g.
    /// `http://otel-collector:4318`; spans go to `/v1/traces` under it). Must run inside the
    /// tokio runtime, which carries the exports. The batch size and delay follow the standard
    /// `OTEL_BSP_*` variables.
    pub fn start(endpoint: &str) -> Result<SpanExport, SpanExportError> {
        let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(traces)
            .build()
            .map_err(|source| SpanExportError { endpoint: endpoint.to_string(), source })?;
        let mut processor = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
        processor.set_resource(
            &opentelemetry_sdk::Resource::builder()
                .with_service_name("kubefn")
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let scope = InstrumentationScope::builder("kubefn-gateway").with_version(env!("CARGO_PKG_VERSION")).build();
        Ok(SpanExport { processor: Arc::new(processor), scope })
    }

    /// Records one invocation's span: `trace`'s ids (the caller's span as the remote parent),
    /// from `started` to now, with the function's status or why it gave none.
    pub(super) fn record(
        &self,
        trace: &TraceContext,
        target: (&str, &str),
        started: SystemTime,
        outcome: Result<http::StatusCode, &GatewayError>,
    ) {
        // A caller that does not sample its trace gets no span from kubefn either.
        if trace.flags & 1 == 0 {
            return;
        }
        let (user, function) = target;
        let mut attributes = vec![
            KeyValue::new("kubefn.user", user.to_string()),
            KeyValue::new("kubefn.function", function.to_string()),
        ];
        let status = match outcome {
            Ok(status) => {
                attributes.push(KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
                if status.is_server_error() {
                    Status::error(format!("the function answered {status}"))
                } else {
                    Status::Unset
                }
            }
            Err(error) => Status::error(error.to_string()),
        };
        self.processor.on_end(SpanData {
            span_context: SpanContext::new(
                TraceId::from(trace.trace_id),
                SpanId::from(trace.span_id),
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: trace.parent_id.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: trace.parent_id.is_some(),
            span_kind: SpanKind::Server,
            name: format!("invoke {user}/{function}").into(),
            start_time: started,
            end_time: SystemTime::now(),
            attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        });
    }

    /// Sends what is buffered and stops; spans recorded later are dropped. The processor waits
    /// for its exporting task, so it waits on a blocking thread, not on a runtime worker.
    pub async fn shutdown(&self) {
        let processor = self.processor.clone();
        match tokio::task::spawn_blocking(move || processor.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the last spans could not be exported"),
            Err(error) => tracing::warn!(%error, "the span exporter's shutdown failed"),
        }
    }
}
