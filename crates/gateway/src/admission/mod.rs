//! Admission: who is calling ([`keys`]), whether their limits let the request go now, and,
//! when every backend of the pool is full, where it waits ([`gate`]). Runs between profiling
//! and routing:
//!
//! 1. [`authenticate`] (headers only, before the body is read): with `auth:` on, the key from
//!    `Authorization: Bearer` or `x-api-key` must be known, not revoked and not expired (401
//!    `invalid_api_key`).
//! 2. [`admit`] (after profiling): the key may use the model (403 `model_not_allowed`); the
//!    key's and tenant's token buckets and concurrency caps let it go (429
//!    `rate_limit_exceeded`); with `admission:` on, it waits in the pool's queue by priority
//!    and tenant fairness (429 `queue_timeout` / `queue_full`).
//! 3. [`Admitted::finish`] adds `x-ratelimit-*` headers and makes the response body hold the
//!    request's slot (a [`Permit`]) until it ends.
//!
//! With neither `auth:` nor `admission:` configured each step is one `Option` check.

pub mod admin;
pub mod gate;
pub mod keys;
pub mod metrics;
mod permit;
pub mod spend;
pub mod store;
pub mod usage;

use http::{HeaderMap, HeaderValue, Response};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::admission::{Grant, Priority, TenantId};
use switchyard_core::RequestProfile;

use crate::body::GatewayBody;
use crate::config::auth::{Admission as AdmissionConfig, Auth};
use crate::config::Config;
use crate::error::ApiError;
use crate::fleet::Pool;
use crate::gateway::Snapshot;
use gate::{Ask, Gate, NotAdmitted};
use keys::{KeyRecord, Keys};
pub use permit::Permit;
use store::Store;

/// Output tokens assumed for a request that sets no `max_tokens`, when estimating its cost.
pub const DEFAULT_OUTPUT_ESTIMATE: u32 = 256;

/// The admission state of a running gateway: kept across reloads that leave `auth:`,
/// `admission:` and the model names unchanged (limits and queues keep counting).
#[derive(Debug)]
pub struct Admission {
    /// Keys and tenants; `None`: auth off.
    pub keys: Option<Keys>,
    /// The key store, when `auth.db` is set and could be opened.
    pub store: Option<Mutex<Store>>,
    /// Per pool, its waiting room; empty when `admission:` is off. (foldhash: looked up per
    /// request, keys only from the config.)
    gates: foldhash::HashMap<String, Arc<Gate>>,
    /// Per model, its limits over every caller (`admission.model_limits`).
    model_limits: foldhash::HashMap<String, Mutex<switchyard_core::admission::RateLimit>>,
    /// Records spend to `auth.db` behind the request path; `None` without a store.
    pub spend: Option<spend::SpendWriter>,
    /// What it was built from, to tell whether a reload may keep it.
    built_from: (Option<Auth>, Option<AdmissionConfig>, Vec<String>),
    /// `switchyard_admission_wait_seconds` per level.
    waits: [prometheus::Histogram; 5],
}

