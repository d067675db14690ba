//! HTTP load generators for `switchyard bench overhead`, over hyper's HTTP/1.1 client
//! connections (one per worker, kept alive):
//!
//! - [`closed_loop`]: N connections sending back to back for a duration: the most requests a
//!   path carries at that concurrency (what `wrk -c N` measures; used when wrk is absent).
//! - [`open_loop`]: requests scheduled at a fixed rate, request `i` at `start + i / rate`,
//!   whatever happened to earlier ones; latency counts from the *scheduled* time, so a stall
//!   shows up in the percentiles instead of silently lowering the rate (the coordinated
//!   omission that `hey -q`, a closed loop per worker with a per-worker throttle, suffers).
//!   The pool of connections is bounded: when all are busy, later requests wait for one and
//!   that wait is counted, as a client with that many connections would see it.
//! - [`open_streams`]: holds N streaming requests open at once (memory under many streams).
//!
//! For streaming requests both also record time to first body byte.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// What to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where.
    pub addr: SocketAddr,
    /// Request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// JSON body.
    pub body: Bytes,
    /// Extra headers (e.g. `authorization` for LiteLLM).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Target {
    fn request(&self) -> Request<Full<Bytes>> {
        let mut b = Request::post(self.path.as_str())
            .header(http::header::HOST, self.addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json");
        for (k, v) in &self.headers {
            b = b.header(k, v);
        }
        // Built from valid parts only; an invalid one would be a bug in this module.
        b.body(Full::new(self.body.clone()))
            .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
    }
}

/// What a load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// Requests answered with a 2xx and a whole body.
    pub ok: u64,
    /// Requests answered with another status.
    pub non_2xx: u64,
    /// Requests that failed at the connection (refused, reset, cut body).
    pub errors: u64,
    /// Open loop only: scheduled requests never sent because the path fell so far behind
    /// that the run's deadline (the duration plus a grace period) passed first.
    pub unsent: u64,
    /// Wall time of the run, s.
    pub elapsed_s: f64,
    /// Latency of each ok request, µs (from send, or from the scheduled time in open loop).
    pub latency_us: Vec<f64>,
    /// Time to first body byte of each ok request, µs (same origin as `latency_us`).
    pub ttfb_us: Vec<f64>,
}

impl LoadResult {
    /// Ok requests per second.
    pub fn rps(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.ok as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    fn merge(&mut self, o: LoadResult) {
        self.ok += o.ok;
        self.non_2xx += o.non_2xx;
        self.errors += o.errors;
        self.unsent += o.unsent;
        self.latency_us.extend(o.latency_us);
        self.ttfb_us.extend(o.ttfb_us);
    }
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(send)
}

/// One request on `conn` (reconnecting first if it is gone). Returns (status ok, first
/// byte, end) instants, or `None` on a connection error (and drops the connection).
async fn one(
    target: &Target,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
) -> Option<(bool, Instant, Instant)> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = connect(target.addr).await;
    }
    let c = conn.as_mut()?;
    if c.ready().await.is_err() {
        *conn = None;
        return None;
    }
    let resp = match c.send_request(target.request()).await {
        Ok(r) => r,
        Err(_) => {
            *conn = None;
            return None;
        }
    };
    let ok = resp.status().is_success();
    let mut body = resp.into_body();
    let mut first = None;
    loop {
        match body.frame().await {
            Some(Ok(f)) => {
                if first.is_none() && f.data_ref().is_some_and(|d| !d.is_empty()) {
                    first = Some(Instant::now());
                }
            }
            Some(Err(_)) => {
                *conn = None;
                return None;
            }
            None => break,
        }
    }
    let end = Instant::now();
    Some((ok, first.unwrap_or(end), end))
}

/// `connections` workers send back to back for `duration`.
pub async fn closed_loop(target: &Target, connections: usize, duration: Duration) -> LoadResult {
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let t = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = LoadResult::default();
            let mut conn = connect(t.addr).await;
            while Instant::now() < end {
                let sent = Instant::now();
                match one(&t, &mut conn).await {
                    Some((true, first, done)) => {
                        r.ok += 1;
                        r.latency_us.push((done - sent).as_secs_f64() * 1e6);
                        r.ttfb_us.push((first - sent).as_secs_f64() * 1e6);
                    }
                    Some((false, _, _)) => r.non_2xx += 1,
                    None => {
                        r.errors += 1;
                        // A refused connection must not spin the loop.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            r
        }));
    }
    let mut total = LoadResult::default();
    for t in tasks {
        if let Ok(r) = t.await {
            total.merge(r);
        }
    }
    total.elapsed_s = start.elapsed().as_secs_f64();
    total
}

