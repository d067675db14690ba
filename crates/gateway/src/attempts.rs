//! Attempts: sending one request to the backends of its decision, failing over until a
//! backend answers well or the request runs out of attempts, budget or time.
//!
//! Which backend is tried next, after how long, and when to stop is decided by the pure
//! [`FailoverPlan`] in `core` (retry budget, backoff, `Retry-After`, cooldown wait, refused
//! rounds, deadline cuts, max attempts, fallback models). This module is its driver: it asks
//! the pool's policy when the plan wants a decision, sleeps when it says so, sends each
//! attempt and reports how it ended.
//!
//! An attempt fails over on a connect error, on no first byte within `first_byte` (headers
//! *and* the first body frame: the time to first token), on a body that breaks before its
//! first frame, and on a 429, 500, 502, 503 or 504 answer. Nothing reaches the client until
//! an attempt succeeds, so a retry can never duplicate a token; the first body frame is read
//! before the response is committed to, and handed to the [`Relay`] to send first. Every
//! outcome feeds the backend's breaker and outlier state through its [`InFlightGuard`].

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt;
use std::time::Duration;
use switchyard_core::failover::Target;
use switchyard_core::{
    BackendId, Decision, FailoverPlan, FailoverSettings, GiveUp, Outcome, Progress, RequestProfile,
    Step,
};
use tokio::time::Instant;

use crate::body::{GatewayBody, Limits, Relay};
use crate::error::ApiError;
use crate::fleet::{Backend, InFlightGuard, Pool, ViewBuf, DEFAULT_COOLDOWN};
use crate::forward;
use crate::gateway::Snapshot;
use crate::providers::{ClientApi, Direction, Translate};
use crate::upstream::{self, UpstreamBody};
use crate::{explain, otel, signals};
use opentelemetry::trace::SpanKind;

/// One request on the proxy path, read once: everything its attempts need.
pub struct Request<'a> {
    /// The config snapshot it is served under, start to end.
    pub gw: &'a Snapshot,
    /// The pool of the model it asked for: its budget pays for every retry, and its name
    /// labels the request's metrics.
    pub pool: &'a Pool,
    /// Its profile.
    pub profile: &'a RequestProfile,
    /// The chat-completions body to send (the client's, or its Messages request made chat).
    pub body: &'a Bytes,
    /// The API the client called: its answer and errors come back in that shape.
    pub client: ClientApi,
    /// The body as the client sent it (a Messages client's, passed to `anthropic` backends).
    pub original: &'a Bytes,
    /// The headers to forward: the client's as [`forward::prepare_headers`] made them.
    pub headers: &'a forward::Prepared,
    /// `x-request-id`.
    pub request_id: &'a HeaderValue,
    /// When it arrived: its backends' total timeouts count from here.
    pub started: Instant,
    /// When its body had been read (for the overhead metric).
    pub body_read: Instant,
    /// Have the policy explain its scores (the decision log will write this record).
    pub explain: bool,
    /// vLLM's `priority` (the request's level, 0 most urgent) for vLLM backends, when
    /// `admission.engine_priority` is on.
    pub engine_priority: Option<u8>,
    /// Its span, when tracing is on: routing and attempts are its children.
    pub trace: Option<&'a crate::otel::RequestSpan>,
}

/// How one attempt ended when it did not produce the client's response.
enum Failed {
    /// The gateway itself is short of a resource: no attempt can succeed now; stop.
    Local(ApiError),
    /// No usable answer (connect error, timeout, broken before the first byte).
    Error(ApiError),
    /// A retryable answer, kept to pass through if every attempt fails, with how it is
    /// translated back.
    Answer(
        hyper::Response<UpstreamBody>,
        InFlightGuard,
        Option<Duration>,
        Option<Direction>,
    ),
}

/// What a successful attempt hands to the relay: the response head (and body, which gives
/// its direct connection back once it has passed whole), its first body frame, the
/// backend's slot, and how the answer is translated back.
type Answered = (
    hyper::Response<UpstreamBody>,
    Option<Frame<Bytes>>,
    InFlightGuard,
    Option<Direction>,
);

