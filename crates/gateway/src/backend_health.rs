//! Whether a backend may take traffic, as the gateway has learnt it: active health checks
//! ([`crate::health`]), the circuit breaker and the pool's outlier detector (both pure state
//! machines in `switchyard-core`, fed here with the outcome of every attempt), and slow start
//! after a backend comes back.
//!
//! One [`BackendHealth`] lives in each [`crate::fleet::BackendState`]. The routing hot path
//! reads only atomics ([`BackendHealth::admits`] takes the breaker's lock only while the
//! breaker is not closed); outcomes take short locks, never across an `.await`. Time is the
//! gateway's (a `Duration` since its epoch), as everywhere in the fleet.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use switchyard_core::breaker::Transition;
use switchyard_core::{BackendId, Breaker, BreakerConfig, BreakerState, OutlierDetector};

use crate::telemetry::BackendMetrics;

/// The outlier detector of one pool, shared by its members' [`BackendHealth`].
pub type SharedOutlier = Arc<Mutex<OutlierDetector>>;

/// One backend's health, breaker, ejection and ramp.
#[derive(Debug)]
pub struct BackendHealth {
    /// False while active health checks have marked the backend down.
    up: AtomicBool,
    /// Active checks passed in a row, and failed in a row (one of the two is 0). Here rather
    /// than in the check loop, so a reload or admin change that keeps the backend keeps its
    /// run of checks even when the loop restarts with new settings.
    checks_passed: AtomicU32,
    /// See [`Self::checks_passed`].
    checks_failed: AtomicU32,
    /// Its circuit breaker; `None` when the pool turned breakers off. Settings change with
    /// a reload that keeps the backend ([`BackendHealth::reconfigure`]).
    breaker: Mutex<Option<Breaker>>,
    /// Mirror of the breaker's state (`BreakerState as u8`) so a closed breaker costs one
    /// atomic load per decision.
    breaker_state: AtomicU8,
    /// The backend's position in its pool and the pool's outlier detector; `None` when
    /// turned off. Rebound when a reload keeps the backend
    /// ([`BackendHealth::reconfigure`]), so a kept backend is judged with its new pool's
    /// settings and counted against its new pool's ejection cap. Read only when an outcome
    /// needs the detector (a failure, or the first success after one).
    outlier: Mutex<Option<(BackendId, SharedOutlier)>>,
    /// The last outcome recorded was a failure: a success must reset the failure run. While
    /// false, a success (the common case) changes nothing and takes no lock.
    failing: AtomicBool,
    /// Mirror of the ejection end (ms of gateway time), read without the pool's lock.
    ejected_until_ms: AtomicU64,
    /// Gateway time (ms) at which the current slow-start ramp began; the backend takes a
    /// growing share from then on for `slow_start_ms`.
    ramp_from_ms: AtomicU64,
    /// The ramp's length; 0 turns slow start off.
    slow_start_ms: AtomicU64,
    metrics: BackendMetrics,
}

/// The lock on a backend's breaker, held only while it has one.
struct BreakerGuard<'a>(MutexGuard<'a, Option<Breaker>>);

impl std::ops::Deref for BreakerGuard<'_> {
    type Target = Breaker;
    fn deref(&self) -> &Breaker {
        self.0
            .as_ref()
            .expect("a guard is made only over a breaker")
    }
}

impl std::ops::DerefMut for BreakerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Breaker {
        self.0
            .as_mut()
            .expect("a guard is made only over a breaker")
    }
}

/// How soon a request waiting for a half-open backend whose probe slots are all taken looks
/// again.
pub const PROBE_RECHECK: Duration = Duration::from_millis(20);

