//! Attempts: sending one request to the backends of its decision, failing over until a
//! backend answers well or the request runs out of attempts, budget or time.
//!
//! For each model (the requested pool, then its configured `fallbacks` in order) the pool's
//! policy decides a primary and ordered fallbacks; each is tried in turn. An attempt fails
//! over on a connect error, on no first byte within `first_byte` (headers *and* the first
//! body frame: the time to first token), on a body that breaks before its first frame, and on
//! a 429, 500, 502, 503 or 504 answer. Nothing reaches the client until an attempt succeeds,
//! so a retry can never duplicate a token; the first body frame is read before the response
//! is committed to, and handed to the [`Relay`] to send first.
//!
//! Retries after the first attempt take a token from the pool's retry budget and wait a
//! jittered exponential backoff (bounded by `backoff_max`; raised to a `Retry-After`, within
//! that bound, when the retry goes back to the backend that sent it).
//! When no backend of a pool is usable but some will be back at a known time (429 cooldown,
//! ejection, open breaker), the request waits up to `retry.cooldown_wait` for the first one
//! instead of failing at once. Every outcome feeds the backend's breaker and outlier state
//! through its [`InFlightGuard`].

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::time::{Duration, Instant};
use switchyard_core::{backoff, RequestProfile};

use crate::body::{GatewayBody, Limits, Relay};
use crate::error::ApiError;
use crate::fleet::{Backend, InFlightGuard, Pool, ViewBuf, DEFAULT_COOLDOWN};
use crate::forward;
use crate::gateway::Snapshot;
use crate::{explain, signals};

/// The request being served, read once.
pub struct Request<'a> {
    /// Its profile.
    pub profile: &'a RequestProfile,
    /// The original body bytes.
    pub body: &'a Bytes,
    /// The client's headers.
    pub headers: &'a HeaderMap,
    /// `x-request-id`.
    pub request_id: &'a HeaderValue,
    /// When it arrived.
    pub started: Instant,
    /// When its body had been read (for the overhead metric).
    pub body_read: Instant,
    /// The client's address, appended to `X-Forwarded-For`.
    pub peer: std::net::IpAddr,
}

/// How one attempt ended when it did not produce the client's response.
enum Failed {
    /// The gateway itself is short of a resource: no attempt can succeed now; stop.
    Local(ApiError),
    /// No usable answer (connect error, timeout, broken before the first byte).
    Error(ApiError),
    /// A retryable answer, kept to pass through if every attempt fails.
    Answer(hyper::Response<Incoming>, InFlightGuard, Option<Duration>),
}

