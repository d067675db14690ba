//! A streamed answer: one SSE chunk per token at the engine's pace, shaped as vLLM sends them,
//! and the stream faults that cut or stall it.
//!
//! As in vLLM, nothing is sent before the first token: the first event (the chat `role` chunk,
//! `{"role":"assistant","content":""}`) goes out with the first token's chunk, in one write,
//! so a client or gateway that times the first byte measures the time to first token. Each
//! token is one chunk; the last token's chunk carries `finish_reason`; then the usage chunk
//! (with `stream_options.include_usage`) and `data: [DONE]`.
//!
//! The body ([`StreamBody`]) tells the producing task when hyper drops it (the client closed
//! the connection), so a client that leaves is noticed at once, even in a stall when nothing is
//! written, and the engine's request is cancelled ([`super::cancel`]).
//!
//! Faults ([`StreamFaults`]): `drop_after_tokens` and `drop_after_bytes` cut the connection
//! (no `[DONE]`; a byte limit usually falls inside an event); `stall_after_tokens` stops
//! sending for `stall_for` or until the client leaves, the connection left open.

use bytes::{Bytes, BytesMut};
use http_body_util::channel::{Channel, Sender};
use hyper::body::{Body, Frame, SizeHint};
use serde_json::Value;
use std::fmt::Write;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

use super::cancel::InFlight;
use super::driver::ReqEvent;
use super::faults::StreamFaults;
use super::openai::{Kind, Output};

/// Frames buffered between the producing task and the connection.
const CHANNEL_FRAMES: usize = 16;
/// A cut connection first lets what was sent reach the socket.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(10);

/// A streamed response body: the frames of a channel, and a signal to the producer when the
/// body is dropped.
#[derive(Debug)]
pub struct StreamBody {
    frames: Channel<Bytes, io::Error>,
    /// Dropped with the body: the producer's [`oneshot::Receiver`] then resolves.
    _dropped: oneshot::Sender<()>,
}

impl StreamBody {
    /// A body, the sender of its frames, and what resolves when the body is dropped.
    pub(super) fn new() -> (Self, Sender<Bytes, io::Error>, oneshot::Receiver<()>) {
        let (tx, frames) = Channel::new(CHANNEL_FRAMES);
        let (dropped, gone) = oneshot::channel();
        (
            Self {
                frames,
                _dropped: dropped,
            },
            tx,
            gone,
        )
    }
}

impl Body for StreamBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.frames).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.frames.size_hint()
    }
}

/// How a stream ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// `[DONE]` was sent.
    Done,
    /// The engine dropped the request (a crash).
    EngineStopped,
}

/// Why a stream stopped early.
#[derive(Debug, PartialEq, Eq)]
enum Stop {
    /// The client left (the body was dropped).
    Gone,
    /// A fault cut it.
    Cut,
}

/// Where a stream's bytes go, with the faults that cut or stall it.
pub(super) struct Sink {
    tx: Sender<Bytes, io::Error>,
    gone: oneshot::Receiver<()>,
    faults: StreamFaults,
    /// Body bytes sent so far, for `drop_after_bytes`.
    sent_bytes: u64,
    /// Tokens sent so far, for `drop_after_tokens` and `stall_after_tokens`.
    sent_tokens: u32,
}

impl Sink {
    /// A sink into `tx`; `gone` resolves when the body is dropped.
    pub(super) fn new(
        tx: Sender<Bytes, io::Error>,
        gone: oneshot::Receiver<()>,
        faults: StreamFaults,
    ) -> Self {
        Self {
            tx,
            gone,
            faults,
            sent_bytes: 0,
            sent_tokens: 0,
        }
    }

    /// Sends `frame`, or the part of it within `drop_after_bytes` and then [`Stop::Cut`].
    async fn send(&mut self, mut frame: Bytes) -> Result<(), Stop> {
        let mut cut = false;
        if let Some(limit) = self.faults.drop_after_bytes {
            let room = limit.saturating_sub(self.sent_bytes);
            if frame.len() as u64 >= room {
                frame.truncate(usize::try_from(room).unwrap_or(usize::MAX));
                cut = true;
            }
        }
        if !frame.is_empty() {
            self.sent_bytes += frame.len() as u64;
            self.tx.send_data(frame).await.map_err(|_| Stop::Gone)?;
        }
        if cut {
            return Err(Stop::Cut);
        }
        Ok(())
    }

