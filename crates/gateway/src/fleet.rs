//! Live fleet state: each backend's configuration joined with its live counters, and the pools
//! that group backends by model name.
//!
//! Counters are atomics inside an `Arc<BackendState>`; a request holds an [`InFlightGuard`]
//! from dispatch until its response body ends or is dropped, so a client that disconnects frees
//! the slot at once. A decision reads a fresh [`FleetView`] built from these counters.
//! Health, breaker, ejection and slow start live in each state's [`BackendHealth`]; the guard
//! carries an attempt's outcome back to it. Tokens in flight, latency averages and scraped
//! engine reports live in its [`LiveSignals`]. A reload reuses the whole state of a backend
//! that survives it (same pool, name and url).

use http::HeaderValue;
use smallvec::SmallVec;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::admission::{RateLimit, RateLimitSpec, Throttle};
use switchyard_core::rng::SplitMix;
use switchyard_core::routing::{Moved, PoolState, SlowStart};
use switchyard_core::{
    BackendId, BackendView, EndpointKind, FleetView, OutlierDetector, Policy, PoolMember,
    RetryBudget,
};

use crate::backend_health::{BackendHealth, SharedOutlier};
use crate::config::{BackendConfig, PoolConfig, Retry};
use crate::engine_kind::EngineCell;
use crate::forward::{self, UpstreamClient};
use crate::signals::{LiveSignals, TokenLoad};
use crate::telemetry::{BackendMetrics, Metrics};
use crate::upstream::IdleConns;

/// Live numbers of one backend.
#[derive(Debug)]
pub struct BackendState {
    /// Its metric handles. The in-flight gauge is also the in-flight count policies read: one
    /// number, so `/metrics` and routing can never disagree.
    metrics: BackendMetrics,
    /// Gateway time (milliseconds since start) before which the backend takes no new request,
    /// set when it answers 429: it said it is over its limit, so asking again sooner only
    /// adds load and latency.
    cool_until_ms: AtomicU64,
    /// Health checks, breaker, ejection and slow start.
    pub health: BackendHealth,
    /// Tokens in flight, latency averages, and the engine's and GPUs' scraped reports.
    pub signals: LiveSignals,
    /// Which engine serves it (configured or detected), for its cache model.
    pub engine: EngineCell,
    /// Set by the admin API's drain: the backend takes no new request while its in-flight
    /// ones finish. Kept across reloads, since the state itself is.
    draining: AtomicBool,
    /// Woken when a request of a draining backend ends, so a drain call that waits for the
    /// last one wakes on the event instead of polling the count.
    released: tokio::sync::Notify,
    /// Held by [`Backend::try_begin`] of a backend with a `max_concurrency`, so that checking
    /// the in-flight count against the cap and counting the new request are one step: two
    /// requests routed at once cannot both take the last slot. Releases do not take it (they
    /// only make room), nor do backends without a cap.
    admission: Mutex<()>,
    /// Idle keep-alive connections to it, when it is reached directly (plain `http`; see
    /// [`crate::upstream`]). Kept with the state, so a reload does not close them.
    pub conns: IdleConns,
    /// Its own `rpm`/`tpm` (a hosted provider's limits) and their buckets; kept across a
    /// reload that leaves them alone.
    limit: Mutex<Option<(RateLimitSpec, RateLimit)>>,
}

/// Why [`Backend::try_begin`] did not count a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// At its `max_concurrency`, or its breaker refuses it.
    Full,
    /// Over its own `rpm` or `tpm`: it cools down until the bucket has room.
    Limited(Throttle),
}

/// Cooldown after a 429 that carries no usable Retry-After.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(1);
/// Longest cooldown honoured, whatever Retry-After says.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(300);

impl BackendState {
    /// Fresh state reporting through `metrics`.
    pub fn new(metrics: BackendMetrics, health: BackendHealth) -> Self {
        Self {
            metrics,
            cool_until_ms: AtomicU64::new(0),
            health,
            signals: LiveSignals::default(),
            engine: EngineCell::default(),
            draining: AtomicBool::new(false),
            released: tokio::sync::Notify::new(),
            admission: Mutex::new(()),
            conns: IdleConns::default(),
            limit: Mutex::new(None),
        }
    }