/// What the plan sees of a pool.
impl Target for Pool {
    fn len(&self) -> usize {
        self.backends.len()
    }
    fn usable(&self, id: BackendId, now: Duration) -> bool {
        self.backend(id).is_some_and(|b| b.usable(now))
    }
    fn total_timeout(&self, id: BackendId) -> Option<Duration> {
        self.backend(id)?.config.timeouts.total
    }
    fn next_return(&self, now: Duration) -> Option<Duration> {
        Pool::next_return(self, now)
    }
    fn random(&self) -> u64 {
        self.rng.next_u64()
    }
}

/// A retryable answer kept to pass through if every attempt fails.
struct Held<'a> {
    resp: hyper::Response<UpstreamBody>,
    backend: &'a Backend,
    guard: InFlightGuard,
    /// How it is translated back.
    direction: Option<Direction>,
    /// Its attempt's place in [`Driver::tried`].
    attempt: usize,
}

/// The driver's state for one request.
struct Driver<'a> {
    req: &'a Request<'a>,
    plan: FailoverPlan<'a>,
    progress: Progress,
    /// The last attempt's error, answered if nothing better comes.
    failure: Option<ApiError>,
    /// The last retryable answer, passed through if every attempt fails.
    held: Option<Held<'a>>,
    /// When the first attempt went out (for the overhead metric).
    dispatched: Option<Instant>,
    /// The attempts that did not answer, in order, for the decision record.
    tried: crate::decisions::Attempts,
}

/// A request a backend answered: the response, and how it got there (for its decision
/// record).
#[derive(Debug)]
pub struct Served {
    /// The response to relay.
    pub resp: Response<GatewayBody>,
    /// Where it was routed, and the attempts before the answering one.
    pub routed: crate::decisions::Routed,
}

/// Serves `req` from its pool, then its fallback models.
pub async fn run(req: &Request<'_>) -> Result<Served, ApiError> {
    let (gw, home) = (req.gw, req.pool);
    let retry = &gw.config.retry;
    let plan = FailoverPlan {
        settings: FailoverSettings {
            max_attempts: retry.max_attempts,
            cooldown_wait: retry.cooldown_wait,
            backoff_base: retry.backoff_base,
            backoff_max: retry.backoff_max,
        },
        budget: &home.retry_budget,
        arrived: crate::clock::at(req.started),
    };
    // One clock read per step: the step and the decision it asks for share it.
    let mut now = gw.now();
    let mut d = Driver {
        req,
        progress: plan.begin(now),
        plan,
        failure: None,
        held: None,
        dispatched: None,
        tried: crate::decisions::Attempts::new(),
    };
    let mut chain = home.fallbacks.iter().filter_map(|m| gw.pools.get(m));
    let mut target = home;
    let mut decision: Option<Decision> = None;
    loop {
        match d.plan.next(&mut d.progress, target, decision.as_ref(), now) {
            Step::Decide => {
                let span = req.trace.map(|t| t.child("route", SpanKind::Internal));
                decision = decide(gw, target, req.profile, now, req.explain);
                otel::decided(span, target, decision.as_ref());
            }
            Step::Wait { until } => {
                let wait = until.saturating_sub(gw.now());
                tracing::debug!(request_id = ?req.request_id, model = %target.name, wait_s = wait.as_secs_f64(), "every backend is cooling down; waiting for one");
                tokio::time::sleep(wait).await;
            }
            Step::Send {
                backend,
                after,
                retry,
            } => {
                if retry {
                    gw.metrics.count_retry(&home.name, true);
                }
                if !after.is_zero() {
                    tokio::time::sleep(after).await;
                }
                let Some(backend) = target.backend(backend) else {
                    // Gone in a reload since the decision.
                    d.tried(None, "gone", None);
                    d.plan.report(&mut d.progress, Outcome::Failed, gw.now());
                    now = gw.now();
                    continue;
                };
                // The llama.cpp slot holding the prompt, when the policy named one.
                let slot = decision
                    .as_ref()
                    .filter(|d| d.primary == backend.id)
                    .and_then(|d| d.slot);
                if let Some(resp) = d.send(target, backend, slot).await {
                    let mut resp = resp;
                    if gw.config.debug_headers {
                        if let Some(decision) = &decision {
                            resp.headers_mut().insert(
                                "x-switchyard-route",
                                explain::route_header(target, decision),
                            );
                        }
                    }
                    let routed = crate::decisions::Routed::new(
                        target,
                        backend,
                        decision.as_ref(),
                        std::mem::take(&mut d.tried),
                    );
                    if let Some(decision) = &decision {
                        tracing::debug!(request_id = ?req.request_id, model = %target.name, backend = %backend.name(), reason = %decision.reason, attempts = d.progress.attempts(), "routed");
                    }
                    return Ok(Served { resp, routed });
                }
            }
            Step::NextModel => match chain.next() {
                Some(next) => {
                    tracing::info!(request_id = ?req.request_id, model = %home.name, fallback = %next.name, "falling back to another model");
                    target = next;
                }
                None => break,
            },
            Step::GiveUp(GiveUp::Budget) => {
                gw.metrics.count_retry(&home.name, false);
                tracing::warn!(request_id = ?req.request_id, model = %home.name, "retry budget exhausted; not failing over");
                break;
            }
            Step::GiveUp(GiveUp::Local) => break,
        }
        now = gw.now();
    }
    if let Some(held) = d.held {
        let attempts = d.progress.attempts();
        let (backend, direction) = (held.backend, held.direction);
        let resp = relay(
            req, held.resp, None, backend, held.guard, attempts, direction,
        );
        // The record lists the answer relayed last.
        let mut tried = d.tried;
        tried.remove(held.attempt);
        let routed = crate::decisions::Routed::new(home, backend, None, tried);
        return Ok(Served { resp, routed });
    }
    Err(d.failure.unwrap_or_else(|| ApiError::NoBackend {
        model: home.name.clone(),
    }))
}

