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
    /// When the first data frame passed, for time per output token.
    first_at: Option<Instant>,
    /// SSE `data:` events seen: one per streamed chunk, roughly one per token.
    events: u32,
    /// The body is an SSE stream, so a failure midway can be reported in-band.
    sse: bool,
    /// The stream failed and its closing error event was sent: the next poll ends the body.
    ended: bool,
    /// The backend's slot, released when the body ends or is dropped; also the way to its
    /// metrics.
    guard: InFlightGuard,
}

/// What a client receives when an upstream SSE stream breaks after the response started: one
/// error event in OpenAI's error shape, then `[DONE]`, then a clean end of the HTTP body. The
/// SDKs raise an API error on the event; clients that read until `[DONE]` stop there.
pub const STREAM_BROKEN_EVENT: &str = concat!(
    r#"data: {"error":{"message":"the backend's stream broke before it finished; the output above is incomplete","#,
    r#""type":"server_error","param":null,"code":"upstream_stream_broken"}}"#,
    "\n\ndata: [DONE]\n\n"
);

impl Relay {
    /// Relays `inner`; `started` is when the client's request arrived; `sse` when the
    /// response is `text/event-stream`.
    pub fn new(inner: Incoming, started: Instant, sse: bool, guard: InFlightGuard) -> Self {
        Self {
            inner,
            started,
            seen_first: false,
            first_at: None,
            events: 0,
            sse,
            ended: false,
            guard,
        }
    }

    /// Releases the slot and records the duration; `complete` when the whole body passed, so
    /// that a cut request does not enter the latency averages.
    fn finish(&mut self, complete: bool) {
        if self.guard.release() {
            let latency = self.started.elapsed();
            let state = self.guard.state();
            state.metrics().duration.observe(latency.as_secs_f64());
            // The first event of an OpenAI stream carries the role, the last `[DONE]`; the
            // ones between are tokens (or a few, when an engine batches them).
            let tpot = match (self.first_at, self.events) {
                (Some(first), n) if self.sse && n >= 3 => Some(first.elapsed() / (n - 2)),
                _ => None,
            };
            if complete {
                state
                    .signals
                    .observe_done(latency, tpot, crate::clock::now());
            }
        }
    }

    /// Counts SSE events in a relayed chunk (an event split across chunks may be missed; the
    /// count only feeds an average).
    fn count_events(&mut self, chunk: &[u8]) {
        let n = chunk.windows(5).filter(|w| *w == b"data:").count();
        self.events = self
            .events
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.finish(false);
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
                if r.ended {
                    return Poll::Ready(None);
                }
                let polled = Pin::new(&mut r.inner).poll_frame(cx);
                if let Poll::Ready(Some(Err(e))) = &polled {
                    r.guard.state().metrics().stream_errors.inc();
                    tracing::warn!(error = %e, sse = r.sse, "upstream body failed midway");
                    if r.sse {
                        r.finish(false);
                        r.ended = true;
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                            STREAM_BROKEN_EVENT.as_bytes(),
                        )))));
                    }
                }
                match &polled {
                    Poll::Ready(Some(Ok(f))) => {
                        if !r.seen_first && f.is_data() {
                            r.seen_first = true;
                            let ttfb = r.started.elapsed();
                            r.first_at = Some(Instant::now());
                            r.guard.first_byte();
                            let state = r.guard.state();
                            state.metrics().ttfb.observe(ttfb.as_secs_f64());
                            state.signals.observe_ttft(ttfb, crate::clock::now());
                        }
                        if r.sse {
                            if let Some(d) = f.data_ref() {
                                r.count_events(d);
                            }
                        }
                        // A body of known length ends with its last frame; hyper may not poll
                        // again before the client has it, so release the slot now.
                        if r.inner.is_end_stream() {
                            r.finish(true);
                        }
                    }
                    Poll::Ready(None) => r.finish(true),
                    Poll::Ready(Some(Err(_))) => r.finish(false),
                    Poll::Pending => {}
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full(b) => b.is_none(),
            GatewayBody::Relay(r) => r.ended || r.inner.is_end_stream(),
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