    /// Sets its own limits at gateway time `now`: buckets start full, unless the same limits
    /// were already counting (a reload that kept them).
    pub fn set_limits(&self, spec: RateLimitSpec, now: Duration) {
        let mut l = self
            .limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !spec.is_set() {
            *l = None;
        } else if l.as_ref().is_none_or(|(old, _)| *old != spec) {
            *l = Some((spec, RateLimit::new(spec, now)));
        }
    }

    /// Counts a request of `tokens` against its own limits; `Ok(false)` when it has none.
    fn take_limit(&self, tokens: u64, now: Duration) -> Result<bool, Throttle> {
        let mut l = self
            .limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((_, limit)) = l.as_mut() else {
            return Ok(false);
        };
        let tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
        limit.try_acquire(tokens, now).map(|()| true)
    }

    /// Gives back what [`take_limit`](Self::take_limit) counted (`undo`) or ends its turn.
    fn return_limit(&self, tokens: u64, undo: bool) {
        let mut l = self
            .limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, limit)) = l.as_mut() {
            if undo {
                limit.undo(u32::try_from(tokens).unwrap_or(u32::MAX));
            } else {
                limit.release();
            }
        }
    }

    /// Starts (`true`) or ends (`false`) a drain: no new requests while it lasts.
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
        if !on {
            self.released.notify_waiters();
        }
    }

    /// Whether the backend is being drained.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Cooldown left at `now` (zero when not cooling).
    pub fn cooling_left(&self, now: Duration) -> Duration {
        let until = self.cool_until_ms.load(Ordering::Relaxed);
        Duration::from_millis(until.saturating_sub(now.as_millis() as u64))
    }

    /// Gateway time at which a 429 cooldown ends (zero when none ran).
    pub fn cool_until(&self) -> Duration {
        Duration::from_millis(self.cool_until_ms.load(Ordering::Relaxed))
    }

    /// Waits until no request is in flight, the drain is called off, or `deadline` passes;
    /// true when none is left in flight.
    pub async fn drained(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            // Registered before the check, so a release between the two is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.in_flight() == 0 || !self.draining() {
                break;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                break;
            }
        }
        self.in_flight() == 0
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        u32::try_from(self.metrics.in_flight.get()).unwrap_or(0)
    }

    /// The backend's metric handles.
    pub fn metrics(&self) -> &BackendMetrics {
        &self.metrics
    }

    /// Keeps the backend out of rotation until `now + wait` (capped at [`MAX_COOLDOWN`]).
    pub fn cool_down(&self, now: Duration, wait: Duration) {
        let until = (now + wait.min(MAX_COOLDOWN)).as_millis() as u64;
        self.cool_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Whether a cooldown is running at `now`.
    pub fn cooling(&self, now: Duration) -> bool {
        (now.as_millis() as u64) < self.cool_until_ms.load(Ordering::Relaxed)
    }
}

/// The inference endpoints whose upstream URIs each backend builds once.
const ENDPOINTS: [EndpointKind; 3] = [
    EndpointKind::ChatCompletions,
    EndpointKind::Completions,
    EndpointKind::Embeddings,
];

