//! A circuit breaker per backend: the state machine, with time as a parameter.
//!
//! ```text
//!   closed --(failures >= failure_threshold within window)--> open
//!   open   --(open_for has passed)--------------------------> half-open
//!   half-open: at most `probes` requests at once go through;
//!              `success_threshold` successes --> closed
//!              any failure                   --> open again
//! ```
//!
//! The gateway keeps one [`Breaker`] per backend behind a short lock, asks [`Breaker::admits`]
//! before sending, calls [`Breaker::try_dispatch`] when it sends, and reports the outcome with
//! [`Breaker::on_success`], [`Breaker::on_failure`] or, for a probe whose client left before
//! any outcome, [`Breaker::on_cancel`]. Failures are connect errors, timeouts and 5xx answers;
//! 429 is not a failure (the backend is healthy and said when to come back).

use std::collections::VecDeque;
use std::time::Duration;

/// Default failures within [`DEFAULT_WINDOW`] that open the breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Default window in which failures are counted.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
/// Default time an open breaker waits before letting probes through.
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(5);
/// Default probes allowed in flight at once while half-open.
pub const DEFAULT_PROBES: u32 = 1;
/// Default successful probes that close the breaker.
pub const DEFAULT_SUCCESS_THRESHOLD: u32 = 2;

/// A breaker's parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures within `window` that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long the breaker stays open before probing.
    pub open_for: Duration,
    /// Probe requests allowed in flight at once while half-open (at least 1).
    pub probes: u32,
    /// Successful probes that close the breaker (at least 1).
    pub success_threshold: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: DEFAULT_FAILURE_THRESHOLD,
            window: DEFAULT_WINDOW,
            open_for: DEFAULT_OPEN_FOR,
            probes: DEFAULT_PROBES,
            success_threshold: DEFAULT_SUCCESS_THRESHOLD,
        }
    }
}

/// Where a breaker is. The discriminants are the values of the
/// `switchyard_backend_breaker_state` metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow.
    Closed = 0,
    /// No request goes through until `open_for` has passed.
    Open = 1,
    /// A few probe requests go through to test the backend.
    HalfOpen = 2,
}

/// A state change worth telling: logged and reflected in metrics by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
}

/// One backend's circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: BreakerConfig,
    state: BreakerState,
    /// Failure times within the window, oldest first; at most `failure_threshold` kept.
    failures: VecDeque<Duration>,
    /// When the breaker last opened.
    opened_at: Duration,
    /// Probes sent and not yet resolved while half-open.
    probes_in_flight: u32,
    /// Successful probes in this half-open period.
    successes: u32,
}