impl Admission {
    /// The admission state for `config`: `previous` when it was built from the same
    /// settings; `None` when both `auth:` and `admission:` are off.
    pub fn build(
        config: &Config,
        previous: Option<&Arc<Admission>>,
        now: Duration,
        metrics: &metrics::AdmissionMetrics,
    ) -> Option<Arc<Self>> {
        if config.auth.is_none() && config.admission.is_none() {
            return None;
        }
        let names: Vec<String> = config.models.iter().map(|p| p.name.clone()).collect();
        let built_from = (config.auth.clone(), config.admission.clone(), names);
        if let Some(p) = previous.filter(|p| p.built_from == built_from) {
            return Some(p.clone());
        }
        let store = config
            .auth
            .as_ref()
            .and_then(|a| a.db.as_ref())
            .and_then(|path| match Store::open(path) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot open the key store; run-time keys are unavailable");
                    None
                }
            });
        let keys = config
            .auth
            .as_ref()
            .map(|a| Keys::from_config(a, now, store.as_ref().map(Store::conn), metrics));
        if let (Some(keys), Some(store)) = (&keys, &store) {
            admin::load_stored(keys, store, now);
        }
        let spend = config
            .auth
            .as_ref()
            .and_then(|a| a.db.as_ref())
            .filter(|_| store.is_some())
            .and_then(|path| match spend::SpendWriter::start(path) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the spend writer; spend is not recorded");
                    None
                }
            });
        let weights = keys.as_ref().map(Keys::weights).unwrap_or_default();
        let gates = config
            .admission
            .as_ref()
            .map(|a| {
                config
                    .models
                    .iter()
                    .map(|p| {
                        let gauges = Priority::ALL.map(|l| {
                            metrics
                                .waiting
                                .with_label_values(&[p.name.as_str(), l.name()])
                        });
                        let gate = Gate::new(
                            a.queue.clone(),
                            &weights,
                            (a.full_when, p.backends.len()),
                            gauges,
                        );
                        (p.name.clone(), Arc::new(gate))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let model_limits = config
            .admission
            .iter()
            .flat_map(|a| &a.model_limits)
            .map(|(m, spec)| {
                let live = switchyard_core::admission::RateLimit::new(*spec, now);
                (m.clone(), Mutex::new(live))
            })
            .collect();
        Some(Arc::new(Self {
            model_limits,
            keys,
            store: store.map(Mutex::new),
            gates,
            spend,
            built_from,
            waits: metrics.waits(),
        }))
    }

    /// The waiting room of model `name`, when admission is on.
    pub fn gate(&self, name: &str) -> Option<&Arc<Gate>> {
        self.gates.get(name)
    }
}

/// Wall-clock unix seconds (expiry, budgets' periods).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Who a request comes from.
#[derive(Debug, Default)]
pub struct Caller {
    /// Its key; `None` when auth is off.
    key: Option<Arc<KeyRecord>>,
}

impl Caller {
    /// Its key's tenant's name, when auth is on.
    pub fn tenant<'a>(&self, snap: &'a Snapshot) -> Option<&'a str> {
        let keys = snap.admission.as_ref()?.keys.as_ref()?;
        Some(keys.tenant(self.key.as_ref()?.tenant)?.name.as_str())
    }

    /// Whether it may use `model` (always, without auth).
    pub fn may_use(&self, model: &str) -> bool {
        self.key.as_ref().is_none_or(|k| k.allows(model))
    }

    /// What names its key without revealing it (`key:<id>` or a hash prefix).
    pub fn key_scope(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.scope.as_str())
    }
}

/// Checks the request's key (when auth is on), taking the header it came in out of
/// `headers` (see [`keys::take_presented`]). `memo` is the connection's last key, when the
/// request came on one (see [`keys::KeyMemo`]).
pub fn authenticate(
    snap: &Snapshot,
    headers: &mut HeaderMap,
    memo: Option<&keys::KeyMemo>,
) -> Result<Caller, ApiError> {
    let Some(keys) = snap.admission.as_ref().and_then(|a| a.keys.as_ref()) else {
        return Ok(Caller::default());
    };
    let Some(presented) = keys::take_presented(headers) else {
        return Err(ApiError::InvalidApiKey(
            "no API key: send `Authorization: Bearer <key>` (or `x-api-key: <key>`)",
        ));
    };
    let found = match memo {
        Some(memo) => keys.find_memo(presented.key(), memo),
        None => keys.find(presented.key()),
    };
    let Some(key) = found else {
        return Err(ApiError::InvalidApiKey("the API key is not valid"));
    };
    if let Some(expires) = key.expires {
        if unix_now() >= expires {
            return Err(ApiError::InvalidApiKey("the API key has expired"));
        }
    }
    Ok(Caller { key: Some(key) })
}

/// A request let through: what its response needs.
#[derive(Debug, Default)]
pub struct Admitted {
    /// Held by the response body; `None` when nothing needs holding.
    permit: Option<Permit>,
    /// The limits it passed, for `x-ratelimit-*`.
    grant: Option<Grant>,
    /// For `x-switchyard-route` (debug headers): level, tenant, and the wait in the pool's
    /// waiting room (`None`: the pool has none).
    note: Option<(Priority, TenantId, Option<Duration>)>,
    /// The body to send upstream when it differs from the client's (`include_usage` added).
    upstream_body: Option<bytes::Bytes>,
    /// The level's rank (0 most urgent) to send vLLM engines as `priority`, when
    /// `admission.engine_priority` is on.
    pub engine_priority: Option<u8>,
}

