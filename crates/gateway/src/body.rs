//! The response body type: either a small body the gateway wrote itself, or an upstream body
//! relayed frame by frame as it arrives, never buffered. The relay observes what passes:
//! the first data frame is the time to first byte (first token when streaming), the end is the
//! request duration; dropping it (client gone) releases the backend's in-flight slot at once.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use crate::fleet::InFlightGuard;
use crate::telemetry::BackendMetrics;

/// A response body.
#[derive(Debug)]
pub enum GatewayBody {
    /// A complete body written by the gateway (errors, model list, metrics).
    Full(Option<Bytes>),
    /// An upstream body in transit.
    Relay(Relay),
}

impl GatewayBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        GatewayBody::Full(Some(bytes.into()))
    }
}

/// An upstream body being relayed and observed.
#[derive(Debug)]
pub struct Relay {
    inner: Incoming,
    started: Instant,
    seen_first: bool,
    metrics: BackendMetrics,
    /// Released when the body ends or is dropped.
    guard: Option<InFlightGuard>,
}

impl Relay {
    /// Relays `inner`; `started` is when the client's request arrived.
    pub fn new(
        inner: Incoming,
        started: Instant,
        metrics: BackendMetrics,
        guard: InFlightGuard,
    ) -> Self {
        Self {
            inner,
            started,
            seen_first: false,
            metrics,
            guard: Some(guard),
        }
    }

    fn finish(&mut self) {
        if self.guard.take().is_some() {
            self.metrics
                .duration
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.finish();
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            GatewayBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            GatewayBody::Relay(r) => {
                let polled = Pin::new(&mut r.inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(f))) => {
                        if !r.seen_first && f.is_data() {
                            r.seen_first = true;
                            r.metrics.ttfb.observe(r.started.elapsed().as_secs_f64());
                        }
                        // A body of known length ends with its last frame; hyper may not poll
                        // again before the client has it, so release the slot now.
                        if r.inner.is_end_stream() {
                            r.finish();
                        }
                    }
                    Poll::Ready(None) | Poll::Ready(Some(Err(_))) => r.finish(),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full(b) => b.is_none(),
            GatewayBody::Relay(r) => r.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            GatewayBody::Full(None) => SizeHint::with_exact(0),
            GatewayBody::Relay(r) => r.inner.size_hint(),
        }
    }
}