/// `cfg` with its counts raised to at least 1.
fn normalized(cfg: BreakerConfig) -> BreakerConfig {
    BreakerConfig {
        failure_threshold: cfg.failure_threshold.max(1),
        probes: cfg.probes.max(1),
        success_threshold: cfg.success_threshold.max(1),
        ..cfg
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(cfg: BreakerConfig) -> Self {
        let cfg = normalized(cfg);
        Self {
            cfg,
            state: BreakerState::Closed,
            // Grows as failures come; a huge threshold must not reserve its memory up front.
            failures: VecDeque::with_capacity(cfg.failure_threshold.min(16) as usize),
            opened_at: Duration::ZERO,
            probes_in_flight: 0,
            successes: 0,
        }
    }

    /// New settings (a config reload) for a breaker in use: its state, the failures still in
    /// the window (the newest `failure_threshold` of them) and its probes carry over. An open
    /// breaker then half-opens at its opening time plus the new `open_for`.
    pub fn reconfigure(&mut self, cfg: BreakerConfig) {
        self.cfg = normalized(cfg);
        while self.failures.len() > self.cfg.failure_threshold as usize {
            self.failures.pop_front();
        }
    }

    /// The state at `now` (an open breaker whose time is up is half-open).
    pub fn state(&mut self, now: Duration) -> BreakerState {
        if self.state == BreakerState::Open && now >= self.opened_at + self.cfg.open_for {
            self.state = BreakerState::HalfOpen;
            self.probes_in_flight = 0;
            self.successes = 0;
        }
        self.state
    }

    /// When an open breaker will let probes through; `None` unless open.
    pub fn reopens_at(&self) -> Option<Duration> {
        (self.state == BreakerState::Open).then_some(self.opened_at + self.cfg.open_for)
    }

    /// Whether a request may be sent at `now`.
    pub fn admits(&mut self, now: Duration) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => self.probes_in_flight < self.cfg.probes,
        }
    }

    /// A request is about to be sent: admits it and counts it in one step, so concurrent
    /// requests that all saw a free probe slot when they were routed cannot together exceed
    /// `probes`. `None`: refused (open, or half-open with every probe slot taken);
    /// `Some(true)`: a half-open probe, whose outcome or cancellation must be reported;
    /// `Some(false)`: closed.
    pub fn try_dispatch(&mut self, now: Duration) -> Option<bool> {
        match self.state(now) {
            BreakerState::Closed => Some(false),
            BreakerState::Open => None,
            BreakerState::HalfOpen if self.probes_in_flight < self.cfg.probes => {
                self.probes_in_flight += 1;
                Some(true)
            }
            BreakerState::HalfOpen => None,
        }
    }

    /// A request succeeded. `probe` is what [`Breaker::try_dispatch`] returned for it.
    pub fn on_success(&mut self, now: Duration, probe: bool) -> Option<Transition> {
        if probe && self.state(now) == BreakerState::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
            self.successes += 1;
            if self.successes >= self.cfg.success_threshold {
                self.failures.clear();
                return Some(self.go(BreakerState::Closed, now));
            }
        }
        None
    }

    /// A request failed (connect error, timeout, 5xx, stream broken).
    pub fn on_failure(&mut self, now: Duration, probe: bool) -> Option<Transition> {
        match self.state(now) {
            BreakerState::Open => None,
            BreakerState::HalfOpen => {
                // Only a probe's failure says something about the half-open backend; a late
                // failure of a request sent before the breaker opened does not.
                probe.then(|| self.go(BreakerState::Open, now))
            }
            BreakerState::Closed => {
                while self
                    .failures
                    .front()
                    .is_some_and(|t| *t + self.cfg.window <= now)
                {
                    self.failures.pop_front();
                }
                if self.failures.len() == self.cfg.failure_threshold as usize {
                    self.failures.pop_front();
                }
                self.failures.push_back(now);
                (self.failures.len() >= self.cfg.failure_threshold as usize)
                    .then(|| self.go(BreakerState::Open, now))
            }
        }
    }

    /// A probe ended with no outcome (its client left): frees its slot.
    pub fn on_cancel(&mut self, now: Duration, probe: bool) {
        if probe && self.state(now) == BreakerState::HalfOpen {
            self.probes_in_flight = self.probes_in_flight.saturating_sub(1);
        }
    }

    fn go(&mut self, to: BreakerState, now: Duration) -> Transition {
        let from = self.state;
        self.state = to;
        self.probes_in_flight = 0;
        self.successes = 0;
        if to == BreakerState::Open {
            self.opened_at = now;
            self.failures.clear();
        }
        Transition { from, to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            window: s(10),
            open_for: s(5),
            probes: 2,
            success_threshold: 2,
        })
    }

    #[test]
    fn opens_after_threshold_failures_within_the_window_only() {
        let mut b = breaker();
        b.on_failure(s(0), false);
        b.on_failure(s(5), false);
        // The first failure leaves the window before the third arrives.
        assert_eq!(b.on_failure(s(11), false), None);
        assert!(b.admits(s(11)));
        let t = b
            .on_failure(s(12), false)
            .expect("third failure in window opens");
        assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
        assert!(!b.admits(s(13)));
        assert_eq!(b.reopens_at(), Some(s(17)));
    }

    #[test]
    fn half_open_admits_limited_probes_then_closes_after_successes() {
        let mut b = breaker();
        for t in 0..3 {
            b.on_failure(s(t), false);
        }
        assert_eq!(b.state(s(6)), BreakerState::Open);
        assert_eq!(b.state(s(7)), BreakerState::HalfOpen);
        assert!(b.admits(s(7)));
        let p1 = b.try_dispatch(s(7)).unwrap();
        let p2 = b.try_dispatch(s(7)).unwrap();
        assert!(p1 && p2);
        assert!(!b.admits(s(7)), "only two probes at once");
        assert_eq!(b.try_dispatch(s(7)), None, "a third is refused at dispatch");
        assert_eq!(b.on_success(s(8), p1), None);
        let t = b.on_success(s(8), p2).expect("second success closes");
        assert_eq!(t.to, BreakerState::Closed);
        assert!(b.admits(s(8)));
        assert_eq!(b.try_dispatch(s(8)), Some(false), "closed: not a probe");
    }

    #[test]
    fn a_failed_probe_opens_again_and_a_cancelled_one_frees_its_slot() {
        let mut b = breaker();
        for t in 0..3 {
            b.on_failure(s(t), false);
        }
        assert_eq!(b.try_dispatch(s(6)), None, "open: refused");
        let p = b.try_dispatch(s(8)).unwrap();
        b.on_cancel(s(8), p);
        let p = b.try_dispatch(s(8)).unwrap();
        let q = b.try_dispatch(s(8)).unwrap();
        assert!(!b.admits(s(8)));
        assert_eq!(b.try_dispatch(s(8)), None);
        // A stale failure of a request sent before the breaker opened changes nothing.
        assert_eq!(b.on_failure(s(9), false), None);
        assert_eq!(b.state(s(9)), BreakerState::HalfOpen);
        let t = b.on_failure(s(9), p).expect("probe failure reopens");
        assert_eq!(t.to, BreakerState::Open);
        b.on_success(s(9), q);
        assert_eq!(b.state(s(13)), BreakerState::Open);
        assert_eq!(b.state(s(14)), BreakerState::HalfOpen);
    }

    #[test]
    fn reconfigure_keeps_the_state_and_applies_the_new_thresholds() {
        let mut b = Breaker::new(BreakerConfig {
            failure_threshold: 5,
            ..BreakerConfig::default()
        });
        for t in 0..4 {
            b.on_failure(s(t), false);
        }
        // Four failures in the window, a new threshold of 2: the newest two are kept and the
        // next failure opens (a third in the window).
        b.reconfigure(BreakerConfig {
            failure_threshold: 2,
            ..BreakerConfig::default()
        });
        assert_eq!(b.failures.len(), 2);
        assert_eq!(b.state(s(2)), BreakerState::Closed);
        let t = b
            .on_failure(s(2), false)
            .expect("opens under the new threshold");
        assert_eq!(t.to, BreakerState::Open);
        // Open: a longer open_for moves the half-open time.
        b.reconfigure(BreakerConfig {
            failure_threshold: 2,
            open_for: Duration::from_secs(60),
            ..BreakerConfig::default()
        });
        assert_eq!(b.reopens_at(), Some(s(62)));
        assert_eq!(b.state(s(30)), BreakerState::Open);
        // Half-open with a probe out: the probe carries over and still counts.
        let p = b.try_dispatch(s(62)).unwrap();
        assert!(p);
        b.reconfigure(BreakerConfig {
            failure_threshold: 2,
            probes: 1,
            ..BreakerConfig::default()
        });
        assert_eq!(b.try_dispatch(s(62)), None, "the one probe slot is taken");
        b.on_cancel(s(63), p);
        assert_eq!(b.try_dispatch(s(63)), Some(true));
    }

    #[test]
    fn zero_parameters_are_raised_to_one() {
        let mut b = Breaker::new(BreakerConfig {
            failure_threshold: 0,
            probes: 0,
            success_threshold: 0,
            ..BreakerConfig::default()
        });
        assert!(b.on_failure(s(0), false).is_some());
        let p = b.try_dispatch(s(60)).unwrap();
        assert!(p);
        assert!(b.on_success(s(60), p).is_some());
    }
}
