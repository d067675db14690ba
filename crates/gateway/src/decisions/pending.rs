//! A request's record in the making: started with what routing knew, finished by the
//! response body when it ends (or is dropped because the client left), where TTFT, duration
//! and the usage are known.

use bytes::Bytes;
use http::Response;
use http_body::Frame;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

use super::{Attempt, DecisionLog, Record, Score};
use crate::admission::usage::Meter;
use crate::body::GatewayBody;
use crate::fleet::{Backend, Pool};
use switchyard_core::Decision;

/// What the routing learned of an answered request, handed to its record.
#[derive(Debug)]
pub struct Routed {
    /// The backend that answered.
    pub backend: Arc<str>,
    /// The policy's reason (kept as its parts; written out only when the record is shown).
    pub reason: Option<switchyard_core::Reason>,
    /// Candidates' scores, when the policy explained them.
    pub scores: Vec<Score>,
    /// The attempts made before the answering one, in order, and how each ended.
    pub tried: super::Attempts,
    /// The answering backend's `switchyard_tokens_total` counters (prompt, completion), which
    /// the usage is added to when the body ends.
    pub tokens: Option<[prometheus::IntCounter; 2]>,
    /// The answering backend's price, which turns the usage into the record's cost.
    pub price: Option<switchyard_core::Price>,
}

