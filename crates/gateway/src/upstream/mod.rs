//! Direct HTTP/1.1 connections to plain-`http` backends: each backend keeps its idle
//! keep-alive connections in its own lists ([`IdleConns`], inside its live state, so a reload
//! keeps them), and a request takes one, sends on it from its own task, and the relay gives
//! it back once the response body has passed whole ([`DirectBody::reusable`]). The
//! connection is driven by the request that uses it ([`direct`]; the bytes on the wire are
//! [`wire`]'s), so a request costs no connection task and no hand-over between tasks. HTTPS
//! backends go through the pooled client of [`crate::forward`]; [`UpstreamBody`] is either
//! kind of answer's body.
//!
//! Semantics kept from the pooled client: a pooled connection the backend closed while idle,
//! or that fails while the request is written, is not a failure (the request goes out on the
//! next one, or a fresh one); idle connections are not reused after [`IDLE_TIMEOUT`]; at
//! most [`MAX_IDLE`] wait per backend and worker; connections are opened with the backend's
//! connect timeout, `TCP_NODELAY` and TCP keep-alive.

use bytes::Bytes;
use http::uri::Authority;
use http::Response;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower_service::Service;

use std::sync::Arc;
use tokio::sync::watch;

use crate::fleet::Backend;
use crate::forward::Upstream;
use crate::gateway::Snapshot;

mod direct;
pub mod wire;

pub use direct::{Conn, DirectBody};

/// Why a request could not be sent or answered: a connect error (an I/O error in its
/// sources, as [`crate::attempts`] looks for), a wire error or hyper's.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long an idle connection may wait to be reused (the pooled client's idle timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Most idle connections kept per backend.
pub const MAX_IDLE: usize = 1024;

/// TCP keep-alive probes on upstream connections start after this much silence.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// One backend's idle connections, most recently used last, in one list per connection
/// worker ([`crate::workers`]): a connection's socket is registered with the reactor of the
/// worker that opened it, so a request on another worker would be woken across threads.
/// Threads that are no worker use list 0, as worker 32 does.
#[derive(Debug, Default)]
pub struct IdleConns([Shard; SHARDS]);

/// Lists per backend; workers past this many share them (still correct, only slower).
const SHARDS: usize = 32;

/// One worker's list, alone on its cache lines: neighbouring workers take and give back
/// connections at every request, and must not contend for one line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(Mutex<Vec<(Conn, Instant)>>);

impl IdleConns {
    /// This thread's list.
    fn mine(&self) -> &Mutex<Vec<(Conn, Instant)>> {
        &self.0[crate::workers::current() % SHARDS].0
    }

    /// The most recently used idle connection that is still open and young enough.
    fn take(&self) -> Option<Conn> {
        let mut idle = self.mine().lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((mut conn, since)) = idle.pop() {
            if since.elapsed() < IDLE_TIMEOUT && conn.usable() {
                return Some(conn);
            }
        }
        None
    }

