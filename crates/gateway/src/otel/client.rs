//! The OTLP exporter's HTTP client: the gateway's own hyper client (HTTP and HTTPS), run on a
//! small runtime of its own. The SDK's batch processor exports from a plain thread of its own,
//! blocking on each export; with a private runtime that export never waits on (nor takes a
//! worker from) the runtime serving requests, and the gateway needs no second HTTP stack.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest one export may take, connect to last response byte.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest collector answer read (they are a few bytes; a partial-success message at most).
const MAX_ANSWER: usize = 64 * 1024;

/// Sends export requests.
#[derive(Debug)]
pub(super) struct Client {
    /// Runs the sends; `None` only while being dropped.
    runtime: Option<tokio::runtime::Runtime>,
    /// Pooled keep-alive connections to the collector.
    http: crate::forward::UpstreamClient,
    /// Whether the last export failed: a failure is logged when exports start failing, and
    /// the recovery when they work again, not once per batch.
    failing: AtomicBool,
}

impl Client {
    /// A client with its own one-thread runtime.
    pub(super) fn new() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let timeouts = crate::config::Timeouts {
            connect: Duration::from_secs(5),
            first_byte: EXPORT_TIMEOUT,
            idle: None,
            total: None,
        };
        Ok(Self {
            runtime: Some(runtime),
            http: crate::forward::client(&timeouts),
            failing: AtomicBool::new(false),
        })
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one panics; this never blocks.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[async_trait::async_trait]
impl HttpClient for Client {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let Some(runtime) = &self.runtime else {
            return Err("the exporter is shutting down".into());
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Not on the SDK's export thread: blocking here would stall a runtime.
            return Err("OTLP export called from inside a runtime".into());
        }
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(body));
        let sent: Result<Response<Bytes>, HttpError> = runtime.block_on(async {
            let response = tokio::time::timeout(EXPORT_TIMEOUT, self.http.request(request))
                .await
                .map_err(|_| "OTLP export timed out")??;
            let (parts, body) = response.into_parts();
            let body =
                tokio::time::timeout(EXPORT_TIMEOUT, Limited::new(body, MAX_ANSWER).collect())
                    .await
                    .map_err(|_| "OTLP export timed out")??
                    .to_bytes();
            Ok(Response::from_parts(parts, body))
        });
        let failed = match &sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the collector answered {}", r.status())),
            Err(e) => Some(e.to_string()),
        };
        match failed {
            Some(why) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!("OTLP export failing, spans are being lost: {why}");
            }
            None if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!("OTLP export works again");
            }
            _ => {}
        }
        sent
    }
}
