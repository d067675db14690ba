//! One client connection's limits: how long it may take to send a request head, how long it
//! may sit idle between requests, and how many connections may be open at once.
//!
//! [`WatchedIo`] wraps the socket. It knows from a [`ConnWatch`] shared with the service
//! whether a request is in flight on the connection (the service counts requests in, and
//! [`Tracked`], the response body, counts them out when it is dropped). While none is, the
//! connection is either waiting for a request (closed after `keepalive_timeout` of silence,
//! or `header_read_timeout` for a new connection's first request) or reading a head that
//! started to arrive (closed if it is not whole within `header_read_timeout`). A connection
//! with a request in flight has no connection-level timer: the request's own timeouts apply.
//! The same wrapper serves HTTP/1.1 and HTTP/2, for which "in flight" counts streams.
//!
//! [`OpenConnections`] counts open connections; past `limits.max_connections`, [`reject`]
//! answers a new one with a `503` and closes it.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::body::GatewayBody;

/// What the service tells the socket wrapper about the requests on one connection, and what
/// the service remembers of it (the key it presented).
#[derive(Debug, Default)]
pub struct ConnWatch {
    /// Requests whose response has not finished (or been dropped).
    in_flight: AtomicU32,
    /// Requests started on this connection, ever: a change means a head was completed.
    started: AtomicU64,
    /// The API key its requests presented last.
    pub keys: crate::admission::keys::KeyMemo,
}

impl ConnWatch {
    /// A request's head was read and the service is called: counts it in flight until the
    /// returned body is dropped.
    pub fn begin(self: &Arc<Self>, body: GatewayBody) -> Tracked {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Tracked {
            body,
            watch: self.clone(),
        }
    }
}

/// A response body that counts its request out of [`ConnWatch`] when it is dropped (sent in
/// full, or abandoned because the client went away).
#[derive(Debug)]
pub struct Tracked {
    body: GatewayBody,
    watch: Arc<ConnWatch>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.watch.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = <GatewayBody as Body>::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Where a connection stands, as far as its timers go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request (a new connection's first, or the next on a kept-alive one).
    Waiting,
    /// Some bytes of a request head arrived; the rest must follow in time.
    Head,
    /// A request is in flight: no connection timer.
    Busy,
}

/// The client-side timeouts a [`WatchedIo`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    /// See [`crate::config::Limits::header_read_timeout`].
    pub header_read: Duration,
    /// See [`crate::config::Limits::keepalive_timeout`].
    pub keepalive: Duration,
}

/// A client socket that closes itself when its client stalls (see the module doc).
#[derive(Debug)]
pub struct WatchedIo {
    inner: TcpStream,
    watch: Arc<ConnWatch>,
    timeouts: ConnTimeouts,
    phase: Phase,
    /// `watch.started` when the phase was last set, to see a request begin and end between
    /// two polls.
    seen_started: u64,
    /// When the connection is closed unless the phase changes first.
    deadline: Instant,
    /// Armed at `deadline` or earlier; when it fires early it is moved to `deadline`, so
    /// pushing the deadline back costs nothing until then.
    timer: Pin<Box<Sleep>>,
}

impl WatchedIo {
    /// Wraps a freshly accepted socket: its first request head must arrive within
    /// `header_read`.
    pub fn new(inner: TcpStream, watch: Arc<ConnWatch>, timeouts: ConnTimeouts) -> Self {
        let deadline = Instant::now() + timeouts.header_read;
        Self {
            inner,
            watch,
            timeouts,
            phase: Phase::Waiting,
            seen_started: 0,
            deadline,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Sets the deadline; the timer only moves when it would otherwise fire too late.
    fn arm(&mut self, at: Instant) {
        self.deadline = at;
        if self.timer.deadline() > at {
            self.timer.as_mut().reset(at);
        }
    }

    /// Follows requests that began or ended since the last poll.
    fn sync_phase(&mut self) {
        let started = self.watch.started.load(Ordering::Relaxed);
        let busy = self.watch.in_flight.load(Ordering::Relaxed) > 0;
        if busy {
            self.phase = Phase::Busy;
            self.seen_started = started;
        } else if self.phase == Phase::Busy || started != self.seen_started {
            // The last request finished: the connection now waits for the next one.
            self.seen_started = started;
            self.phase = Phase::Waiting;
            self.arm(Instant::now() + self.timeouts.keepalive);
        }
    }

    /// Whether the current phase's deadline has passed (registers the waker if not).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= self.deadline {
                return true;
            }
            // Fired early: the deadline moved back since the timer was set.
            let at = self.deadline;
            self.timer.as_mut().reset(at);
        }
    }
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.sync_phase();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && this.phase == Phase::Waiting {
                    // A head starts; a new connection's first head keeps the deadline it got
                    // at accept (header_read_timeout from then).
                    if this.seen_started > 0 {
                        this.arm(Instant::now() + this.timeouts.header_read);
                    }
                    this.phase = Phase::Head;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.phase != Phase::Busy && this.expired(cx) {
                    let what = match this.phase {
                        Phase::Head => {
                            "the request head did not arrive within limits.header_read_timeout"
                        }
                        _ => "the connection was idle past its limit",
                    };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Open client connections, shared by a listener's accept loop and its connections.
#[derive(Debug, Default)]
pub struct OpenConnections(AtomicU32);

/// One open connection; counted out when dropped.
#[derive(Debug)]
pub struct ConnSlot(Arc<OpenConnections>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl OpenConnections {
    /// A slot for one more connection, unless `max` are open.
    pub fn try_open(self: &Arc<Self>, max: u32) -> Option<ConnSlot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnSlot(self.clone()))
    }

    /// How many are open.
    #[cfg(test)]
    pub fn count(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a connection over the cap receives before it is closed.
const OVER_CAP: &str = concat!(
    "HTTP/1.1 503 Service Unavailable\r\n",
    "content-type: application/json\r\n",
    "retry-after: 1\r\n",
    "connection: close\r\n",
    "content-length: 184\r\n",
    "\r\n",
    r#"{"error":{"message":"the gateway has as many client connections open as limits.max_connections allows; retry shortly","#,
    r#""type":"server_error","param":null,"code":"too_many_connections"}}"#,
);

/// How long a rejected connection is given to take its `503` before it is closed.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Answers a connection over the cap with a `503` (code `too_many_connections`) and closes
/// it. What the client sent is read and discarded for a moment, so that closing does not
/// reset the connection before the answer is read.
pub async fn reject(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REJECT_LINGER, async {
        stream.write_all(OVER_CAP.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_over_cap_answer_declares_its_exact_length() {
        let (head, body) = OVER_CAP.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "too_many_connections");
    }

    #[test]
    fn the_connection_count_never_passes_its_cap() {
        let open = Arc::new(OpenConnections::default());
        let a = open.try_open(2).unwrap();
        let _b = open.try_open(2).unwrap();
        assert!(open.try_open(2).is_none());
        drop(a);
        assert_eq!(open.count(), 1);
        assert!(open.try_open(2).is_some());
    }
}