    /// Gives back a connection whose response was read whole. Connections idle past
    /// [`IDLE_TIMEOUT`] at the old end of the list are closed on the way.
    pub fn put(&self, conn: Conn) {
        let now = Instant::now();
        let mut idle = self.mine().lock().unwrap_or_else(PoisonError::into_inner);
        let stale = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT)
            .count();
        if stale > 0 {
            idle.drain(..stale);
        }
        if idle.len() < MAX_IDLE {
            idle.push((conn, now));
        }
    }

    /// Closes the idle connections that waited past [`IDLE_TIMEOUT`] or that the backend
    /// closed (or wrote to) meanwhile; returns how many. No task watches an idle connection,
    /// so without this the sockets of a backend that gets no more requests would stay open
    /// (see [`sweep_every`]).
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut closed = 0;
        for shard in &self.0 {
            let mut idle = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            let before = idle.len();
            idle.retain_mut(|(conn, since)| {
                now.duration_since(*since) < IDLE_TIMEOUT && conn.usable()
            });
            closed += before - idle.len();
        }
        closed
    }

    /// Idle connections held now.
    pub fn len(&self) -> usize {
        self.0
            .iter()
            .map(|l| l.0.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An upstream response body: read on a direct connection, or from the pooled client.
#[derive(Debug)]
pub enum UpstreamBody {
    /// From a direct connection ([`send`]).
    Direct(DirectBody),
    /// From the pooled client (HTTPS backends).
    Pooled(Incoming),
}

impl UpstreamBody {
    /// The direct connection it came on, when it has been read whole and may carry another
    /// request.
    pub fn reusable(&mut self) -> Option<Conn> {
        match self {
            UpstreamBody::Direct(b) => b.reusable(),
            UpstreamBody::Pooled(_) => None,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match self.get_mut() {
            UpstreamBody::Direct(b) => Pin::new(b).poll_frame(cx).map_err(Error::from),
            UpstreamBody::Pooled(b) => Pin::new(b).poll_frame(cx).map_err(Error::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Direct(b) => b.is_end_stream(),
            UpstreamBody::Pooled(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Direct(b) => b.size_hint(),
            UpstreamBody::Pooled(b) => b.size_hint(),
        }
    }
}

/// How often [`sweep_every`] looks at every backend's idle connections.
pub const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// Sweeps every backend's idle connections ([`IdleConns::sweep`]) every [`SWEEP_EVERY`], and
/// at once after a reload; ends when the gateway does.
pub async fn sweep_every(mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    loop {
        let due = tokio::time::Instant::now() + SWEEP_EVERY;
        if !crate::scrape::until_due_or_changed(due, &mut snapshots).await {
            return;
        }
        let snap = snapshots.borrow_and_update().clone();
        let closed: usize = snap
            .pools
            .values()
            .flat_map(|p| p.backends.iter())
            .map(|b| b.state.conns.sweep())
            .sum();
        if closed > 0 {
            tracing::debug!(closed, "closed idle upstream connections");
        }
    }
}

/// Whether requests to `backend` go through a direct connection (plain `http`).
pub fn direct(backend: &Backend) -> bool {
    backend.config.scheme == http::uri::Scheme::HTTP
}

/// Sends `req` (origin-form URI, `Host` set) to `backend` on one of its idle connections,
/// or a new one, and reads the response head; the body is read as it is polled.
pub async fn send(backend: &Backend, req: &Upstream<'_>) -> Result<Response<UpstreamBody>, Error> {
    let c = &backend.config;
    send_to(&backend.state.conns, &c.authority, c.timeouts.connect, req).await
}

/// [`send`] to the server at `authority`, whose idle connections are `idle`.
async fn send_to(
    idle: &IdleConns,
    authority: &Authority,
    connect_timeout: Duration,
    req: &Upstream<'_>,
) -> Result<Response<UpstreamBody>, Error> {
    let mut conn = loop {
        match idle.take() {
            Some(mut conn) => match conn.write_request(req).await {
                Ok(()) => break conn,
                // The backend answered before it closed (a refusal of the request's head,
                // say): that answer is the request's. Otherwise it closed the connection
                // while idle and has not had the request whole: the next one may carry it.
                Err(_) => match conn.answered_early() {
                    Some(head) => return Ok(response(conn, head)),
                    None => continue,
                },
            },
            None => {
                let mut conn = connect(authority, connect_timeout).await?;
                if let Err(e) = conn.write_request(req).await {
                    return match conn.answered_early() {
                        Some(head) => Ok(response(conn, head)),
                        None => Err(e.into()),
                    };
                }
                break conn;
            }
        }
    };
    let head = conn.read_head().await?;
    Ok(response(conn, head))
}

/// The response whose `head` was read from `conn`, its body to come from `conn`.
fn response(conn: Conn, head: wire::Head) -> Response<UpstreamBody> {
    let mut resp = Response::new(UpstreamBody::Direct(DirectBody::new(conn, &head)));
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    resp
}

/// Opens a connection to `authority`.
async fn connect(authority: &Authority, timeout: Duration) -> Result<Conn, Error> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(timeout));
    http.set_keepalive(Some(TCP_KEEPALIVE));
    let uri = http::Uri::builder()
        .scheme(http::uri::Scheme::HTTP)
        .authority(authority.clone())
        .path_and_query("/")
        .build()?;
    poll_fn(|cx| http.poll_ready(cx)).await?;
    let io = http.call(uri).await?;
    Ok(Conn::new(io.into_inner()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A plain answer whose body is `ok`.
    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    /// A mock upstream (mocked in these unit tests; the gateway's integration tests use real
    /// backends): answers every request on a connection with `answer`, and counts
    /// connections; with `close_after_answer` it closes each connection after one answer,
    /// as a backend whose keep-alive timeout ran out would.
    async fn mock(
        answer: &'static [u8],
        close_after_answer: bool,
    ) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut have = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        have.extend_from_slice(&buf[..n]);
                        // Each test request has a 2-byte body after its head.
                        while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                            if have.len() < end + 4 + 2 {
                                break;
                            }
                            have.drain(..end + 4 + 2);
                            if s.write_all(answer).await.is_err() {
                                return;
                            }
                            if close_after_answer {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (Authority::try_from(addr.to_string()).unwrap(), accepted)
    }

    /// A request with no headers of the client's (`base` is empty).
    fn request<'a>(base: &'a crate::forward::Prepared, authority: &Authority) -> Upstream<'a> {
        let mut headers = crate::forward::HeaderPlan::new(base);
        headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(authority.as_str()).unwrap(),
        );
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(2));
        Upstream {
            uri: http::Uri::from_static("/v1/chat/completions"),
            headers,
            body: Bytes::from_static(b"{}"),
        }
    }

    /// Sends a request with no headers of the client's to `authority`.
    async fn send_plain(
        idle: &IdleConns,
        authority: &Authority,
    ) -> Result<Response<UpstreamBody>, Error> {
        let base = crate::forward::Prepared::default();
        send_to(
            idle,
            authority,
            Duration::from_secs(5),
            &request(&base, authority),
        )
        .await
    }

    /// Sends one request and reads its body whole, giving the connection back (when it can
    /// carry another request) as the relay does.
    async fn exchange(idle: &IdleConns, authority: &Authority) -> Bytes {
        let resp = send_plain(idle, authority).await.unwrap();
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut all = Vec::new();
        while let Some(frame) = body.frame().await {
            all.extend_from_slice(&frame.unwrap().into_data().unwrap());
        }
        if let Some(conn) = body.reusable() {
            idle.put(conn);
        }
        Bytes::from(all)
    }

    #[tokio::test]
    async fn a_connection_whose_answer_was_read_whole_is_used_again() {
        let (authority, accepted) = mock(OK, false).await;
        let idle = IdleConns::default();
        for _ in 0..3 {
            assert_eq!(exchange(&idle, &authority).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(idle.len(), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_the_backend_closed_is_not_a_failure() {
        let (authority, accepted) = mock(OK, true).await;
        let idle = IdleConns::default();
        for _ in 0..3 {
            assert_eq!(exchange(&idle, &authority).await, "ok");
            // Let the reactor record the close (real sockets: the paused clock cannot
            // stand in for the kernel delivering it).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_chunked_answer_read_whole_leaves_its_connection_for_the_next_request() {
        const CHUNKED: &[u8] =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n";
        let (authority, accepted) = mock(CHUNKED, false).await;
        let idle = IdleConns::default();
        for _ in 0..3 {
            assert_eq!(exchange(&idle, &authority).await, "ok!!!");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_whose_answer_says_close_is_not_used_again() {
        const CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok";
        let (authority, accepted) = mock(CLOSE, false).await;
        let idle = IdleConns::default();
        for _ in 0..3 {
            assert_eq!(exchange(&idle, &authority).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert!(idle.is_empty());
    }

    #[tokio::test]
    async fn a_body_the_backend_cuts_short_is_an_error_and_its_connection_is_dropped() {
        const SHORT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nok";
        let (authority, _) = mock(SHORT, true).await;
        let idle = IdleConns::default();
        let resp = send_plain(&idle, &authority).await.unwrap();
        let mut body = resp.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ok");
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(
            err.to_string().contains("before its response body ended"),
            "{err}"
        );
        assert!(body.reusable().is_none());
    }

    #[tokio::test]
    async fn a_backend_that_closes_without_answering_is_an_error() {
        let (authority, _) = mock(b"", true).await;
        let idle = IdleConns::default();
        let err = send_plain(&idle, &authority).await.unwrap_err();
        assert!(err.to_string().contains("before answering"), "{err}");
    }

    #[tokio::test]
    async fn a_sweep_closes_idle_connections_the_backend_closed() {
        let (authority, _) = mock(OK, true).await;
        let idle = IdleConns::default();
        assert_eq!(exchange(&idle, &authority).await, "ok");
        assert_eq!(idle.len(), 1, "the answer allowed keep-alive");
        // The mock closes after its answer; the sweep sees it once the close has arrived.
        tokio::time::timeout(Duration::from_secs(10), async {
            while idle.sweep() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the closed connection was never swept");
        assert!(idle.is_empty());
    }

    #[tokio::test]
    async fn an_answer_sent_before_the_backend_stopped_reading_is_the_requests() {
        // The backend answers 413 to the head and closes without reading the body, which
        // is larger than the socket buffers, so the write fails.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = Authority::try_from(listener.local_addr().unwrap().to_string()).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let _ = s.read(&mut buf).await;
            let answer = b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig";
            s.write_all(answer).await.unwrap();
            let _ = s.shutdown().await;
            // Closing with the body unread resets the connection, which fails the write.
            tokio::time::sleep(Duration::from_millis(100)).await;
        });
        let base = crate::forward::Prepared::default();
        let mut req = request(&base, &authority);
        req.body = Bytes::from(vec![b'x'; 64 << 20]);
        req.headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(req.body.len()),
        );
        let idle = IdleConns::default();
        let resp = send_to(&idle, &authority, Duration::from_secs(5), &req)
            .await
            .expect("the backend's answer, not the failed write");
        assert_eq!(resp.status(), 413);
        let mut body = resp.into_body();
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(data, "big");
        assert!(
            body.reusable().is_none(),
            "a failed write ends the connection"
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_with_its_io_cause() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = Authority::try_from(listener.local_addr().unwrap().to_string()).unwrap();
        drop(listener);
        let idle = IdleConns::default();
        let err = send_plain(&idle, &authority).await.unwrap_err();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
        let mut io = None;
        while let Some(e) = source {
            if let Some(e) = e.downcast_ref::<std::io::Error>() {
                io = Some(e.kind());
            }
            source = e.source();
        }
        assert_eq!(io, Some(std::io::ErrorKind::ConnectionRefused));
    }
}