impl Routed {
    /// The record's view of `decision`, taken by `backend` of `pool` after the attempts
    /// `tried`.
    pub fn new(
        pool: &Pool,
        backend: &Backend,
        decision: Option<&Decision>,
        tried: super::Attempts,
    ) -> Self {
        let scores = decision
            .and_then(|d| d.explanation.as_ref())
            .map(|ex| {
                ex.candidates
                    .iter()
                    .map(|c| Score {
                        backend: pool.backend(c.id).map_or("?", |b| b.name()).to_owned(),
                        score: c.score,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            backend: backend.shared_name.clone(),
            // The reason names its policy itself (`prefix_aware: ...`).
            reason: decision.map(|d| d.reason),
            scores,
            tried,
            tokens: Some(backend.state.metrics().tokens.clone()),
            price: backend.config.price,
        }
    }
}

/// What the proxy knows when a request starts.
#[derive(Debug)]
pub struct Start<'a> {
    /// The request id.
    pub id: &'a str,
    /// The model the client asked for.
    pub model: &'a str,
    /// How it was routed: the serving pool's name, or the route's explanation.
    pub route: &'a str,
    /// The pool's policy name.
    pub policy: &'static str,
    /// The serving pool's name, shared: the record keeps it instead of a copy when the
    /// model or the route is that name.
    pub pool: &'a Arc<str>,
    /// When the request arrived.
    pub started: Instant,
    /// Whether the record is written when the request succeeds.
    pub sampled: bool,
    /// The request's span when tracing is on: it ends with the body, here.
    pub trace: Option<&'a crate::otel::RequestSpan>,
}

/// The record riding on the response body until it ends.
#[derive(Debug)]
pub struct Pending {
    log: Arc<DecisionLog>,
    record: Record,
    sampled: bool,
    started: Instant,
    meter: Meter,
    done: bool,
    /// The request's span, ended with the record.
    trace: Option<crate::otel::RequestSpan>,
    /// Where the usage is counted (see [`Routed::tokens`]).
    tokens: Option<[prometheus::IntCounter; 2]>,
    /// See [`Routed::price`].
    price: Option<switchyard_core::Price>,
    /// The body inside meters the usage (see [`attach`]); this one does not read it again.
    metered_inside: bool,
}

/// Wraps `resp`'s body so that its end hands the request's record to `log`.
pub fn attach(
    log: &Arc<DecisionLog>,
    start: Start<'_>,
    routed: Option<Routed>,
    resp: Response<GatewayBody>,
) -> Response<GatewayBody> {
    let status = resp.status().as_u16();
    let mut tokens = None;
    let mut price = None;
    let (backend, reason, scores, attempts) = match routed {
        Some(r) => {
            let mut attempts = r.tried;
            attempts.push(Attempt {
                backend: r.backend.clone(),
                outcome: if status < 400 { "ok" } else { "error" },
                status: Some(status),
            });
            tokens = r.tokens;
            price = r.price;
            (Some(r.backend), r.reason, r.scores, attempts)
        }
        None => (None, None, Vec::new(), super::Attempts::new()),
    };
    let sse = resp.body().is_sse(resp.headers());
    // An admission permit inside that meters the body already reads the usage (and may strip
    // the chunk that carries it): the record takes the permit's reading at the end.
    let metered_inside = matches!(resp.body(), GatewayBody::Watched(w) if w.metered());
    let shared = |s: &str| {
        if s == &**start.pool {
            start.pool.clone()
        } else {
            Arc::from(s)
        }
    };
    let pending = Pending {
        log: log.clone(),
        record: Record {
            id: start.id.to_owned(),
            // Set with the duration, at the end: one clock read for both.
            at_ms: 0,
            model: shared(start.model),
            route: shared(start.route),
            policy: start.policy,
            backend,
            reason,
            scores,
            attempts,
            status,
            prompt_tokens: None,
            completion_tokens: None,
            ttft_ms: None,
            duration_ms: 0.0,
            cost: None,
        },
        sampled: start.sampled,
        started: start.started,
        meter: Meter {
            sse,
            ..Meter::default()
        },
        done: false,
        trace: start.trace.cloned(),
        tokens,
        price,
        metered_inside,
    };
    resp.map(|body| {
        let mut watched = body.watched();
        watched.pending = Some(pending);
        GatewayBody::Watched(watched)
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Pending {
    /// Looks at one frame on its way to the client (first byte, usage).
    pub fn observe(&mut self, frame: Frame<Bytes>) -> Frame<Bytes> {
        match frame.into_data() {
            Ok(data) => {
                if self.record.ttft_ms.is_none() {
                    self.record.ttft_ms = Some(ms(self.started.elapsed()));
                    if let Some(t) = &self.trace {
                        t.first_byte();
                    }
                }
                if self.metered_inside {
                    Frame::data(data)
                } else {
                    Frame::data(self.meter.observe(data))
                }
            }
            Err(other) => other,
        }
    }

    /// The body ended: the record is complete. `usage` is what a metering body inside read.
    pub fn end(&mut self, usage: Option<crate::admission::usage::Usage>) {
        if self.meter.usage.is_none() {
            self.meter.usage = usage;
        }
        self.finish(true);
    }

    /// The body ended (`completed`), or was dropped first.
    fn finish(&mut self, completed: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        if let Some(t) = self.trace.take() {
            let attempts = self.record.attempts.len() as u32;
            t.end(
                completed,
                self.record.backend.as_deref().map(|b| (b, attempts)),
            );
        }
        let took = self.started.elapsed();
        self.record.duration_ms = ms(took);
        // When the request arrived, in unix milliseconds.
        self.record.at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .saturating_sub(took)
            .as_millis() as u64;
        if let Some(u) = self.meter.usage {
            self.record.prompt_tokens = Some(u64::from(u.prompt_tokens));
            self.record.completion_tokens = Some(u64::from(u.completion_tokens));
            if let Some([prompt, completion]) = &self.tokens {
                prompt.inc_by(u64::from(u.prompt_tokens));
                completion.inc_by(u64::from(u.completion_tokens));
            }
            self.record.cost = self.price.map(|p| {
                (p.input_per_mtok * f64::from(u.prompt_tokens)
                    + p.output_per_mtok * f64::from(u.completion_tokens))
                    / 1e6
            });
        }
        let record = std::mem::take(&mut self.record);
        self.log.record(record, self.sampled);
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(false);
    }
}