/// Where the attempts of one request stand.
struct Progress<'a> {
    attempts: u32,
    failure: Option<ApiError>,
    held: Option<(hyper::Response<Incoming>, &'a Backend, InFlightGuard)>,
    /// The last retryable answer's `Retry-After`, and which backend sent it.
    retry_after: Option<(&'a Backend, Duration)>,
    dispatched: Option<Instant>,
    /// The retry budget refused a retry: stop.
    out_of_budget: bool,
}

/// Serves `req` from `pool`, then its fallback models. On error, returns the model name (for
/// the metric label) with the error.
pub async fn run(
    gw: &Snapshot,
    pool: &Pool,
    req: &Request<'_>,
) -> Result<Response<GatewayBody>, (String, ApiError)> {
    pool.retry_budget.deposit(gw.now());
    let mut p = Progress {
        attempts: 0,
        failure: None,
        held: None,
        retry_after: None,
        dispatched: None,
        out_of_budget: false,
    };
    let chain = std::iter::once(pool).chain(pool.fallbacks.iter().filter_map(|m| gw.pools.get(m)));
    for (i, target) in chain.enumerate() {
        if i > 0 {
            tracing::info!(request_id = ?req.request_id, model = %pool.name, fallback = %target.name, "falling back to another model");
        }
        if let Some(resp) = serve_from(gw, pool, target, req, &mut p).await {
            return Ok(resp);
        }
        if p.out_of_budget {
            break;
        }
    }
    if let Some((resp, backend, guard)) = p.held {
        return Ok(relay(gw, resp, None, backend, guard, p.attempts, req));
    }
    Err((
        pool.name.clone(),
        p.failure.unwrap_or(ApiError::NoBackend {
            model: pool.name.clone(),
        }),
    ))
}

/// Tries the backends of `target` (the request's pool or one of its fallback models). Returns
/// the client's response once an attempt succeeds.
async fn serve_from<'a>(
    gw: &Snapshot,
    home: &Pool,
    target: &'a Pool,
    req: &Request<'_>,
    p: &mut Progress<'a>,
) -> Option<Response<GatewayBody>> {
    let max = gw.config.retry.max_attempts;
    // Waiting for a backend to come back never runs past the request's total timeout: an
    // attempt sent after it would have no time left.
    let mut wait_until = gw.now() + gw.config.retry.cooldown_wait;
    if let Some(left) = time_left(target, req) {
        wait_until = wait_until.min(gw.now() + left);
    }
    let mut tried_here = 0u32;
    let mut refused_rounds = 0u32;
    loop {
        let decision = {
            let mut buf = ViewBuf::new();
            let view = target
                .view(&mut buf, gw.now(), gw.config.scrape.max_age)
                .explaining(gw.config.debug_headers);
            target.policy.decide(req.profile, &view)
        };
        let decision = match decision {
            Ok(d) => d,
            Err(_) => {
                // Nothing usable now: wait for the first backend that will be back in time.
                let back = target.next_return(gw.now()).filter(|t| *t <= wait_until)?;
                tracing::debug!(request_id = ?req.request_id, model = %target.name, wait_s = (back.saturating_sub(gw.now())).as_secs_f64(), "every backend is cooling down; waiting for one");
                tokio::time::sleep(back.saturating_sub(gw.now()) + Duration::from_millis(1)).await;
                continue;
            }
        };
        let before = tried_here;
        let mut refused = false;
        for id in decision.attempts() {
            if tried_here == max {
                return None;
            }
            let backend = target.backend(id)?;
            if p.attempts > 0 && !backend.usable(gw.now()) {
                continue;
            }
            // An attempt needs some of the backend's own total timeout left: one sent without
            // would time out at once and count as the backend's failure.
            if backend_time_left(backend, req).is_some_and(|left| left < MIN_ATTEMPT_TIME) {
                continue;
            }
            let mut withdrew = false;
            if p.attempts > 0 {
                // A Retry-After speaks for the backend that sent it (now cooling down): it
                // lengthens the wait only before asking that same backend again.
                let retry_after = p
                    .retry_after
                    .filter(|(b, _)| std::ptr::eq(*b, backend))
                    .map(|(_, d)| d);
                let wait = backoff::delay(
                    p.attempts,
                    gw.config.retry.backoff_base,
                    gw.config.retry.backoff_max,
                    retry_after,
                    target.rng.next_u64(),
                );
                // Checked before anything is spent: a backoff that would leave this backend
                // no time is not slept (another candidate may have a longer total timeout).
                if backend_time_left(backend, req)
                    .is_some_and(|left| wait + MIN_ATTEMPT_TIME > left)
                {
                    continue;
                }
                let granted = home.retry_budget.try_withdraw(gw.now());
                gw.metrics.count_retry(&home.name, granted);
                if !granted {
                    tracing::warn!(request_id = ?req.request_id, model = %home.name, "retry budget exhausted; not failing over");
                    p.out_of_budget = true;
                    return None;
                }
                withdrew = true;
                if retry_after.is_some() {
                    p.retry_after = None;
                }
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            // The breaker admits and counts in one step: a half-open backend whose probe
            // slots filled since this request was routed is skipped, not sent to, and the
            // retry it would have been is given back.
            let Some(guard) = backend.try_begin(signals::expected_tokens(req.profile)) else {
                if withdrew {
                    home.retry_budget.refund(gw.now());
                }
                refused = true;
                continue;
            };
            p.attempts += 1;
            tried_here += 1;
            match attempt(gw, target, backend, req, p, guard).await {
                Ok((resp, first, guard)) => {
                    let headers_at = Instant::now();
                    let mut r = relay(gw, resp, first, backend, guard, p.attempts, req);
                    if gw.config.debug_headers {
                        r.headers_mut().insert(
                            "x-switchyard-route",
                            explain::route_header(target, &decision),
                        );
                    }
                    let before = p.dispatched.map_or(Duration::ZERO, |d| d - req.body_read);
                    gw.metrics
                        .overhead
                        .observe((before + headers_at.elapsed()).as_secs_f64());
                    tracing::debug!(request_id = ?req.request_id, model = %target.name, backend = %backend.name(), reason = %decision.reason, attempts = p.attempts, "routed");
                    return Some(r);
                }
                Err(Failed::Error(e)) => p.failure = Some(e),
                Err(Failed::Local(e)) => {
                    p.failure = Some(e);
                    p.out_of_budget = true;
                    return None;
                }
                Err(Failed::Answer(resp, guard, retry_after)) => {
                    p.retry_after = retry_after.map(|d| (backend, d));
                    p.held = Some((resp, backend, guard));
                }
            }
        }
        // A round whose every candidate was refused at dispatch decides again (the refused
        // ones now show as unusable, so it picks another or waits for one); a few times at
        // most.
        if tried_here == before && refused && refused_rounds < MAX_REFUSED_ROUNDS {
            refused_rounds += 1;
            continue;
        }
        // Another round only if this one tried something, every backend is now cooling down,
        // and one comes back in time (each round spends an attempt, so this ends).
        if tried_here == before || tried_here == max {
            return None;
        }
        let now = gw.now();
        if target.backends.iter().any(|b| b.usable(now))
            || target.next_return(now).is_none_or(|t| t > wait_until)
        {
            return None;
        }
    }
}

/// Least time an attempt is sent with: below it the backend's total timeout would cut it
/// before any answer.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(1);

/// Rounds of decisions a request makes again because every candidate was refused at
/// dispatch (a half-open breaker's probe slots filled in between).
const MAX_REFUSED_ROUNDS: u32 = 3;

/// What is left of `req`'s total timeout at `backend`; `None` when it has none.
fn backend_time_left(backend: &Backend, req: &Request<'_>) -> Option<Duration> {
    backend
        .config
        .timeouts
        .total
        .map(|t| t.saturating_sub(req.started.elapsed()))
}

/// What is left of `req`'s total timeout on `target`: the longest `total` among its
/// backends (each attempt is then cut at its own) less the time since arrival; `None` when
/// some backend has no total timeout.
fn time_left(target: &Pool, req: &Request<'_>) -> Option<Duration> {
    if target.backends.is_empty() {
        return None;
    }
    let mut longest = Duration::ZERO;
    for b in &target.backends {
        longest = longest.max(backend_time_left(b, req)?);
    }
    Some(longest)
}

/// One attempt at `backend`: the response head and its first body frame, or why not.
async fn attempt(
    gw: &Snapshot,
    pool: &Pool,
    backend: &Backend,
    req: &Request<'_>,
    p: &mut Progress<'_>,
    mut guard: InFlightGuard,
) -> Result<
    (
        hyper::Response<Incoming>,
        Option<Frame<Bytes>>,
        InFlightGuard,
    ),
    Failed,
> {
    let upstream = forward::upstream_request(
        backend,
        &pool.name,
        req.profile,
        req.body,
        req.headers,
        req.request_id,
        req.peer,
    )
    .map_err(|e| Failed::Error(unreachable(backend, e.to_string())))?;
    p.dispatched.get_or_insert_with(Instant::now);
    // The first byte must come within `first_byte`, and within what is left of `total`.
    let first_byte = backend.config.timeouts.first_byte;
    let budget = backend_time_left(backend, req).map_or(first_byte, |left| first_byte.min(left));
    let deadline = tokio::time::Instant::now() + budget;
    let log = |what: &str, detail: &dyn std::fmt::Display| {
        tracing::warn!(request_id = ?req.request_id, backend = %backend.name(), attempt = p.attempts, %detail, "{what}");
    };
    let timed_out = |guard: &mut InFlightGuard| {
        guard.outcome(false);
        Failed::Error(ApiError::UpstreamTimeout {
            backend: backend.name().to_owned(),
            after: budget,
        })
    };
    let client = backend.client(&gw.client);
    let resp = match tokio::time::timeout_at(deadline, client.request(upstream)).await {
        Err(_) => {
            log("no first byte within the first-byte timeout", &"headers");
            return Err(timed_out(&mut guard));
        }
        Ok(Err(e)) => {
            let detail = error_chain(&e);
            if let Some(what) = local_exhaustion(&e) {
                // The gateway's own shortage: the backend did nothing wrong, so its breaker
                // and outlier state hear nothing, and no other backend would fare better.
                tracing::error!(request_id = ?req.request_id, backend = %backend.name(), %detail, "cannot open an upstream connection: {what}");
                gw.metrics.local_errors.inc();
                guard.neutral();
                return Err(Failed::Local(ApiError::GatewayOverloaded {
                    detail: what.to_owned(),
                }));
            }
            log("upstream request failed", &detail);
            guard.outcome(false);
            return Err(Failed::Error(unreachable(backend, detail)));
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status();
    if retryable(status) {
        tracing::info!(request_id = ?req.request_id, backend = %backend.name(), attempt = p.attempts, %status, "upstream answered with a retryable status");
        let retry_after = retry_after(resp.headers());
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Rate limited is not broken: cool down, but leave breaker and ejection alone.
            backend
                .state
                .cool_down(gw.now(), retry_after.unwrap_or(DEFAULT_COOLDOWN));
            guard.outcome(true);
        } else {
            guard.outcome(false);
        }
        return Err(Failed::Answer(resp, guard, retry_after));
    }
    // Read the first frame before committing: until then a failure can still fail over.
    let (head, mut incoming) = resp.into_parts();
    if http_body::Body::is_end_stream(&incoming) {
        guard.outcome(status.as_u16() < 500);
        return Ok((hyper::Response::from_parts(head, incoming), None, guard));
    }
    match tokio::time::timeout_at(deadline, incoming.frame()).await {
        Err(_) => {
            log("no first byte within the first-byte timeout", &"body");
            Err(timed_out(&mut guard))
        }
        Ok(Some(Err(e))) => {
            let detail = error_chain(&e);
            log("upstream body failed before its first byte", &detail);
            guard.outcome(false);
            Err(Failed::Error(unreachable(backend, detail)))
        }
        Ok(first) => {
            if first
                .as_ref()
                .is_some_and(|f| f.as_ref().is_ok_and(Frame::is_data))
            {
                let ttfb = req.started.elapsed();
                guard.first_byte();
                let state = guard.state();
                state.metrics().ttfb.observe(ttfb.as_secs_f64());
                state.signals.observe_ttft(ttfb, crate::clock::now());
            }
            guard.outcome(status.as_u16() < 500);
            let first = first.and_then(Result::ok);
            Ok((hyper::Response::from_parts(head, incoming), first, guard))
        }
    }
}

fn limits(backend: &Backend, started: Instant) -> Limits {
    let t = &backend.config.timeouts;
    Limits {
        idle: t.idle,
        total: t
            .total
            .map(|d| (tokio::time::Instant::from_std(started) + d, d)),
    }
}

/// Statuses that mean "this backend cannot serve it now; another may": rate limited, an
/// engine error, overloaded, or a gateway in front of it failed.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503 | 504)
}

/// A `Retry-After` of delay-seconds. The HTTP-date form is rare from inference servers and
/// is treated as absent.
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

fn unreachable(backend: &Backend, detail: String) -> ApiError {
    ApiError::UpstreamUnreachable {
        backend: backend.name().to_owned(),
        detail,
    }
}

/// The client's response: upstream status and headers (hop-by-hop removed) plus ours, and the
/// upstream body relayed as it arrives, its first frame (already read) first, within the
/// backend's idle and total timeouts.
fn relay(
    gw: &Snapshot,
    resp: hyper::Response<Incoming>,
    first: Option<Frame<Bytes>>,
    backend: &Backend,
    guard: InFlightGuard,
    attempts: u32,
    req: &Request<'_>,
) -> Response<GatewayBody> {
    let (mut head, incoming) = resp.into_parts();
    forward::clean_response_headers(&mut head.headers);
    head.headers
        .insert(forward::X_SWITCHYARD_BACKEND, backend.name_header.clone());
    head.headers
        .insert(forward::X_SWITCHYARD_ATTEMPTS, HeaderValue::from(attempts));
    gw.metrics
        .count_answer(backend.state.metrics(), head.status);
    let sse = head
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let limits = limits(backend, req.started);
    let relay = Relay::new(incoming, first, req.started, sse, limits, guard);
    Response::from_parts(head, GatewayBody::Relay(relay))
}

/// What ran out, when `e` failed for want of a local resource (the process's file
/// descriptors, the system's, ephemeral ports, buffer memory) rather than anything the
/// backend did.
fn local_exhaustion(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut source = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // Linux errno values; other systems report these through the same numbers
            // rarely enough that the fallback (the backend's failure) is acceptable.
            return match io.raw_os_error() {
                Some(24) => Some("the process is out of file descriptors (EMFILE)"),
                Some(23) => Some("the system is out of file descriptors (ENFILE)"),
                Some(99) => Some("no local address or ephemeral port is free (EADDRNOTAVAIL)"),
                Some(105) => Some("no socket buffer space (ENOBUFS)"),
                Some(12) => Some("out of memory (ENOMEM)"),
                _ => None,
            };
        }
        source = err.source();
    }
    None
}

/// An error and its sources on one line ("client error (Connect): tcp connect error: ...").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
