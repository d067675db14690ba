//! OpenTelemetry traces: the exporter (OTLP/HTTP protobuf, batched on its own thread, never
//! on a request's path), each request's span and its children, and W3C `traceparent` in and
//! out.
//!
//! A proxied request gets one server span, the child of the client's `traceparent` when it
//! sent a valid one. Its children are `admission`, `route` (one per routing decision) and
//! `upstream` (one per attempt); the first byte sent to the client is an event on it, and it
//! ends when the response body ends (the decision log's hook in
//! [`crate::decisions::Pending`]), not when the handler returns. Every attempt carries a
//! `traceparent` naming its own span, so an engine that traces joins the request's trace.
//!
//! Off (no `tracing:` section), nothing here runs: the request path checks one `Option`.

use http::header::{HeaderMap, HeaderValue};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use opentelemetry_sdk::Resource;
use switchyard_core::Decision;

use crate::config::TracingConfig;
use crate::error::ApiError;
use crate::fleet::{Backend, Pool};

mod client;

/// Finished spans held for export at most; past it new ones are dropped (by the SDK).
const MAX_QUEUE: usize = 4096;

/// The running exporter and the tracer that makes every request's spans. Started with the
/// gateway's first config and kept across reloads.
#[derive(Debug)]
pub struct Tracing {
    /// Owns the batch processor; shut down (last batch flushed) when dropped.
    provider: SdkTracerProvider,
    /// Makes spans.
    tracer: SdkTracer,
}

impl Tracing {
    /// Starts the exporter to `cfg.endpoint`; the error says why it could not be built.
    pub fn start(cfg: &TracingConfig) -> Result<Self, String> {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client::Client::new().map_err(|e| e.to_string())?)
            .with_endpoint(cfg.endpoint.to_string())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUE)
            .with_scheduled_delay(cfg.export_interval)
            .build();
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                cfg.sample,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "switchyard");
        Ok(Self { provider, tracer })
    }

    /// The exporter `cfg` asks for, if any; one that cannot start is logged and left off
    /// (the gateway serves without traces rather than not at all).
    pub fn from_config(cfg: Option<&TracingConfig>) -> Option<std::sync::Arc<Self>> {
        match Self::start(cfg?) {
            Ok(t) => Some(std::sync::Arc::new(t)),
            Err(e) => {
                tracing::error!("tracing is off: {e}");
                None
            }
        }
    }

    /// The span of one proxied request (`POST <path>`), continuing the client's trace when
    /// `headers` carry a valid `traceparent`.
    pub fn request(
        &self,
        method: &http::Method,
        path: &str,
        headers: &HeaderMap,
        request_id: &HeaderValue,
    ) -> RequestSpan {
        let parent = TraceContextPropagator::new()
            .extract_with_context(&Context::new(), &HeaderExtractor(headers));
        let span = self
            .tracer
            .span_builder(format!("{method} {path}"))
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.path", path.to_owned()),
                KeyValue::new(
                    "switchyard.request_id",
                    String::from_utf8_lossy(request_id.as_bytes()).into_owned(),
                ),
            ])
            .start_with_context(&self.tracer, &parent);
        RequestSpan {
            cx: parent.with_span(span),
            tracer: self.tracer.clone(),
        }
    }

    /// Sends every finished span now (tests, shutdown).
    pub fn flush(&self) {
        let _ = self.provider.force_flush();
    }
}

/// One request's span, shared by the handler and the response body (clones are cheap).
/// The span ends at [`RequestSpan::end`], or when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct RequestSpan {
    /// The client's trace context with the request's span in it.
    cx: Context,
    /// Makes the children.
    tracer: SdkTracer,
}

impl RequestSpan {
    /// A child span named `name` (ends when dropped).
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Child {
        Child(
            self.tracer
                .span_builder(name)
                .with_kind(kind)
                .start_with_context(&self.tracer, &self.cx),
        )
    }

    /// Sets attributes on the request's span.
    pub fn set(&self, attributes: impl IntoIterator<Item = KeyValue>) {
        self.cx.span().set_attributes(attributes);
    }

    /// The trace id, 32 hex digits (for logs).
    pub fn trace_id(&self) -> String {
        self.cx.span().span_context().trace_id().to_string()
    }

    /// The response's first body byte is on its way to the client.
    pub fn first_byte(&self) {
        self.cx.span().add_event("first_byte", Vec::new());
    }

    /// The response's head is ready: its status, an error status from 500 on.
    pub fn responded(&self, status: http::StatusCode) {
        let span = self.cx.span();
        span.set_attribute(kv("http.response.status_code", i64::from(status.as_u16())));
        if status.is_server_error() {
            span.set_status(Status::error(status.to_string()));
        }
    }

