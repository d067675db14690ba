//! The response body type: either a small body the gateway wrote itself, or an upstream body
//! relayed frame by frame as it arrives, never buffered. The relay observes what passes:
//! the first data frame is the time to first byte (first token when streaming), the end is the
//! request duration; dropping it (client gone) releases the backend's in-flight slot and drops
//! the upstream body, which closes the upstream connection so the engine aborts the request.
//!
//! Once a byte has reached the client nothing is retried (that could duplicate tokens). A
//! failure after that point — the upstream breaks, goes silent past the idle timeout, or the
//! request runs past its total timeout — ends an SSE stream in-band with one error event and
//! `[DONE]` (see [`STREAM_BROKEN_EVENT`]), and ends any other body with an error, which
//! closes the client connection (JSON cannot be repaired in-band). Each is counted in
//! `switchyard_stream_errors_total`, logged, and reported to the backend's breaker.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tokio::time::Sleep;

use crate::fleet::InFlightGuard;
use crate::providers::{ClientApi, Translate};
use crate::sse::EventFramer;
use crate::upstream::{self, UpstreamBody};

mod watched;
pub use watched::Watched;

/// A response body.
#[derive(Debug)]
pub enum GatewayBody {
    /// A complete body written by the gateway (errors, model list, metrics).
    Full(Option<Bytes>),
    /// A body with what watches it on its way: an upstream body in transit (a [`Relay`]),
    /// the request's admission slot, held until it ends or is dropped (see
    /// [`crate::admission`]), and its decision record, completed at its end (see
    /// [`crate::decisions`]). One box per proxied request, made with the relay, so a response
    /// moves as a few words on its way out rather than the relay's few hundred bytes.
    Watched(Box<Watched>),
    /// A live feed the gateway writes as it goes (the dashboard's server-sent events); ends
    /// when its sender is dropped.
    Feed(tokio::sync::mpsc::Receiver<Bytes>),
}

impl GatewayBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        GatewayBody::Full(Some(bytes.into()))
    }

    /// `relay`, in the box that what watches it joins later.
    pub fn relay(relay: Relay) -> Self {
        GatewayBody::Watched(Box::new(Watched::new(watched::Inner::Relay(relay))))
    }

    /// Whether the response with `headers` and this body is an SSE stream: a relay knows it
    /// from the upstream's answer (unless it translates); otherwise `content-type` says.
    pub fn is_sse(&self, headers: &http::HeaderMap) -> bool {
        match self {
            GatewayBody::Watched(w) => w.is_sse(headers),
            _ => content_type_is_sse(headers),
        }
    }

    /// Puts this body in a [`Watched`] box (the one it is in, if it is a relay's) and
    /// returns the box, for a permit or a record to join.
    pub fn watched(self) -> Box<Watched> {
        match self {
            GatewayBody::Watched(w) => w,
            other => Box::new(Watched::new(watched::Inner::Body(other))),
        }
    }
}

/// Whether `content-type` says `text/event-stream`.
fn content_type_is_sse(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"))
}

/// Why a relayed body ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The upstream body failed.
    #[error("upstream body failed: {0}")]
    Upstream(upstream::Error),
    /// No chunk arrived within the idle timeout.
    #[error("upstream sent nothing for {0:?}")]
    Idle(Duration),
    /// The request ran past its total timeout.
    #[error("request exceeded its total timeout of {0:?}")]
    Total(Duration),
}

impl BodyError {
    /// The SSE event that ends a stream broken this way.
    fn event(&self) -> &'static str {
        match self {
            BodyError::Upstream(_) => STREAM_BROKEN_EVENT,
            BodyError::Idle(_) => STREAM_IDLE_EVENT,
            BodyError::Total(_) => STREAM_TOTAL_EVENT,
        }
    }
}

/// What a client receives when an upstream SSE stream breaks after the response started: one
/// error event in OpenAI's error shape, then `[DONE]`, then a clean end of the HTTP body. The
/// SDKs raise an API error on the event; clients that read until `[DONE]` stop there.
pub const STREAM_BROKEN_EVENT: &str = concat!(
    r#"data: {"error":{"message":"the backend's stream broke before it finished; the output above is incomplete","#,
    r#""type":"server_error","param":null,"code":"upstream_stream_broken"}}"#,
    "\n\ndata: [DONE]\n\n"
);

/// The end of a stream whose backend went silent past the idle timeout.
pub const STREAM_IDLE_EVENT: &str = concat!(
    r#"data: {"error":{"message":"the backend sent nothing within the idle timeout; the output above is incomplete","#,
    r#""type":"server_error","param":null,"code":"upstream_idle_timeout"}}"#,
    "\n\ndata: [DONE]\n\n"
);

