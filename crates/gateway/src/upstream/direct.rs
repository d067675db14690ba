//! One direct HTTP/1.1 connection to a backend, driven by the request that uses it: the
//! request's own task writes the request, reads the response head and then, as the relay
//! polls the body, reads the body from the socket itself. No connection task, no channels
//! between tasks, no wake-ups: a request costs the socket's own reads and writes (hyper's
//! client runs a task per connection and hands each request and response across to it,
//! about 14k instructions a request: `bench/results/instructions-2026-11-29-direct-s22.md`).
//!
//! The wire format is [`super::wire`]'s. An idle connection is no one's: no task watches it.
//! Whether the backend closed it meanwhile is read from its socket's readiness, which the
//! runtime's reactor keeps up to date, when it is taken again ([`Conn::usable`]).

use bytes::{Buf, Bytes, BytesMut};
use http::Method;
use http_body::{Body, Frame, SizeHint};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll, Waker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::wire::{self, Framing, Head, WireError};
use crate::forward::Upstream;

/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;

/// One connection and its buffer (the request head on the way out, then what has been read
/// and not yet passed on).
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

impl Conn {
    /// A connection over `io`.
    pub fn new(io: TcpStream) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection can carry a request: nothing has arrived on it since its
    /// last response (a close, or bytes no request asked for). Usually answered from the
    /// readiness the reactor recorded, without a system call.
    pub fn usable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            // Something came: only a spurious wake-up leaves it usable.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes the request (a `POST`: its head, then its body) in as few writes as the socket
    /// takes: head and body go out together.
    pub async fn write_request(&mut self, req: &Upstream<'_>) -> io::Result<()> {
        self.buf.clear();
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        wire::encode_head(&Method::POST, path, req.headers.iter(), &mut self.buf);
        let mut out = Buf::chain(&self.buf[..], &req.body[..]);
        self.io.write_all_buf(&mut out).await?;
        self.buf.clear();
        Ok(())
    }

    /// After a write failed: the head of an answer the backend sent before it stopped
    /// reading (a refusal of the request's head, say), if it is already here whole. Only what
    /// has arrived is read; the connection is not used again after its body.
    pub fn answered_early(&mut self) -> Option<Head> {
        self.buf.clear();
        while self.buf.len() < wire::MAX_HEAD {
            self.buf.reserve(READ_CHUNK);
            match self.io.try_read_buf(&mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let mut head = wire::parse_head(&mut self.buf).ok().flatten()?;
        head.keep_alive = false;
        Some(head)
    }

    /// Reads the response head; what follows it stays in the buffer for the body.
    pub async fn read_head(&mut self) -> Result<Head, WireError> {
        loop {
            if let Some(head) = wire::parse_head(&mut self.buf)? {
                return Ok(head);
            }
            self.buf.reserve(READ_CHUNK);
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::ClosedBeforeHead);
            }
        }
    }
}

/// A response body read from its connection as the relay polls it. Dropped before its end,
/// it closes the connection (so the engine stops generating); read whole from a connection
/// that may carry another request, it gives the connection up with [`DirectBody::reusable`].
#[derive(Debug)]
pub struct DirectBody {
    /// `None` once the body failed or ended with the connection's close.
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
}

impl DirectBody {
    /// The body of the response whose `head` was read from `conn`.
    pub fn new(conn: Conn, head: &Head) -> Self {
        Self {
            conn: Some(conn),
            framing: head.framing,
            keep_alive: head.keep_alive,
        }
    }

    /// The connection, when the body has been read whole and the connection may carry
    /// another request (its response allowed it, and nothing beyond the body arrived).
    pub fn reusable(&mut self) -> Option<Conn> {
        let clean = self.keep_alive
            && self.framing.is_done()
            && self.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        if clean {
            self.conn.take()
        } else {
            None
        }
    }
}

impl Body for DirectBody {
    type Data = Bytes;
    type Error = WireError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match wire::take_data(&mut this.framing, &mut conn.buf) {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if this.framing.is_done() => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            conn.buf.reserve(READ_CHUNK);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.buf
            ));
            match read {
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(match this.framing {
                        Framing::UntilClose => None,
                        _ => Some(Err(WireError::ClosedInBody)),
                    });
                }
                Ok(_) => {}
                Err(e) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.framing.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match (self.framing, &self.conn) {
            (_, None) => SizeHint::with_exact(0),
            (Framing::Length(n), _) => SizeHint::with_exact(n),
            _ => SizeHint::new(),
        }
    }
}