/// One upstream endpoint, ready to receive requests.
#[derive(Debug)]
pub struct Backend {
    /// Position in its pool.
    pub id: BackendId,
    /// What the config says of it (name, address, weight, cap, upstream model).
    pub config: BackendConfig,
    /// `x-switchyard-backend` header value, built once.
    pub name_header: HeaderValue,
    /// Its name, shared: a request's decision record keeps it without a copy.
    pub shared_name: Arc<str>,
    /// `Authorization` header for the gateway's own calls to it (health checks, engine
    /// probes) of an `openai` backend, built once and marked sensitive so it is never printed.
    pub authorization: Option<HeaderValue>,
    /// Its key in the header its provider takes, sent instead of the client's, built once
    /// and marked sensitive.
    pub credential: Option<(http::header::HeaderName, HeaderValue)>,
    /// Live counters and metric handles.
    pub state: Arc<BackendState>,
    /// Its own upstream client when its connect timeout differs from the gateway's (the
    /// connect timeout belongs to a client's connector); `None` uses the shared one.
    pub client: Option<UpstreamClient>,
    /// Upstream URIs of the three inference endpoints, built once (cloning one is a few
    /// reference counts; building one per request parsed and copied it).
    endpoint_uris: [Option<http::Uri>; 3],
    /// `Host` header for its requests (host, and port unless the scheme's default), built
    /// once: left to the HTTP client it is formatted per request.
    pub host: Option<HeaderValue>,
}

/// The `Host` header for requests to `uri`: its host, with the port when it is not the
/// scheme's default (what HTTP clients send when left to set it themselves).
fn host_header(uri: &http::Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        443
    } else {
        80
    };
    match uri.port_u16() {
        Some(port) if port != default_port => HeaderValue::try_from(format!("{host}:{port}")).ok(),
        _ => HeaderValue::try_from(host).ok(),
    }
}

impl Backend {
    /// A backend with `state` carried over from a previous config, or fresh state.
    fn new(
        id: BackendId,
        pool: &PoolConfig,
        cfg: &BackendConfig,
        ctx: &PoolContext<'_>,
        outlier: Option<SharedOutlier>,
        state: Option<Arc<BackendState>>,
    ) -> Self {
        if let Some(kept) = &state {
            kept.health
                .reconfigure(id, pool.breaker, outlier.clone(), pool.slow_start);
        }
        let state = state.unwrap_or_else(|| {
            let metrics = ctx.metrics.backend(&pool.name, &cfg.name);
            let health =
                BackendHealth::new(id, pool.breaker, outlier, pool.slow_start, metrics.clone());
            Arc::new(BackendState::new(metrics, health))
        });
        state.set_limits(cfg.limits, state.health.now());
        let credential = cfg
            .api_key
            .as_ref()
            .and_then(|k| cfg.provider.credential(k));
        let authorization = match cfg.provider {
            crate::providers::Provider::OpenAi => credential.as_ref().map(|(_, v)| v.clone()),
            _ => None,
        };
        let mut backend = Self {
            id,
            name_header: HeaderValue::try_from(cfg.name.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("invalid-name")),
            shared_name: Arc::from(cfg.name.as_str()),
            config: cfg.clone(),
            authorization,
            credential,
            state,
            client: (cfg.timeouts.connect != ctx.default_connect)
                .then(|| forward::client(&cfg.timeouts)),
            endpoint_uris: [None, None, None],
            host: None,
        };
        backend.endpoint_uris =
            ENDPOINTS.map(|kind| backend.uri(&cfg.provider.path(kind, &cfg.base_path)).ok());
        backend.host = backend.endpoint_uris[0].as_ref().and_then(host_header);
        backend
    }

    /// The upstream URI of an inference endpoint: the one built with the backend, or (if that
    /// failed) built again so the caller sees the same error as before.
    pub fn endpoint_uri(&self, kind: EndpointKind) -> Result<http::Uri, http::Error> {
        let built = ENDPOINTS.iter().position(|k| *k == kind);
        match built.and_then(|i| self.endpoint_uris[i].as_ref()) {
            Some(uri) => Ok(uri.clone()),
            None => self.uri(&self.config.provider.path(kind, &self.config.base_path)),
        }
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        &self.config.name
    }
    /// Whether `cfg` names the same endpoint (name and url), so it may keep this state.
    pub fn same_endpoint(&self, cfg: &BackendConfig) -> bool {
        let a = &self.config;
        a.name == cfg.name
            && a.scheme == cfg.scheme
            && a.authority == cfg.authority
            && a.base_path == cfg.base_path
    }