/// Share of a full traffic share a backend takes at the very start of its ramp.
pub const MIN_RAMP: f32 = 0.1;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl BackendHealth {
    /// A healthy backend with a closed breaker, not ramping.
    pub fn new(
        id: BackendId,
        breaker: Option<BreakerConfig>,
        outlier: Option<SharedOutlier>,
        slow_start: Duration,
        metrics: BackendMetrics,
    ) -> Self {
        metrics.healthy.set(1);
        metrics.breaker_state.set(0);
        metrics.ejected.set(0);
        Self {
            up: AtomicBool::new(true),
            checks_passed: AtomicU32::new(0),
            checks_failed: AtomicU32::new(0),
            breaker: Mutex::new(breaker.map(Breaker::new)),
            breaker_state: AtomicU8::new(BreakerState::Closed as u8),
            outlier: Mutex::new(outlier.map(|o| (id, o))),
            failing: AtomicBool::new(false),
            ejected_until_ms: AtomicU64::new(0),
            ramp_from_ms: AtomicU64::new(0),
            slow_start_ms: AtomicU64::new(ms(slow_start)),
            metrics,
        }
    }

    /// Gateway time now ([`crate::clock::now`], the clock decisions read), for outcomes
    /// reported from a response body, which has no gateway handle.
    pub fn now(&self) -> Duration {
        crate::clock::now()
    }

    fn breaker(&self) -> Option<BreakerGuard<'_>> {
        let guard = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        guard.is_some().then_some(BreakerGuard(guard))
    }

    /// Whether active checks pass (always true without checks).
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Whether outlier detection keeps the backend out at `now`.
    pub fn ejected(&self, now: Duration) -> bool {
        ms(now) < self.ejected_until_ms.load(Ordering::Relaxed)
    }

    /// The breaker's state at `now`.
    pub fn breaker_state(&self, now: Duration) -> BreakerState {
        if self.breaker_state.load(Ordering::Relaxed) == BreakerState::Closed as u8 {
            return BreakerState::Closed;
        }
        self.breaker().map_or(BreakerState::Closed, |mut b| {
            let s = b.state(now);
            self.publish_breaker(s);
            s
        })
    }

    /// Whether health, ejection and breaker let a new request through at `now`.
    pub fn admits(&self, now: Duration) -> bool {
        if !self.is_up() {
            return false;
        }
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        if until != 0 {
            if ms(now) < until {
                return false;
            }
            // The ejection is over: clear it once, so the gauge follows.
            if self
                .ejected_until_ms
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.metrics.ejected.set(0);
            }
        }
        if self.breaker_state.load(Ordering::Relaxed) == BreakerState::Closed as u8 {
            return true;
        }
        self.breaker().is_none_or(|mut b| {
            let ok = b.admits(now);
            self.publish_breaker(b.state(now));
            ok
        })
    }

    /// When the timed reasons that keep the backend out (ejection, open breaker) have all
    /// passed; `None` when one is open-ended (health checks down). A half-open breaker whose
    /// probe slots are all taken frees one when a probe ends, at no known time: it is looked
    /// at again after [`PROBE_RECHECK`].
    pub fn returns_at(&self, now: Duration) -> Option<Duration> {
        if !self.is_up() {
            return None;
        }
        let ejected = Duration::from_millis(self.ejected_until_ms.load(Ordering::Relaxed));
        let reopens = self
            .breaker()
            .and_then(|mut b| match b.state(now) {
                BreakerState::HalfOpen if !b.admits(now) => Some(now + PROBE_RECHECK),
                _ => b.reopens_at(),
            })
            .unwrap_or_default();
        Some(now.max(ejected).max(reopens))
    }

    /// Slow start: the share of a full traffic share to take at `now`, in
    /// [`MIN_RAMP`]..=1.
    pub fn ramp(&self, now: Duration) -> f32 {
        let from = self.ramp_from_ms.load(Ordering::Relaxed);
        let slow_start_ms = self.slow_start_ms.load(Ordering::Relaxed);
        if slow_start_ms == 0 || from == 0 {
            return 1.0;
        }
        let elapsed = ms(now).saturating_sub(from);
        if ms(now) < from {
            return MIN_RAMP;
        }
        if elapsed >= slow_start_ms {
            return 1.0;
        }
        (elapsed as f32 / slow_start_ms as f32).max(MIN_RAMP)
    }

    /// Starts a ramp at `at` (the backend came back, or was added at run time).
    pub fn start_ramp(&self, at: Duration) {
        if self.slow_start_ms.load(Ordering::Relaxed) > 0 {
            self.ramp_from_ms.store(ms(at).max(1), Ordering::Relaxed);
        }
    }

    /// Counts one active check's result; returns the checks passed and failed in a row since.
    /// One check loop runs per backend, so the two counts cannot interleave.
    pub fn count_check(&self, passed: bool) -> (u32, u32) {
        let (this, other) = if passed {
            (&self.checks_passed, &self.checks_failed)
        } else {
            (&self.checks_failed, &self.checks_passed)
        };
        other.store(0, Ordering::Relaxed);
        let run = this.load(Ordering::Relaxed).saturating_add(1);
        this.store(run, Ordering::Relaxed);
        if passed {
            (run, 0)
        } else {
            (0, run)
        }
    }

    /// Active health checks marked the backend up or down.
    pub fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.metrics.healthy.set(i64::from(up));
            self.metrics.transition(if up { "up" } else { "down" });
            if up {
                self.start_ramp(self.now());
            }
        }
    }

    /// A request is about to be sent now: `Some(true)` when it is a half-open breaker's
    /// probe, `Some(false)` when the breaker is closed (or off), `None` when the breaker
    /// refuses it (open, or every probe slot taken since the request was routed).
    pub fn try_dispatch(&self) -> Option<bool> {
        if self.breaker_state.load(Ordering::Relaxed) == BreakerState::Closed as u8 {
            return Some(false);
        }
        match self.breaker() {
            Some(mut b) => b.try_dispatch(self.now()),
            None => Some(false),
        }
    }

    /// [`Self::record`] now, reading the clock only when there is something to update.
    pub fn record_now(&self, success: bool, probe: bool) {
        if success && !probe && !self.failing.load(Ordering::Relaxed) {
            return;
        }
        self.record(self.now(), success, probe);
    }

    /// The outcome of one attempt: `success` false for connect errors, timeouts, 5xx answers
    /// and broken streams. `probe` is what [`Self::try_dispatch`] returned for it.
    pub fn record(&self, now: Duration, success: bool, probe: bool) {
        // A success outside a half-open probe, after a success: nothing to update.
        if success && !probe && !self.failing.load(Ordering::Relaxed) {
            return;
        }
        let transition = self.breaker().and_then(|mut b| {
            let t = if success {
                b.on_success(now, probe)
            } else {
                b.on_failure(now, probe)
            };
            self.publish_breaker(b.state(now));
            t
        });
        if let Some(t) = transition {
            self.on_breaker_transition(t, now);
        }
        let bound = self
            .outlier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let ejection = bound.and_then(|(id, o)| {
            let mut detector = o.lock().unwrap_or_else(|e| e.into_inner());
            // Set under the lock, so the flag and the detector's failure run agree.
            self.failing.store(!success, Ordering::Relaxed);
            detector.record(id, now, success)
        });
        if let Some(e) = ejection {
            self.ejected_until_ms.store(ms(e.until), Ordering::Relaxed);
            self.metrics.ejected.set(1);
            self.metrics.transition("ejected");
            // Back at `until`, ramping from there.
            self.start_ramp(e.until);
            let [model, backend] = self.metrics.labels();
            tracing::warn!(%model, %backend, ejected_for_s = (e.until - now).as_secs_f64(), ejections = e.count, "backend ejected after consecutive failures");
        }
    }

    /// Applies the settings of the pool a reload kept the backend in: its breaker's (state
    /// carried over; a breaker turned on starts closed, one turned off lets everything
    /// through), slow start's length, and the pool's outlier detector at the backend's
    /// position `id` there (`None`: detection off), carrying its outlier state over (failure
    /// run, ejection count, an ejection under way) so the new detector's cap counts it.
    pub fn reconfigure(
        &self,
        id: BackendId,
        breaker: Option<BreakerConfig>,
        outlier: Option<SharedOutlier>,
        slow_start: Duration,
    ) {
        let mut b = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match (b.as_mut(), breaker) {
            (Some(current), Some(cfg)) => current.reconfigure(cfg),
            (None, Some(cfg)) => *b = Some(Breaker::new(cfg)),
            (_, None) => {
                *b = None;
                self.publish_breaker(BreakerState::Closed);
            }
        }
        drop(b);
        self.slow_start_ms.store(ms(slow_start), Ordering::Relaxed);
        let mut binding = self.outlier.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some((old_id, old)), Some(new)) = (binding.as_ref(), outlier.as_ref()) {
            if !Arc::ptr_eq(old, new) {
                let old = old.lock().unwrap_or_else(|e| e.into_inner());
                new.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .carry_over(id, &old, *old_id);
            }
        }
        if outlier.is_none() {
            // Nothing will reset the failure run: successes need not take locks for it.
            self.failing.store(false, Ordering::Relaxed);
        }
        *binding = outlier.map(|o| (id, o));
    }

    /// A probe ended with no outcome (its client left before an answer).
    pub fn on_cancel(&self, now: Duration, probe: bool) {
        if probe {
            if let Some(mut b) = self.breaker() {
                b.on_cancel(now, probe);
            }
        }
    }

    fn on_breaker_transition(&self, t: Transition, now: Duration) {
        let to = match t.to {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        };
        self.metrics.transition(to);
        let [model, backend] = self.metrics.labels();
        tracing::warn!(%model, %backend, from = ?t.from, to = ?t.to, "circuit breaker changed state");
        if t.to == BreakerState::Closed {
            self.start_ramp(now);
        }
    }

    fn publish_breaker(&self, s: BreakerState) {
        let prev = self.breaker_state.swap(s as u8, Ordering::Relaxed);
        if prev != s as u8 {
            self.metrics.breaker_state.set(s as i64);
            if s == BreakerState::HalfOpen {
                self.metrics.transition("half_open");
            }
        }
    }
}