/// Lets the request go, makes it wait, or refuses it (see the module docs). `body` is the
/// request body, which a metered stream gets `include_usage` added to. Counts the outcome in
/// the admission metrics.
pub async fn admit(
    snap: &Arc<Snapshot>,
    caller: Caller,
    pool: &Pool,
    profile: &RequestProfile,
    headers: &HeaderMap,
    body: &bytes::Bytes,
) -> Result<Admitted, ApiError> {
    if snap.admission.is_none() {
        return Ok(Admitted::default());
    }
    let tenant = caller.key.as_ref().and_then(|k| {
        let keys = snap.admission.as_ref()?.keys.as_ref()?;
        keys.tenant(k.tenant)
    });
    let base = caller.key.as_ref().map_or(Priority::Normal, |k| k.priority);
    let priority = base.lowered_by(x_priority(headers).map(HeaderValue::as_bytes));
    let m = &snap.metrics.admission;
    let outcome = admit_inner(snap, caller, pool, profile, priority, body).await;
    match &outcome {
        Ok(a) => {
            if let Some(t) = tenant {
                t.series.requests.inc();
            }
            if let (Some(adm), Some((_, _, Some(waited)))) = (snap.admission.as_ref(), a.note) {
                adm.waits[priority.index()].observe(waited.as_secs_f64());
            }
        }
        Err(e) => {
            let code = e.code();
            if e.status() == http::StatusCode::TOO_MANY_REQUESTS {
                m.refused.with_label_values(&[priority.name(), code]).inc();
            }
            if let (Some(t), "rate_limit_exceeded" | "insufficient_quota") = (tenant, code) {
                m.tenant_throttled
                    .with_label_values(&[t.name.as_str(), code])
                    .inc();
            }
        }
    }
    outcome
}

/// The request's `x-priority`. Its names are compared first: a request carries a handful of
/// headers, and comparing them costs less than hashing this name for the map's lookup (which
/// every keyed request paid, for a header few send).
fn x_priority(headers: &HeaderMap) -> Option<&HeaderValue> {
    const X_PRIORITY: http::HeaderName = http::HeaderName::from_static("x-priority");
    if !headers.keys().any(|k| *k == X_PRIORITY) {
        return None;
    }
    headers.get(X_PRIORITY)
}