/// `target`'s policy's decision for `profile` at `now`; `None` when no backend is usable.
fn decide(
    gw: &Snapshot,
    target: &Pool,
    profile: &RequestProfile,
    now: Duration,
    explain: bool,
) -> Option<Decision> {
    let mut buf = ViewBuf::new();
    let view = target
        .view(&mut buf, now, gw.config.scrape.max_age)
        .explaining(gw.config.debug_headers || explain);
    target.policy.decide(profile, &view).ok()
}

impl<'a> Driver<'a> {
    /// Notes an attempt that did not answer: which backend, how it ended, its status.
    fn tried(&mut self, backend: Option<&Backend>, outcome: &'static str, status: Option<u16>) {
        self.tried.push(crate::decisions::Attempt {
            backend: backend.map_or_else(|| std::sync::Arc::from("?"), |b| b.shared_name.clone()),
            outcome,
            status,
        });
    }

    /// Sends the plan's attempt to `backend` of `target` and reports how it ended; returns
    /// the client's response when it is the one.
    async fn send(
        &mut self,
        target: &Pool,
        backend: &'a Backend,
        slot: Option<u32>,
    ) -> Option<Response<GatewayBody>> {
        let (req, gw) = (self.req, self.req.gw);
        // The breaker admits and counts in one step: a half-open backend whose probe slots
        // filled since this request was routed is refused here, not sent to.
        let guard = match backend.try_begin(signals::expected_tokens(req.profile)) {
            Ok(guard) => guard,
            Err(busy) => {
                // Over its own rpm/tpm, it now cools down: the plan routes around it or waits,
                // and if nothing else answers, the client hears why.
                self.tried(Some(backend), "refused", None);
                if let (crate::fleet::Busy::Limited(t), None) = (busy, &self.failure) {
                    self.failure = Some(ApiError::RateLimited {
                        scope: "backend",
                        limit: t.limit,
                        retry_after: t.retry_after,
                    });
                }
                self.plan
                    .report(&mut self.progress, Outcome::Refused, gw.now());
                return None;
            }
        };
        let span = req
            .trace
            .map(|t| t.attempt(backend, self.progress.attempts()));
        let outcome = match self
            .attempt(target, backend, guard, slot, span.as_ref())
            .await
        {
            Ok((resp, first, guard, direction)) => {
                otel::attempted(span, "ok", Some(resp.status().as_u16()), None);
                let headers_at = Instant::now();
                let r = relay(
                    req,
                    resp,
                    first,
                    backend,
                    guard,
                    self.progress.attempts(),
                    direction,
                );
                let before = self
                    .dispatched
                    .map_or(Duration::ZERO, |d| d - req.body_read);
                gw.metrics
                    .overhead
                    .observe((before + headers_at.elapsed()).as_secs_f64());
                return Some(r);
            }
            Err(Failed::Error(e)) => {
                otel::attempted(span, "error", None, Some(&e));
                self.tried(Some(backend), e.code(), None);
                self.failure = Some(e);
                Outcome::Failed
            }
            Err(Failed::Local(e)) => {
                otel::attempted(span, "local", None, Some(&e));
                self.tried(Some(backend), e.code(), None);
                self.failure = Some(e);
                Outcome::Local
            }
            Err(Failed::Answer(resp, guard, retry_after, direction)) => {
                otel::attempted(span, "retryable", Some(resp.status().as_u16()), None);
                let attempt = self.tried.len();
                self.tried(Some(backend), "status", Some(resp.status().as_u16()));
                self.held = Some(Held {
                    resp,
                    backend,
                    guard,
                    direction,
                    attempt,
                });
                Outcome::Answered { retry_after }
            }
        };
        self.plan.report(&mut self.progress, outcome, gw.now());
        None
    }