/// The end of a stream that ran past the request's total timeout.
pub const STREAM_TOTAL_EVENT: &str = concat!(
    r#"data: {"error":{"message":"the request ran past its total timeout; the output above is incomplete","#,
    r#""type":"server_error","param":null,"code":"upstream_total_timeout"}}"#,
    "\n\ndata: [DONE]\n\n"
);

/// The time limits of a relayed body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    /// Longest silence between two frames.
    pub idle: Option<Duration>,
    /// Deadline of the whole request, with the configured total for messages.
    pub total: Option<(tokio::time::Instant, Duration)>,
}

#[derive(Debug)]
struct Timers {
    idle: Option<Pin<Box<Sleep>>>,
    total: Option<Pin<Box<Sleep>>>,
}

/// An upstream body being relayed and observed.
#[derive(Debug)]
pub struct Relay {
    /// The upstream body; `None` once it ended early, so the upstream connection is closed at
    /// once rather than when the client goes away. A direct connection's body gives the
    /// connection back to the backend's idle list when it has passed whole.
    inner: Option<UpstreamBody>,
    /// The first frame, read before the response was committed to (see
    /// [`crate::attempts`]); sent first.
    first: Option<Frame<Bytes>>,
    started: Instant,
    seen_first: bool,
    /// When the first data frame passed, for time per output token.
    first_at: Option<Instant>,
    /// SSE `data:` events seen: one per streamed chunk, roughly one per token.
    events: u32,
    /// The body is an SSE stream, so a failure midway can be reported in-band.
    sse: bool,
    /// Events of the stream that are not a gap between two tokens: the first token's,
    /// `[DONE]`, a chat stream's role chunk (vLLM sends it with the first token) and the usage
    /// chunk when asked for. The rest, over the time from the first token, is time per token.
    non_gap_events: u32,
    /// For an SSE stream: lets through whole events only, so an error event can always
    /// follow on a fresh boundary (see [`crate::sse`]).
    framer: EventFramer,
    /// The stream failed and its closing error event was sent: the next poll ends the body.
    ended: bool,
    limits: Limits,
    /// The idle and total timers, made the first time the upstream makes the relay wait (a
    /// body that never waits, like most non-streamed answers, allocates none).
    timers: Option<Box<Timers>>,
    /// The backend's slot, released when the body ends or is dropped; also the way to its
    /// metrics and health.
    guard: InFlightGuard,
    /// Turns the answer into the client's API as it passes, when the backend speaks another
    /// (see [`crate::providers`]); `None`: relayed as it is.
    translate: Option<Box<Translate>>,
    /// The translator has had the end of the body and said its last words.
    translate_done: bool,
    /// The API the client called: the shape of the event that ends a broken stream.
    client: ClientApi,
    /// Gateway time when the body ended (see [`crate::clock`]), for what ends with it (the
    /// request's admission permit) to use rather than read the clock again.
    pub(super) ended_at: Option<Duration>,
}

impl Relay {
    /// Relays `inner` after `first` (its first frame, already read); `started` is when the
    /// client's request arrived; `sse` when the response is `text/event-stream`, with
    /// `non_gap_events` events that are not a gap between two tokens (see the field).
    pub fn new(
        inner: UpstreamBody,
        first: Option<Frame<Bytes>>,
        started: Instant,
        (sse, non_gap_events): (bool, u32),
        limits: Limits,
        guard: InFlightGuard,
    ) -> Self {
        let mut relay = Self {
            inner: Some(inner),
            seen_first: false,
            first_at: None,
            ended_at: None,
            events: 0,
            first: None,
            started,
            sse,
            non_gap_events,
            framer: EventFramer::new(),
            ended: false,
            limits,
            timers: None,
            guard,
            translate: None,
            translate_done: false,
            client: ClientApi::OpenAi,
        };
        if let Some(d) = first.as_ref().and_then(Frame::data_ref) {
            relay.first_byte();
            relay.count_events(d);
        }
        relay.first = match first {
            Some(f) if sse && f.is_data() => f
                .into_data()
                .ok()
                .and_then(|d| relay.frame_out(d))
                .map(Frame::data),
            other => other,
        };
        relay
    }

    /// Answers a client of `client`'s API (errors that end a stream take its shape).
    pub fn for_client(mut self, client: ClientApi) -> Self {
        self.client = client;
        self
    }