    /// The url as configured (scheme, authority, path prefix), for display.
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            self.config.scheme, self.config.authority, self.config.base_path
        )
    }

    /// Whether a new request may go here at gateway time `now`: not cooling down after a 429,
    /// not being drained, passing health checks, not ejected, its breaker letting requests
    /// through, and under its concurrency cap.
    pub fn usable(&self, now: Duration) -> bool {
        !self.state.cooling(now)
            && !self.state.draining()
            && self.state.health.admits(now)
            && self.usable_by_capacity()
    }

    /// When this backend, unusable now for timed reasons (429 cooldown, ejection, open
    /// breaker), will be back; `None` when it is out for an open-ended reason (health checks
    /// down, drained) or full.
    pub fn returns_at(&self, now: Duration) -> Option<Duration> {
        if !self.usable_by_capacity() || self.state.draining() {
            return None;
        }
        let back = self.state.health.returns_at(now)?;
        Some(back.max(self.state.cool_until()))
    }

    /// The upstream client for this backend.
    pub fn client<'a>(&'a self, shared: &'a UpstreamClient) -> &'a UpstreamClient {
        self.client.as_ref().unwrap_or(shared)
    }

    fn usable_by_capacity(&self) -> bool {
        self.config
            .max_concurrency
            .is_none_or(|cap| self.state.in_flight() < cap)
    }

    /// Counts a request, and the `tokens` it will occupy (see
    /// [`crate::signals::expected_tokens`]), as in flight until the guard is released or
    /// dropped; the guard also carries the attempt's outcome to the backend's breaker and
    /// outlier detector. [`Busy::Full`] when the backend is at its `max_concurrency` now
    /// (routing saw a free slot, but a concurrent request took it) or its breaker refuses it
    /// (see [`crate::backend_health::BackendHealth::try_dispatch`]); [`Busy::Limited`] when its
    /// own `rpm` or `tpm` has no room, and then it cools down until it has: nothing is
    /// counted.
    pub fn try_begin(&self, tokens: TokenLoad) -> Result<InFlightGuard, Busy> {
        let admission = self.config.max_concurrency.map(|cap| {
            let held = self
                .state
                .admission
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (cap, held)
        });
        if admission
            .as_ref()
            .is_some_and(|(cap, _)| self.state.in_flight() >= *cap)
        {
            return Err(Busy::Full);
        }
        let now = self.state.health.now();
        let limited = self.state.take_limit(tokens.total, now).map_err(|t| {
            self.state.cool_down(now, t.retry_after);
            Busy::Limited(t)
        })?;
        let Some(probe) = self.state.health.try_dispatch() else {
            if limited {
                self.state.return_limit(tokens.total, true);
            }
            return Err(Busy::Full);
        };
        self.state.metrics.in_flight.inc();
        drop(admission);
        self.state.signals.add_tokens(tokens.total);
        self.state.signals.add_prefill(tokens.prompt);
        Ok(InFlightGuard {
            state: self.state.clone(),
            held: true,
            tokens,
            prefilling: true,
            probe,
            settled: false,
            limited,
        })
    }

    /// The upstream URI for an API path such as `/v1/chat/completions`.
    pub fn uri(&self, path: &str) -> Result<http::Uri, http::Error> {
        let base = &self.config.base_path;
        let mut full = String::with_capacity(base.len() + path.len());
        full.push_str(base);
        full.push_str(path);
        http::Uri::builder()
            .scheme(self.config.scheme.clone())
            .authority(self.config.authority.clone())
            .path_and_query(full)
            .build()
    }
}

/// Holds one in-flight slot of a backend until released or dropped.
#[derive(Debug)]
pub struct InFlightGuard {
    state: Arc<BackendState>,
    held: bool,
    tokens: TokenLoad,
    /// Its prompt still counts as prefill waiting at the backend.
    prefilling: bool,
    /// The request is a half-open breaker's probe.
    probe: bool,
    /// Its outcome was reported.
    settled: bool,
    /// It counts against the backend's own limits.
    limited: bool,
}