    /// Sends a frame that carries one more token, then applies the token faults.
    async fn send_token(&mut self, frame: Bytes) -> Result<(), Stop> {
        self.send(frame).await?;
        self.sent_tokens += 1;
        if self.faults.drop_after_tokens == Some(self.sent_tokens) {
            return Err(Stop::Cut);
        }
        if self.faults.stall_after_tokens == Some(self.sent_tokens) {
            let stall = async {
                match self.faults.stall_for {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut self.gone => return Err(Stop::Gone),
                () = stall => {}
            }
        }
        Ok(())
    }

    /// Cuts the connection, after letting what was sent reach the socket.
    async fn cut(self) {
        tokio::time::sleep(FLUSH_BEFORE_CUT).await;
        self.tx
            .abort(io::Error::other("simulated fault: connection dropped"));
    }
}

/// Streams `out` into `sink` as the engine produces it.
pub(super) async fn run(
    out: Output,
    mut sink: Sink,
    mut events: mpsc::UnboundedReceiver<ReqEvent>,
    include_usage: bool,
    mut in_flight: InFlight,
) {
    let stop = if sink.faults.drop_after_tokens == Some(0) {
        Stop::Cut
    } else {
        match produce(&out, &mut sink, &mut events, include_usage, &mut in_flight).await {
            Ok(End::Done) => return,
            // The stream ends without `[DONE]`, as a crashed server's would.
            Ok(End::EngineStopped) => {
                return sink.tx.abort(io::Error::other("the engine stopped"));
            }
            Err(stop) => stop,
        }
    };
    match stop {
        // Dropping `in_flight` cancels the engine's request and records it.
        Stop::Gone => {}
        Stop::Cut => {
            in_flight.cut_by_fault();
            sink.cut().await;
        }
    }
}

/// Sends every event of the stream until `[DONE]` or the engine stops.
async fn produce(
    out: &Output,
    sink: &mut Sink,
    events: &mut mpsc::UnboundedReceiver<ReqEvent>,
    include_usage: bool,
    in_flight: &mut InFlight,
) -> Result<End, Stop> {
    let rid = out.response_id();
    let (mut cached, mut finish_sent) = (0, false);
    loop {
        let ev = tokio::select! {
            biased;
            _ = &mut sink.gone => return Err(Stop::Gone),
            ev = events.recv() => ev,
        };
        match ev {
            Some(ReqEvent::Admitted { cached_tokens }) => cached = cached_tokens,
            Some(ReqEvent::Token { index }) => {
                let last = index + 1 >= out.max_tokens;
                finish_sent |= last;
                let mut frame = BytesMut::new();
                if index == 0 && out.kind == Kind::Chat {
                    frame.extend_from_slice(&out.chunk(
                        &rid,
                        r#"[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]"#,
                        None,
                    ));
                }
                let piece = out.piece(index);
                let text = std::str::from_utf8(&piece).unwrap_or("?");
                frame.extend_from_slice(&out.chunk(
                    &rid,
                    &token_choices(out.kind, text, last),
                    None,
                ));
                sink.send_token(frame.freeze()).await?;
            }
            Some(ReqEvent::Finished { output_tokens }) => {
                in_flight.finished();
                if !finish_sent {
                    let choices = token_choices(out.kind, "", true);
                    sink.send(out.chunk(&rid, &choices, None)).await?;
                }
                if include_usage {
                    let usage = out.usage(output_tokens, cached);
                    sink.send(out.chunk(&rid, "[]", Some(&usage))).await?;
                }
                sink.send(Bytes::from_static(b"data: [DONE]\n\n")).await?;
                return Ok(End::Done);
            }
            None => {
                in_flight.finished();
                return Ok(End::EngineStopped);
            }
        }
    }
}

/// The `choices` of a token's chunk, with `finish_reason` if it is the `last`.
fn token_choices(kind: Kind, text: &str, last: bool) -> String {
    let finish = if last {
        r#""length","stop_reason":null"#
    } else {
        "null"
    };
    match kind {
        Kind::Chat => format!(
            r#"[{{"index":0,"delta":{{"content":"{text}"}},"logprobs":null,"finish_reason":{finish}}}]"#
        ),
        Kind::Completion => {
            format!(r#"[{{"index":0,"text":"{text}","logprobs":null,"finish_reason":{finish}}}]"#)
        }
    }
}

impl Output {
    /// One SSE chunk with `choices` (raw JSON) and optional usage.
    fn chunk(&self, rid: &str, choices: &str, usage: Option<&Value>) -> Bytes {
        let object = match self.kind {
            Kind::Chat => "chat.completion.chunk",
            Kind::Completion => "text_completion",
        };
        let mut s = format!(
            "data: {{\"id\":\"{rid}\",\"object\":\"{object}\",\"created\":{},\"model\":{},\"choices\":{choices}",
            self.created, self.shared.model_json
        );
        if let Some(u) = usage {
            let _ = write!(s, ",\"usage\":{u}");
        }
        s.push_str("}\n\n");
        Bytes::from(s)
    }
}