async fn admit_inner(
    snap: &Arc<Snapshot>,
    caller: Caller,
    pool: &Pool,
    profile: &RequestProfile,
    priority: Priority,
    body: &bytes::Bytes,
) -> Result<Admitted, ApiError> {
    let Some(adm) = snap.admission.as_ref() else {
        return Ok(Admitted::default());
    };
    let key = caller.key;
    if let Some(k) = &key {
        // The name it asked for, or the model a route chose for it.
        if !k.allows(&pool.name) && !k.allows(&profile.model) {
            return Err(ApiError::ModelNotAllowed {
                model: pool.name.clone(),
            });
        }
    }
    let tenant = key.as_ref().map_or(TenantId(0), |k| k.tenant);
    let output = profile.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_ESTIMATE);
    let tokens = profile.estimated_input_tokens.saturating_add(output);
    let now = snap.now();

    // Budgets, the key's and its tenant's.
    let tenant_rec = key.as_ref().and_then(|_| adm.keys.as_ref()?.tenant(tenant));
    let key_budget = key.as_ref().and_then(|k| k.budget.as_ref());
    let tenant_budget = tenant_rec.and_then(|t| t.budget.as_ref());
    if key_budget.is_some() || tenant_budget.is_some() {
        let unix = unix_now();
        for (scope, b) in [("key", key_budget), ("tenant", tenant_budget)] {
            if b.is_some_and(|b| b.exhausted(unix)) {
                return Err(ApiError::InsufficientQuota { scope });
            }
        }
    }

    // Limits: the key's, its tenant's, then the model's; a refusal by a later one gives the
    // earlier ones back.
    let tenant_limits = tenant_rec.and_then(|t| t.limits.as_ref());
    let model_limit = adm.model_limits.get(&pool.name);
    let scopes = [
        ("key", key.as_ref().and_then(|k| k.limits.as_ref())),
        ("tenant", tenant_limits),
        ("model", model_limit),
    ];
    let lock = |l| std::sync::Mutex::lock(l).unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut grant = None;
    for (i, &(scope, limits)) in scopes.iter().enumerate() {
        let Some(l) = limits else { continue };
        let mut l = lock(l);
        match l.try_acquire(tokens, now) {
            // The headers tell of the first (the most specific) limit.
            Ok(()) => {
                if grant.is_none() {
                    grant = Some(l.grant());
                }
            }
            Err(t) => {
                drop(l);
                for held in scopes[..i].iter().filter_map(|&(_, l)| l) {
                    lock(held).undo(tokens);
                }
                return Err(limited(scope, t));
            }
        }
    }
    let mut permit = Permit {
        snap: snap.clone(),
        key,
        tenant_limited: tenant_limits.is_some(),
        tenant,
        gate: None,
        gate_holds: false,
        prefill: 0,
        meter: None,
        estimated: tokens,
        ended: false,
        model_limited: model_limit.is_some(),
        pool: pool.shared_name.clone(),
        price: None,
    };
    // With a key, the response's usage is read for limits and spend; a stream that did not
    // ask for it is asked for it, invisibly.
    let mut upstream_body = None;
    if permit.key.is_some() {
        let mut meter = usage::Meter::default();
        if profile.stream
            && !profile.include_usage
            && profile.kind != switchyard_core::EndpointKind::Embeddings
        {
            upstream_body = usage::with_include_usage(body);
            meter.strip = upstream_body.is_some();
        }
        permit.meter = Some(meter);
    }

    // The waiting room.
    let mut waited = None;
    if let Some(gate) = adm.gate(&pool.name) {
        let ask = Ask {
            pool,
            priority,
            tenant,
            input_tokens: profile.estimated_input_tokens,
            output_tokens: output,
            max_age: snap.config.scrape.max_age,
        };
        // A refusal gives the limits back what they counted: the request never ran.
        waited = match gate.admit(&ask, || snap.now()).await {
            Ok(w) => Some(w),
            Err(refused) => {
                permit.refund();
                return Err(match refused {
                    NotAdmitted::Timeout(after) => ApiError::QueueTimeout {
                        model: pool.name.clone(),
                        priority: priority.name(),
                        after,
                    },
                    NotAdmitted::Full => ApiError::QueueFull {
                        model: pool.name.clone(),
                        priority: priority.name(),
                    },
                });
            }
        };
        if gate.shares_kept() {
            permit.prefill = profile.estimated_input_tokens;
        }
        permit.gate_holds = !gate.never_holds(pool);
        permit.gate = Some(gate.clone());
    }
    Ok(Admitted {
        permit: Some(permit),
        grant,
        note: Some((priority, tenant, waited)),
        upstream_body,
        engine_priority: snap
            .config
            .admission
            .as_ref()
            .filter(|c| c.full_when.engine_priority)
            .map(|_| priority.index() as u8),
    })
}

fn limited(scope: &'static str, t: switchyard_core::admission::Throttle) -> ApiError {
    ApiError::RateLimited {
        scope,
        limit: t.limit,
        retry_after: t.retry_after,
    }
}

impl Admitted {
    /// The body to send upstream: `original`, or it with `include_usage` added.
    pub fn body<'a>(&'a self, original: &'a bytes::Bytes) -> &'a bytes::Bytes {
        self.upstream_body.as_ref().unwrap_or(original)
    }

    /// The client's response with the limits' headers, its body holding the permit.
    /// `price` is the answering backend's (which may be a fallback model's), what the
    /// usage costs.
    pub fn finish(
        self,
        resp: Response<GatewayBody>,
        price: Option<switchyard_core::Price>,
    ) -> Response<GatewayBody> {
        let Some(mut permit) = self.permit else {
            return resp;
        };
        let (mut head, body) = resp.into_parts();
        if permit.meter.is_some() {
            permit.price = price;
        }
        if let Some(m) = &mut permit.meter {
            m.sse = body.is_sse(&head.headers);
        }
        if let Some(g) = &self.grant {
            ratelimit_headers(&mut head.headers, g);
        }
        if permit.snap.config.debug_headers {
            if let Some((p, t, waited)) = self.note {
                let tenant = permit
                    .snap
                    .admission
                    .as_ref()
                    .and_then(|a| a.keys.as_ref()?.tenant(t))
                    .map_or("-", |t| t.name.as_str());
                let note = format!(
                    "admission: priority={p} tenant={tenant} waited_ms={}",
                    waited.unwrap_or_default().as_millis()
                );
                let value = match head
                    .headers
                    .get("x-switchyard-route")
                    .and_then(|v| v.to_str().ok())
                {
                    Some(route) => format!("{route}; {note}"),
                    None => note,
                };
                if let Ok(v) = HeaderValue::from_str(&value) {
                    head.headers.insert("x-switchyard-route", v);
                }
            }
        }
        let mut watched = body.watched();
        watched.permit = Some(permit);
        Response::from_parts(head, GatewayBody::Watched(watched))
    }
}