impl InFlightGuard {
    /// The backend this slot belongs to.
    pub fn state(&self) -> &BackendState {
        &self.state
    }

    /// Reports the attempt's outcome (the first report of a probe decides it; later ones,
    /// such as a stream that breaks after a good start, count as ordinary outcomes).
    pub fn outcome(&mut self, success: bool) {
        let probe = self.probe && !self.settled;
        self.settled = true;
        self.state.health.record_now(success, probe);
    }

    /// Settles the attempt without an outcome: it failed for a reason that says nothing of
    /// the backend (the gateway's own shortage). A probe's slot is given back.
    pub fn neutral(&mut self) {
        if self.probe && !self.settled {
            let h = &self.state.health;
            h.on_cancel(h.now(), true);
        }
        self.settled = true;
    }

    /// The response's first byte arrived: the prompt is past prefill.
    pub fn first_byte(&mut self) {
        if std::mem::replace(&mut self.prefilling, false) {
            self.state.signals.remove_prefill(self.tokens.prompt);
        }
    }

    /// Gives the slot back; true the first time only.
    pub fn release(&mut self) -> bool {
        let was = std::mem::replace(&mut self.held, false);
        if was {
            self.state.metrics.in_flight.dec();
            self.state.signals.remove_tokens(self.tokens.total);
            if self.limited {
                self.state.return_limit(self.tokens.total, false);
            }
            self.first_byte();
            if self.state.draining() {
                self.state.released.notify_waiters();
            }
        }
        was
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.release();
        if self.probe && !self.settled {
            let h = &self.state.health;
            h.on_cancel(h.now(), true);
        }
    }
}

/// The backends that serve one model name, and the policy that chooses among them.
#[derive(Debug)]
pub struct Pool {
    /// The model name clients ask for.
    pub name: String,
    /// The same name, shared: what a request's permit keeps until its response ends, instead
    /// of a copy.
    pub shared_name: Arc<str>,
    /// Members in config order (`backends[i].id == BackendId(i)`).
    pub backends: Vec<Backend>,
    /// The pool's routing policy.
    pub policy: Box<dyn Policy>,
    /// Bounds the retries all of this pool's requests may make together. Shared with the
    /// pool's next version across a reload when the budget settings did not change.
    pub retry_budget: Arc<RetryBudget>,
    /// The settings `retry_budget` was made with, to tell whether a reload may keep it.
    budget_settings: (f64, f64),
    /// Models to try, in order, when this pool's backends all failed.
    pub fallbacks: Vec<String>,
    /// Random bits for the jitter of the backoff between attempts.
    pub rng: SplitMix,
}

/// What building a pool needs from the gateway around it.
#[derive(Debug, Clone, Copy)]
pub struct PoolContext<'a> {
    /// Failover settings.
    pub retry: &'a Retry,
    /// Metric families.
    pub metrics: &'a Metrics,
    /// Seed for the pool's random draws.
    pub seed: u64,
    /// The shared client's connect timeout; backends with another get their own client.
    pub default_connect: Duration,
}

/// Views of a small pool fit inline; larger pools spill to the heap.
pub type ViewBuf = SmallVec<[BackendView; 16]>;

impl Pool {
    /// Builds a pool with fresh live state.
    pub fn new(cfg: &PoolConfig, ctx: &PoolContext<'_>) -> Self {
        Self::build(cfg, ctx, None)
    }