    /// Translates the answer with `t` from here on, the first frame (already read) included.
    pub fn translating(mut self, t: Translate) -> Self {
        self.translate = Some(Box::new(t));
        let first = match self.first.take() {
            Some(f) if f.is_data() => f.into_data().ok(),
            Some(other) => {
                self.first = Some(other);
                None
            }
            None => None,
        };
        let ended = self.inner.as_ref().is_none_or(Body::is_end_stream);
        let out = self.translated(first, ended);
        if out.is_some() {
            self.first = out.map(Frame::data);
        }
        self
    }

    /// `data` (whole events of a stream, or any bytes of a JSON answer) through the
    /// translator, if there is one, with the translator's last words when the body `ended`.
    fn translated(&mut self, data: Option<Bytes>, ended: bool) -> Option<Bytes> {
        let Some(t) = self.translate.as_mut() else {
            return data;
        };
        let mut out = data.map(|d| t.push(&d)).unwrap_or_default();
        if ended && !std::mem::replace(&mut self.translate_done, true) {
            out.extend(t.finish());
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    /// Returns the direct connection the body came on to the backend's idle list, when it
    /// can carry another request.
    fn give_back(&mut self) {
        if let Some(conn) = self.inner.as_mut().and_then(UpstreamBody::reusable) {
            self.guard.state().conns.put(conn);
        }
    }

    /// What of an upstream data chunk goes to the client now: an SSE stream's whole events
    /// (a trailing partial one waits for its end, or for the end of the body), any other
    /// body's bytes as they are.
    fn frame_out(&mut self, data: Bytes) -> Option<Bytes> {
        let ended = self.inner.as_ref().is_none_or(Body::is_end_stream);
        if !self.sse {
            return self.translated(Some(data), ended);
        }
        let out = self.framer.push(data);
        if ended {
            // The body ends with this chunk: what is held goes out with it.
            let out = match (out, self.framer.finish()) {
                (Some(a), Some(b)) => {
                    let mut all = bytes::BytesMut::with_capacity(a.len() + b.len());
                    all.extend_from_slice(&a);
                    all.extend_from_slice(&b);
                    Some(all.freeze())
                }
                (a, b) => a.or(b),
            };
            return self.translated(out, true);
        }
        self.translated(out, false)
    }

    /// Releases the slot and records the duration; `complete` when the whole body passed, so
    /// that a cut request does not enter the latency averages.
    fn finish(&mut self, complete: bool) {
        if complete {
            self.give_back();
        }
        if self.guard.release() {
            // One clock read for the latency, the token gaps and the signal's stamp.
            let now = Instant::now();
            let at = crate::clock::at(now);
            self.ended_at = Some(at);
            let latency = now.saturating_duration_since(self.started);
            let state = self.guard.state();
            state.metrics().duration.observe(latency.as_secs_f64());
            // The events past the non-gap ones are token gaps (or a few tokens each, when an
            // engine batches them).
            let tpot = match (self.first_at, self.events.checked_sub(self.non_gap_events)) {
                (Some(first), Some(gaps)) if self.sse && gaps > 0 => {
                    Some(now.saturating_duration_since(first) / gaps)
                }
                _ => None,
            };
            if complete {
                state.signals.observe_done(latency, tpot, at);
            }
        }
    }

    /// A data frame passed: the first one is the time to first byte (first token when
    /// streaming), recorded here only, whether it was read before the response was committed
    /// to (see [`crate::attempts`]) or relayed later.
    fn first_byte(&mut self) {
        if std::mem::replace(&mut self.seen_first, true) {
            return;
        }
        let now = Instant::now();
        let ttfb = now.saturating_duration_since(self.started);
        self.first_at = Some(now);
        self.guard.first_byte();
        let state = self.guard.state();
        state.metrics().ttfb.observe(ttfb.as_secs_f64());
        state.signals.observe_ttft(ttfb, crate::clock::at(now));
    }

    /// Counts SSE events in a relayed chunk (an event split across chunks may be missed; the
    /// count only feeds an average).
    fn count_events(&mut self, chunk: &[u8]) {
        if !self.sse {
            return;
        }
        let n = chunk.windows(5).filter(|w| *w == b"data:").count();
        self.events = self
            .events
            .saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Ends the body early: counted, logged, reported; an SSE stream gets its closing event.
    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.inner = None;
        // A partial event is dropped: the error event must start on a boundary.
        self.framer.abandon();
        self.guard.state().metrics().stream_errors.inc();
        self.guard.outcome(false);
        let [model, backend] = self.guard.state().metrics().labels();
        tracing::warn!(%model, %backend, error = %e, sse = self.sse, "response failed after it started; not retried");
        self.finish(false);
        self.ended = true;
        if self.sse {
            let event = match self.client {
                ClientApi::OpenAi => Bytes::from_static(e.event().as_bytes()),
                ClientApi::Anthropic => crate::providers::anthropic_stream_error(&e.to_string()),
            };
            Poll::Ready(Some(Ok(Frame::data(event))))
        } else {
            Poll::Ready(Some(Err(e)))
        }
    }

    fn poll_relay(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(f) = self.first.take() {
            if self.inner.as_ref().is_none_or(Body::is_end_stream) {
                self.finish(true);
            }
            return Poll::Ready(Some(Ok(f)));
        }
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return Poll::Ready(None);
            };
            let polled = Pin::new(&mut *inner).poll_frame(cx);
            match polled {
                Poll::Pending => return self.wait(cx),
                Poll::Ready(Some(Err(e))) => return self.fail(BodyError::Upstream(e)),
                Poll::Ready(None) => {
                    self.finish(true);
                    self.inner = None;
                    // A clean end: a trailing partial event goes out as the upstream sent it.
                    let rest = self.framer.finish();
                    return Poll::Ready(self.translated(rest, true).map(|b| Ok(Frame::data(b))));
                }
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(d) = f.data_ref() {
                        self.first_byte();
                        self.count_events(d);
                    }
                    if let (Some(Timers { idle: Some(t), .. }), Some(d)) =
                        (self.timers.as_deref_mut(), self.limits.idle)
                    {
                        t.as_mut().reset(tokio::time::Instant::now() + d);
                    }
                    let out = match f.into_data() {
                        Ok(d) => match self.frame_out(d) {
                            Some(d) => Frame::data(d),
                            // Held back whole: read on.
                            None => continue,
                        },
                        Err(f) => f,
                    };
                    // A body of known length ends with its last frame; hyper may not poll
                    // again before the client has it, so release the slot now.
                    if self.inner.as_ref().is_none_or(Body::is_end_stream) {
                        self.finish(true);
                    }
                    return Poll::Ready(Some(Ok(out)));
                }
            }
        }
    }

    /// The upstream has nothing yet: arm or check the idle and total timers.
    fn wait(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let limits = self.limits;
        if limits.idle.is_none() && limits.total.is_none() {
            return Poll::Pending;
        }
        // The idle timer counts from the first wait after a frame: at least `idle` of
        // silence before it fires.
        let timers = self.timers.get_or_insert_with(|| {
            let now = tokio::time::Instant::now();
            Box::new(Timers {
                idle: limits
                    .idle
                    .map(|d| Box::pin(tokio::time::sleep_until(now + d))),
                total: limits
                    .total
                    .map(|(at, _)| Box::pin(tokio::time::sleep_until(at))),
            })
        });
        if let (Some(t), Some((_, d))) = (&mut timers.total, limits.total) {
            if t.as_mut().poll(cx).is_ready() {
                return self.fail(BodyError::Total(d));
            }
        }
        if let (Some(t), Some(d)) = (&mut timers.idle, limits.idle) {
            if t.as_mut().poll(cx).is_ready() {
                return self.fail(BodyError::Idle(d));
            }
        }
        Poll::Pending
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            GatewayBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            GatewayBody::Watched(w) => w.poll(cx),
            GatewayBody::Feed(rx) => rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full(b) => b.is_none(),
            GatewayBody::Feed(rx) => rx.is_closed() && rx.is_empty(),
            GatewayBody::Watched(w) => w.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            GatewayBody::Full(None) => SizeHint::with_exact(0),
            GatewayBody::Feed(_) => SizeHint::new(),
            GatewayBody::Watched(w) => w.size_hint(),
        }
    }
}

impl Relay {
    /// Whether nothing more will come (see [`Body::is_end_stream`]).
    fn is_end_stream(&self) -> bool {
        self.ended
            || (self.first.is_none()
                && self.framer.is_empty()
                && (self.translate.is_none() || self.translate_done)
                && self.inner.as_ref().is_none_or(Body::is_end_stream))
    }

    /// What is left to come (see [`Body::size_hint`]).
    fn size_hint(&self) -> SizeHint {
        // A translated body's length is not the upstream's.
        if self.translate.is_some() {
            return SizeHint::new();
        }
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |d| d.len() as u64);
        let rest = self
            .inner
            .as_ref()
            .map_or(SizeHint::with_exact(0), Body::size_hint);
        let mut h = SizeHint::new();
        h.set_lower(rest.lower() + first);
        if let Some(u) = rest.upper() {
            h.set_upper(u + first);
        }
        h
    }
}