    /// One attempt at `backend`: the response head and its first body frame, or why not.
    async fn attempt(
        &mut self,
        pool: &Pool,
        backend: &Backend,
        mut guard: InFlightGuard,
        slot: Option<u32>,
        span: Option<&otel::Child>,
    ) -> Result<Answered, Failed> {
        let (req, gw) = (self.req, self.req.gw);
        let n = self.progress.attempts();
        let direct = upstream::direct(backend);
        // llama.cpp's `id_slot`: the server holds the request for that slot (a client's own
        // `id_slot` stands).
        let slotted = slot.and_then(|s| forward::with_field(req.body, "id_slot", &s.to_string()));
        // vLLM's `priority`, only to engines known to be vLLM (others may refuse the field).
        let vllm = || {
            backend
                .state
                .engine
                .get()
                .is_some_and(|e| e.kind == crate::engine_kind::EngineKind::Vllm)
        };
        let prioritized = req
            .engine_priority
            .filter(|_| vllm())
            .and_then(|p| forward::with_priority(slotted.as_ref().unwrap_or(req.body), p));
        let outbound = forward::Outbound {
            client: req.client,
            profile: req.profile,
            body: prioritized
                .as_ref()
                .or(slotted.as_ref())
                .unwrap_or(req.body),
            original: req.original,
        };
        let (mut upstream, direction) =
            forward::upstream_request(backend, &pool.name, &outbound, req.headers, direct)
                .map_err(|e| match e {
                    forward::OutboundError::Http(e) => {
                        Failed::Error(unreachable(backend, e.to_string()))
                    }
                    // The request itself cannot go to this kind of backend: no other attempt
                    // would fare better.
                    forward::OutboundError::Untranslatable(why) => {
                        Failed::Local(ApiError::Untranslatable(why))
                    }
                })?;
        if let Some(span) = span {
            span.inject(&mut upstream.headers);
        }
        // One clock read for when the request went out and when its first byte is due.
        let sent = Instant::now();
        self.dispatched.get_or_insert(sent);
        // The first byte must come within `first_byte`, and within what is left of `total`.
        let first_byte = backend.config.timeouts.first_byte;
        // (The clock is read only when there is a total timeout to count down.)
        let left = backend
            .config
            .timeouts
            .total
            .and_then(|total| self.plan.time_left(Some(total), gw.now()));
        let budget = left.map_or(first_byte, |left| first_byte.min(left));
        let deadline = sent + budget;
        let log = |what: &str, detail: &dyn std::fmt::Display| {
            tracing::warn!(request_id = ?req.request_id, backend = %backend.name(), attempt = n, %detail, "{what}");
        };
        let timed_out = |guard: &mut InFlightGuard| {
            guard.outcome(false);
            Failed::Error(ApiError::UpstreamTimeout {
                backend: backend.name().to_owned(),
                after: budget,
            })
        };
        let sent = if direct {
            tokio::time::timeout_at(deadline, upstream::send(backend, &upstream)).await
        } else {
            let client = backend.client(&gw.client);
            tokio::time::timeout_at(deadline, client.request(upstream.to_request()))
                .await
                .map(|r| {
                    r.map(|resp| resp.map(UpstreamBody::Pooled))
                        .map_err(upstream::Error::from)
                })
        };
        let resp = match sent {
            Err(_) => {
                log("no first byte within the first-byte timeout", &"headers");
                return Err(timed_out(&mut guard));
            }
            Ok(Err(e)) => {
                let e: &(dyn std::error::Error + 'static) = &*e;
                let detail = error_chain(e);
                if let Some(what) = local_exhaustion(e) {
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
            Ok(Ok(sent)) => sent,
        };
        let status = resp.status();
        if retryable(status) {
            tracing::info!(request_id = ?req.request_id, backend = %backend.name(), attempt = n, %status, "upstream answered with a retryable status");
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
            return Err(Failed::Answer(resp, guard, retry_after, direction));
        }
        // Read the first frame before committing: until then a failure can still fail over.
        // Its time to first byte is recorded by the relay it is handed to.
        let (head, mut incoming) = resp.into_parts();
        if http_body::Body::is_end_stream(&incoming) {
            guard.outcome(status.as_u16() < 500);
            return Ok((
                hyper::Response::from_parts(head, incoming),
                None,
                guard,
                direction,
            ));
        }
        match tokio::time::timeout_at(deadline, incoming.frame()).await {
            Err(_) => {
                log("no first byte within the first-byte timeout", &"body");
                Err(timed_out(&mut guard))
            }
            Ok(Some(Err(e))) => {
                let detail = error_chain(&*e);
                log("upstream body failed before its first byte", &detail);
                guard.outcome(false);
                Err(Failed::Error(unreachable(backend, detail)))
            }
            Ok(first) => {
                guard.outcome(status.as_u16() < 500);
                let first = first.and_then(Result::ok);
                Ok((
                    hyper::Response::from_parts(head, incoming),
                    first,
                    guard,
                    direction,
                ))
            }
        }
    }
}

fn limits(backend: &Backend, started: Instant) -> Limits {
    let t = &backend.config.timeouts;
    Limits {
        idle: t.idle,
        total: t.total.map(|d| (started + d, d)),
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
/// backend's idle and total timeouts, translated back to the client's API when `direction`
/// says so. The direct connection it came on goes back to the backend's idle list once the
/// body has passed whole.
fn relay(
    req: &Request<'_>,
    resp: hyper::Response<UpstreamBody>,
    first: Option<Frame<Bytes>>,
    backend: &Backend,
    guard: InFlightGuard,
    attempts: u32,
    direction: Option<Direction>,
) -> Response<GatewayBody> {
    let (mut head, incoming) = resp.into_parts();
    forward::clean_response_headers(&mut head.headers);
    // Room for what the gateway adds (backend, attempts, request id, and with admission the
    // four `x-ratelimit-*`), so the map grows once rather than once per batch.
    let adding = if req.gw.admission.is_some() { 7 } else { 3 };
    head.headers.reserve(adding);
    head.headers
        .insert(forward::X_SWITCHYARD_BACKEND, backend.name_header.clone());
    head.headers
        .insert(forward::X_SWITCHYARD_ATTEMPTS, attempts_value(attempts));
    req.gw
        .metrics
        .count_answer(backend.state.metrics(), head.status);
    let sse = head
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let limits = limits(backend, req.started);
    let profile = req.profile;
    let non_gap = 2
        + u32::from(profile.kind == switchyard_core::EndpointKind::ChatCompletions)
        + u32::from(profile.include_usage);
    let mut relay = Relay::new(incoming, first, req.started, (sse, non_gap), limits, guard)
        .for_client(req.client);
    if let Some(direction) = direction {
        // The translated body has another length than the upstream's.
        head.headers.remove(header::CONTENT_LENGTH);
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        relay = relay.translating(Translate::new(direction, sse, head.status, created));
    }
    Response::from_parts(head, GatewayBody::relay(relay))
}

/// `x-switchyard-attempts`: the common small counts as static values (no formatting).
fn attempts_value(n: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(n),
    }
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