    /// Builds a pool; a backend that `previous` also has (same name and url) keeps its live
    /// state (the same `Arc`: in-flight count, cooldown, drain, health and breaker, signals),
    /// and so does the retry budget when its settings are unchanged. The new policy takes over
    /// what the previous one learned (prefix index, rotation) for kept backends, at their new
    /// positions ([`Policy::handover`]), so a reload leaves routing warm. A kept backend takes the new pool's breaker and slow-start settings and moves to its
    /// outlier detector, at its new position.
    pub fn build(cfg: &PoolConfig, ctx: &PoolContext<'_>, previous: Option<&Pool>) -> Self {
        let outlier: Option<SharedOutlier> = cfg
            .outlier
            .map(|o| Arc::new(Mutex::new(OutlierDetector::new(o, cfg.backends.len()))));
        let backends: Vec<Backend> = cfg
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let kept = previous
                    .and_then(|p| p.backends.iter().find(|o| o.same_endpoint(b)))
                    .map(|o| o.state.clone());
                Backend::new(BackendId(i as u32), cfg, b, ctx, outlier.clone(), kept)
            })
            .collect();
        let members: Vec<PoolMember> = backends
            .iter()
            .map(|b| PoolMember {
                name: b.config.name.clone(),
                weight: b.config.weight.max(1),
                price: b.config.price,
                context_window: b.config.context_window,
                quality: b.config.quality.map(|q| q as f32),
            })
            .collect();
        let state = previous.map_or_else(PoolState::default, |p| {
            let moved = Moved::new(p.backends.iter().map(|old| {
                let at = cfg.backends.iter().position(|b| old.same_endpoint(b));
                at.map(|i| BackendId(i as u32))
            }));
            p.policy.handover(&moved)
        });
        let mut policy = cfg.policy.rebuild(&members, ctx.seed, state);
        if !cfg.slow_start.is_zero() {
            policy = Box::new(SlowStart::new(policy, ctx.seed));
        }
        let retry = ctx.retry;
        Self {
            name: cfg.name.clone(),
            shared_name: Arc::from(cfg.name.as_str()),
            policy,
            retry_budget: previous
                .filter(|p| p.budget_settings == (retry.budget_ratio, retry.min_per_second))
                .map_or_else(
                    || Arc::new(RetryBudget::new(retry.budget_ratio, retry.min_per_second)),
                    |p| p.retry_budget.clone(),
                ),
            budget_settings: (retry.budget_ratio, retry.min_per_second),
            backends,
            fallbacks: cfg.fallbacks.clone(),
            rng: SplitMix::new(ctx.seed ^ 0x0062_6163_6b6f_6666),
        }
    }

    /// Fills `buf` with the live view of every member; scraped reports older than
    /// `max_report_age` are left out.
    pub fn view<'a>(
        &self,
        buf: &'a mut ViewBuf,
        now: Duration,
        max_report_age: Duration,
    ) -> FleetView<'a> {
        buf.clear();
        buf.extend(self.backends.iter().map(|b| {
            let s = &b.state.signals;
            BackendView {
                in_flight: b.state.in_flight(),
                usable: b.usable(now),
                engine: s.engine(now, max_report_age),
                in_flight_tokens: s.in_flight_tokens(),
                prefill_tokens: s.prefill_tokens(),
                latency: s.latency(),
                gpu: s.gpu(now, max_report_age),
                ramp: b.state.health.ramp(now),
                cache: b.state.engine.cache_model(),
                ..BackendView::idle(b.id, b.config.weight)
            }
        }));
        FleetView::new(buf, now)
    }

    /// When the first of this pool's unusable backends will be back, if any will within a
    /// known time (see [`Backend::returns_at`]).
    pub fn next_return(&self, now: Duration) -> Option<Duration> {
        self.backends.iter().filter_map(|b| b.returns_at(now)).min()
    }

    /// The member with this id.
    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(id.index())
    }
}

#[cfg(test)]
mod tests {
    use super::host_header;

    #[test]
    fn host_header_omits_only_the_schemes_default_port() {
        let host = |u: &str| host_header(&u.parse().unwrap()).unwrap();
        assert_eq!(host("http://127.0.0.1:8000/v1"), "127.0.0.1:8000");
        assert_eq!(host("http://engine.internal/v1"), "engine.internal");
        assert_eq!(host("http://engine.internal:80/v1"), "engine.internal");
        assert_eq!(host("https://api.example.com:443/v1"), "api.example.com");
        assert_eq!(
            host("https://api.example.com:8443/v1"),
            "api.example.com:8443"
        );
        assert_eq!(host("http://[::1]:9000/"), "[::1]:9000");
    }
}
