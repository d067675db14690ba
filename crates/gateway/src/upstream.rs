//! Direct HTTP/1.1 connections to plain-`http` backends: each backend keeps its idle
//! keep-alive connections in its own list ([`IdleConns`], inside its live state, so a reload
//! keeps them), and a request takes one, sends, and gives it back once its response body has
//! been relayed whole. This is the pooled client's work without its per-request costs (a
//! pool keyed by hashed scheme and authority under one lock, a connect future raced against
//! every checkout, a task spawned to return each connection). HTTPS backends, and anything
//! this does not handle, go through the pooled client of [`crate::forward`].
//!
//! Semantics kept from the pooled client: a pooled connection found closed, or closed by the
//! backend before the request was written, is never used (the request goes out on a fresh
//! one, so a keep-alive race is not a failure); idle connections are not reused after
//! [`IDLE_TIMEOUT`]; at most [`MAX_IDLE`] wait per backend and worker; connections are opened
//! with the backend's connect timeout, `TCP_NODELAY` and TCP keep-alive.

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use std::future::poll_fn;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use tower_service::Service;

use crate::fleet::Backend;

/// The sending half of one upstream connection.
pub type Conn = SendRequest<Full<Bytes>>;

/// Why a request could not be sent or answered: a connect error (an I/O error in its
/// sources, as [`crate::attempts`] looks for) or hyper's.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long an idle connection may wait to be reused (the pooled client's idle timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Most idle connections kept per backend.
pub const MAX_IDLE: usize = 1024;

/// TCP keep-alive probes on upstream connections start after this much silence.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// One backend's idle connections, most recently used last, in one list per connection
/// worker ([`crate::workers`]): a connection's task runs on the worker that opened it, so a
/// request on another worker would wake that thread twice (to send, and to hand back the
/// answer). Threads that are no worker use list 0, as worker 32 does.
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
        while let Some((conn, since)) = idle.pop() {
            if !conn.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(conn);
            }
        }
        None
    }

    /// Gives a connection back after its response ended (a closed one is dropped).
    pub fn put(&self, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.mine().lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
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

/// Whether requests to `backend` go through a direct connection (plain `http`).
pub fn direct(backend: &Backend) -> bool {
    backend.config.scheme == http::uri::Scheme::HTTP
}

/// Sends `req` (origin-form URI, `Host` set) to `backend` on one of its idle connections,
/// or a new one; returns the response head and the connection to give back with
/// [`IdleConns::put`] once the body has been read whole.
pub async fn send(
    backend: &Backend,
    req: Request<Full<Bytes>>,
) -> Result<(Response<Incoming>, Conn), Error> {
    let c = &backend.config;
    send_to(&backend.state.conns, &c.authority, c.timeouts.connect, req).await
}

/// [`send`] to the server at `authority`, whose idle connections are `idle`.
async fn send_to(
    idle: &IdleConns,
    authority: &Authority,
    connect_timeout: Duration,
    mut req: Request<Full<Bytes>>,
) -> Result<(Response<Incoming>, Conn), Error> {
    while let Some(mut conn) = idle.take() {
        // Ready once the connection has finished its previous exchange; an error means the
        // backend closed it.
        if poll_fn(|cx| conn.poll_ready(cx)).await.is_err() {
            continue;
        }
        match conn.try_send_request(req).await {
            Ok(resp) => return Ok((resp, conn)),
            Err(mut e) => match e.take_message() {
                // Not written: the connection closed under it. Try the next one.
                Some(unsent) => req = unsent,
                None => return Err(e.into_error().into()),
            },
        }
    }
    let mut conn = connect(authority, connect_timeout).await?;
    let resp = conn.send_request(req).await?;
    Ok((resp, conn))
}

/// Opens a connection to `authority` and starts its connection task.
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
    let (conn, task) = http1::handshake(io).await?;
    tokio::spawn(async move {
        if let Err(e) = task.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A mock upstream: answers every request on a connection with `200 ok`, and counts
    /// connections; with `close_after_answer` it closes each connection after one answer,
    /// as a backend whose keep-alive timeout ran out would.
    async fn mock(close_after_answer: bool) -> (Authority, Arc<AtomicUsize>) {
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
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
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

    fn request(authority: &Authority) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = http::Uri::from_static("/v1/chat/completions");
        req.headers_mut().insert(
            http::header::HOST,
            http::HeaderValue::from_str(authority.as_str()).unwrap(),
        );
        req
    }

    /// Sends one request and reads its body whole, giving the connection back as the relay
    /// does.
    async fn exchange(idle: &IdleConns, authority: &Authority) -> Bytes {
        let (resp, conn) = send_to(idle, authority, Duration::from_secs(5), request(authority))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        idle.put(conn);
        body
    }

    #[tokio::test]
    async fn a_connection_whose_answer_was_read_whole_is_used_again() {
        let (authority, accepted) = mock(false).await;
        let idle = IdleConns::default();
        for _ in 0..3 {
            assert_eq!(exchange(&idle, &authority).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(idle.len(), 1);
    }

    #[tokio::test]
    async fn an_idle_connection_the_backend_closed_is_not_a_failure() {
        let (authority, accepted) = mock(true).await;
        let idle = IdleConns::default();
        for _ in 0..3 {
            assert_eq!(exchange(&idle, &authority).await, "ok");
            // Let the connection task see the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error_with_its_io_cause() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = Authority::try_from(listener.local_addr().unwrap().to_string()).unwrap();
        drop(listener);
        let idle = IdleConns::default();
        let err = send_to(
            &idle,
            &authority,
            Duration::from_secs(5),
            request(&authority),
        )
        .await
        .unwrap_err();
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