/// `d` as seconds with millisecond precision (`1.250s`), written into `buf` digit by digit:
/// the formatting machinery cost more than the rest of the limit headers together.
fn seconds_text(d: std::time::Duration, buf: &mut [u8; 32]) -> &[u8] {
    let mut end = buf.len();
    let ms = d.subsec_millis();
    let mut secs = d.as_secs();
    let digits = [
        b's',
        b'0' + (ms % 10) as u8,
        b'0' + (ms / 10 % 10) as u8,
        b'0' + (ms / 100) as u8,
        b'.',
    ];
    for b in digits {
        end -= 1;
        buf[end] = b;
    }
    loop {
        end -= 1;
        buf[end] = b'0' + (secs % 10) as u8;
        secs /= 10;
        if secs == 0 {
            break;
        }
    }
    &buf[end..]
}

/// Room for the four `x-ratelimit-*` values: three numbers of at most 20 digits and a
/// duration of at most 25 characters.
#[derive(Debug)]
struct Text {
    bytes: [u8; 85],
    len: usize,
}

impl Default for Text {
    fn default() -> Self {
        Self {
            bytes: [0; 85],
            len: 0,
        }
    }
}

impl Text {
    fn extend_from_slice(&mut self, s: &[u8]) {
        let end = self.len + s.len();
        self.bytes[self.len..end].copy_from_slice(s);
        self.len = end;
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// Four of OpenAI's `x-ratelimit-*` headers: the request limit, the requests and tokens
/// left, and when the request bucket is full again. (OpenAI also sends the token limit,
/// which is the caller's own `tpm`, and the token bucket's reset; each header costs every
/// keyed answer a map insert and its bytes, about 0.6k instructions.)
fn ratelimit_headers(h: &mut HeaderMap, g: &Grant) {
    use http::header::HeaderName;
    // Names built once (a `&str` name is parsed again on every insert).
    const LIMIT_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-limit-requests");
    const REMAINING_REQUESTS: HeaderName =
        HeaderName::from_static("x-ratelimit-remaining-requests");
    const REMAINING_TOKENS: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
    const RESET_REQUESTS: HeaderName = HeaderName::from_static("x-ratelimit-reset-requests");
    // Every value is written into one buffer and each header takes a slice of it: one
    // allocation for the four instead of one each (an owned buffer: slicing a `Vec`-backed
    // `Bytes` would allocate its shared header on the first slice).
    let mut buf = Text::default();
    let mut ends = [0usize; 4];
    let mut numbers = itoa::Buffer::new();
    for (i, v) in [g.limit_requests, g.remaining_requests, g.remaining_tokens]
        .into_iter()
        .enumerate()
    {
        if let Some(v) = v {
            buf.extend_from_slice(numbers.format(v).as_bytes());
        }
        ends[i] = buf.len();
    }
    if let Some(d) = g.reset_requests {
        buf.extend_from_slice(seconds_text(d, &mut [0u8; 32]));
    }
    ends[3] = buf.len();
    let all = bytes::Bytes::from_owner(buf);
    h.reserve(4);
    let names = [
        LIMIT_REQUESTS,
        REMAINING_REQUESTS,
        REMAINING_TOKENS,
        RESET_REQUESTS,
    ];
    let mut from = 0;
    for (name, end) in names.into_iter().zip(ends) {
        if end > from {
            if let Ok(v) = HeaderValue::from_maybe_shared(all.slice(from..end)) {
                h.insert(name, v);
            }
        }
        from = end;
    }
}

#[cfg(test)]
mod tests {
    use super::seconds_text;
    use std::time::Duration;

    #[test]
    fn reset_seconds_are_written_with_milliseconds() {
        for (d, text) in [
            (Duration::ZERO, "0.000s"),
            (Duration::from_millis(1250), "1.250s"),
            (Duration::from_millis(61_005), "61.005s"),
            (Duration::from_secs(u64::MAX), "18446744073709551615.000s"),
        ] {
            assert_eq!(seconds_text(d, &mut [0u8; 32]), text.as_bytes());
        }
    }
}