/// Requests at `rate` per second for `duration`, over at most `connections` connections;
/// latencies from each request's scheduled time. A path that falls behind is not waited for
/// forever: requests not sent by `duration` plus a grace period (the duration, at most 5 s)
/// are counted as `unsent`.
pub async fn open_loop(
    target: &Target,
    rate: f64,
    duration: Duration,
    connections: usize,
) -> LoadResult {
    let total = (rate.max(0.0) * duration.as_secs_f64()).floor() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now() + Duration::from_millis(20);
    let deadline = start + duration + duration.min(Duration::from_secs(5));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let t = target.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = LoadResult::default();
            let mut conn = connect(t.addr).await;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                if Instant::now() >= deadline {
                    // This one, plus (once, by whoever swaps first) those never handed out.
                    r.unsent += 1 + total.saturating_sub(next.swap(total, Ordering::Relaxed));
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due).await;
                // A request still unanswered at the deadline is an error, not a hang.
                match tokio::time::timeout_at(deadline, one(&t, &mut conn)).await {
                    Ok(Some((true, first, done))) => {
                        r.ok += 1;
                        r.latency_us.push((done - due).as_secs_f64() * 1e6);
                        r.ttfb_us.push((first - due).as_secs_f64() * 1e6);
                    }
                    Ok(Some((false, _, _))) => r.non_2xx += 1,
                    Ok(None) => r.errors += 1,
                    Err(_) => {
                        r.errors += 1;
                        conn = None;
                    }
                }
            }
            r
        }));
    }
    let mut out = LoadResult::default();
    for t in tasks {
        if let Ok(r) = t.await {
            out.merge(r);
        }
    }
    out.elapsed_s = start.elapsed().as_secs_f64();
    out
}

/// Opens `n` streaming requests (the body should ask the mock to hold them), waits until each
/// has its first byte or `deadline` passes, calls `measure` while they are all open, then
/// drops them. Returns how many were open at the measurement and what `measure` returned.
pub async fn open_streams<T>(
    target: &Target,
    n: usize,
    deadline: Duration,
    measure: impl FnOnce() -> T,
) -> (usize, T) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(n.max(1));
    let mut tasks = Vec::with_capacity(n);
    for _ in 0..n {
        let t = target.clone();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(t.addr).await?;
            conn.ready().await.ok()?;
            let resp = conn.send_request(t.request()).await.ok()?;
            let mut body = resp.into_body();
            // Wait for the first chunk, report, then keep the stream open until aborted.
            while let Some(Ok(f)) = body.frame().await {
                if f.data_ref().is_some_and(|d| !d.is_empty()) {
                    let _ = tx.send(()).await;
                    break;
                }
            }
            std::future::pending::<()>().await;
            Some(())
        }));
    }
    drop(tx);
    let until = Instant::now() + deadline;
    let mut open = 0;
    while open < n {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(())) => open += 1,
            _ => break,
        }
    }
    let m = measure();
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    (open, m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock::Mock;

    async fn mock_target(stream: bool) -> (Mock, Target) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mock = Mock::start(l).unwrap();
        let body = if stream {
            r#"{"model":"m","stream":true,"mock_hold_ms":60000}"#
        } else {
            r#"{"model":"m"}"#
        };
        let t = Target {
            addr: mock.addr(),
            path: "/v1/chat/completions".into(),
            body: Bytes::from_static(body.as_bytes()),
            headers: vec![],
        };
        (mock, t)
    }

    #[tokio::test]
    async fn open_loop_against_the_mock_sends_exactly_rate_times_duration() {
        let (_m, t) = mock_target(false).await;
        let r = open_loop(&t, 200.0, Duration::from_millis(250), 4).await;
        assert_eq!(r.ok, 50);
        assert_eq!((r.errors, r.non_2xx), (0, 0));
        assert_eq!(r.latency_us.len(), 50);
        assert!(r.latency_us.iter().all(|&l| l > 0.0));
    }

    #[tokio::test]
    async fn a_path_that_falls_behind_is_cut_at_the_deadline_and_counted_unsent() {
        // A listener that accepts and never answers: every request waits forever.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _hold = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                open.push(s);
            }
        });
        let t = Target {
            addr,
            path: "/".into(),
            body: Bytes::new(),
            headers: vec![],
        };
        // 10 scheduled over 100 ms; two get stuck, the deadline (200 ms) ends both.
        let r = open_loop(&t, 100.0, Duration::from_millis(100), 2).await;
        assert_eq!((r.ok, r.errors, r.unsent), (0, 2, 8));
    }

    #[tokio::test]
    async fn closed_loop_against_the_mock_counts_every_answer() {
        let (_m, t) = mock_target(false).await;
        let r = closed_loop(&t, 2, Duration::from_millis(100)).await;
        assert!(r.ok > 0);
        assert_eq!(r.ok as usize, r.latency_us.len());
        assert_eq!(r.errors, 0);
    }

    #[tokio::test]
    async fn open_streams_holds_them_all_open_at_the_measurement() {
        let (_m, t) = mock_target(true).await;
        let (open, v) = open_streams(&t, 20, Duration::from_secs(10), || 7).await;
        assert_eq!((open, v), (20, 7));
    }

    #[tokio::test]
    async fn a_refused_port_counts_errors_not_answers() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let t = Target {
            addr,
            path: "/".into(),
            body: Bytes::new(),
            headers: vec![],
        };
        let r = open_loop(&t, 100.0, Duration::from_millis(50), 1).await;
        assert_eq!(r.ok, 0);
        assert_eq!(r.errors, 5);
    }
}