    /// The response body ended (`completed`) or was dropped (the client left): ends the span.
    pub fn end(&self, completed: bool, routed: Option<(&str, u32)>) {
        let span = self.cx.span();
        if let Some((backend, attempts)) = routed {
            span.set_attributes([
                kv("switchyard.backend", backend.to_owned()),
                kv("switchyard.attempts", i64::from(attempts)),
            ]);
        }
        span.add_event(
            if completed {
                "end_of_stream"
            } else {
                "client_gone"
            },
            Vec::new(),
        );
        span.end();
    }

    /// The `admission` child, once the request's model and pool are known (which it notes
    /// on the request's span too).
    pub fn admission(&self, model: &str, pool: &Pool) -> Child {
        self.set([
            kv("switchyard.model", model.to_owned()),
            kv("switchyard.pool", pool.name.clone()),
            kv("switchyard.policy", pool.policy.name().to_owned()),
        ]);
        self.child("admission", SpanKind::Internal)
    }

    /// The `upstream` child for attempt `n` at `backend` (a client span).
    pub fn attempt(&self, backend: &Backend, n: u32) -> Child {
        let authority = &backend.config.authority;
        let mut span = self.child("upstream", SpanKind::Client);
        span.set([
            kv("http.request.method", "POST"),
            kv("server.address", authority.host().to_owned()),
            kv("switchyard.backend", backend.name().to_owned()),
            kv("switchyard.attempt", i64::from(n)),
        ]);
        if let Some(port) = authority.port_u16() {
            span.set([kv("server.port", i64::from(port))]);
        }
        span
    }

    /// A `tracing` span carrying the request and trace ids, so that log lines written while
    /// the request is routed say which trace they belong to.
    pub fn log_span(&self, request_id: &HeaderValue) -> tracing::Span {
        tracing::info_span!("request", request_id = ?request_id, trace_id = %self.trace_id())
    }
}

/// A child of a request's span; ends when dropped.
#[derive(Debug)]
pub struct Child(opentelemetry_sdk::trace::Span);

impl Child {
    /// Sets attributes.
    pub fn set(&mut self, attributes: impl IntoIterator<Item = KeyValue>) {
        self.0.set_attributes(attributes);
    }

    /// Writes `traceparent` (and `tracestate`) naming this span into `headers`, replacing
    /// any the client sent.
    pub fn inject(&self, headers: &mut crate::forward::HeaderPlan<'_>) {
        // The client's state belongs to its parent; ours carries it on when it was valid.
        headers.remove(http::header::HeaderName::from_static("tracestate"));
        let cx = Context::new().with_remote_span_context(self.0.span_context().clone());
        let mut ours = HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(&mut ours));
        for (name, value) in &ours {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Notes on the `admission` span why the request was refused.
pub fn refused(span: Option<&mut Child>, e: &ApiError) {
    if let Some(span) = span {
        span.set([
            kv("switchyard.outcome", "refused"),
            kv("error.type", e.code()),
            kv("http.response.status_code", i64::from(e.status().as_u16())),
        ]);
    }
}

/// Notes on a `route` span what the policy decided (nothing: no backend was usable).
pub fn decided(span: Option<Child>, pool: &Pool, decision: Option<&Decision>) {
    let Some(mut span) = span else { return };
    span.set([
        kv("switchyard.pool", pool.name.clone()),
        kv("switchyard.policy", pool.policy.name().to_owned()),
    ]);
    match decision {
        Some(d) => span.set([
            kv(
                "switchyard.backend",
                pool.backend(d.primary)
                    .map_or("?", Backend::name)
                    .to_owned(),
            ),
            kv("switchyard.reason", d.reason.to_string()),
        ]),
        None => span.set([kv("switchyard.outcome", "no_backend")]),
    }
}

/// Notes on an `upstream` span how the attempt ended: `ok`, `retryable` (an answer that
/// fails over), `error` (no usable answer) or `local` (the gateway's own shortage), with the
/// upstream's status when it answered, and the error's code when there is one.
pub fn attempted(
    span: Option<Child>,
    outcome: &'static str,
    status: Option<u16>,
    error: Option<&ApiError>,
) {
    let Some(mut span) = span else { return };
    span.set([kv("switchyard.outcome", outcome)]);
    if let Some(status) = status {
        span.set([kv("http.response.status_code", i64::from(status))]);
    }
    if let Some(e) = error {
        span.set([kv("error.type", e.code())]);
        span.0.set_status(Status::error(e.to_string()));
    } else if outcome != "ok" {
        span.0.set_status(Status::error(outcome));
    }
}

/// Attribute key/value helper for the call sites (`kv("switchyard.backend", name)`).
pub fn kv(key: &'static str, value: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(key, value)
}
