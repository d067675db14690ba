//! Rate limits: token buckets for requests per minute and tokens per minute, plus a cap on
//! requests in flight. One [`RateLimit`] is what one key, tenant, model or backend carries.
//!
//! Tokens are estimated when a request is admitted and reconciled with its real usage when
//! it ends ([`RateLimit::reconcile`]); a bucket may go into debt by what the estimate missed,
//! and then refuses until it has refilled.

use std::time::Duration;

/// A bucket that holds up to `capacity` and refills `capacity` per minute.
///
/// Times are seconds of gateway time as `f64`: every admitted request brings two or three
/// buckets up to date, and float seconds keep that to a few instructions where `Duration`
/// arithmetic cost several times as many (nanosecond resolution holds for years of uptime).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenBucket {
    /// Most it holds: the per-minute figure.
    capacity: f64,
    /// What it gains per second: `capacity / 60`.
    rate: f64,
    /// What it holds now (negative: in debt).
    level: f64,
    /// When `level` was last brought up to date, in seconds.
    updated: f64,
}

impl TokenBucket {
    /// A full bucket of `per_minute` at `now`.
    pub fn new(per_minute: u64, now: Duration) -> Self {
        let capacity = per_minute as f64;
        Self {
            capacity,
            rate: capacity / 60.0,
            level: capacity,
            updated: now.as_secs_f64(),
        }
    }

    /// Brings the level up to `now` (seconds); a time before the last one changes nothing.
    fn refill(&mut self, now: f64) {
        let dt = now - self.updated;
        if dt > 0.0 {
            self.level = (self.level + dt * self.rate).min(self.capacity);
            self.updated = now;
        }
    }

    /// Seconds until `n` can be taken at `now` (seconds; zero: at once). More than the
    /// capacity can be taken when the bucket is full, so no request is refused forever.
    fn wait_secs(&mut self, n: f64, now: f64) -> f64 {
        self.refill(now);
        let need = n.min(self.capacity);
        if self.level >= need {
            return 0.0;
        }
        if self.capacity <= 0.0 {
            return 60.0;
        }
        (need - self.level) * 60.0 / self.capacity
    }

    /// Takes `n` (once the bucket holds enough; see [`RateLimit::try_acquire`]).
    pub fn take(&mut self, n: f64) {
        self.level -= n;
    }

    /// Gives back `n` (an estimate that was too high); negative `n` takes more.
    pub fn give_back(&mut self, n: f64) {
        self.level = (self.level + n).min(self.capacity);
    }

    /// What is left, rounded down, never below zero.
    pub fn remaining(&self) -> u64 {
        self.level.max(0.0) as u64
    }

    /// How long until it is full again.
    pub fn until_full(&self) -> Duration {
        if self.capacity <= 0.0 {
            return Duration::ZERO;
        }
        // Whole nanoseconds by a saturating cast: read per admitted request (the reset
        // headers), where `from_secs_f64`'s checks cost more than the rest of the grant.
        let secs = (self.capacity - self.level).max(0.0) * 60.0 / self.capacity;
        Duration::from_nanos((secs * 1e9) as u64)
    }

    /// Its per-minute figure.
    pub fn capacity(&self) -> u64 {
        self.capacity as u64
    }
}

/// The limits as configured; `None`: no such limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitSpec {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens (prompt plus output) per minute.
    pub tpm: Option<u64>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
}

impl RateLimitSpec {
    /// Whether it limits anything.
    pub fn is_set(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.max_concurrent.is_some()
    }
}

/// Live state of one set of limits.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Requests per minute.
    requests: Option<TokenBucket>,
    /// Tokens per minute.
    tokens: Option<TokenBucket>,
    /// Cap on requests in flight.
    max_concurrent: Option<u32>,
    /// Requests in flight now.
    in_flight: u32,
}

/// What a granted request learns of the limits it passed: what its `x-ratelimit-*` headers
/// say. (The token limit is the caller's own `tpm`, and the token bucket's reset is not
/// sent: each header costs every keyed answer.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grant {
    /// Requests per minute allowed, if limited.
    pub limit_requests: Option<u64>,
    /// Requests left in the bucket.
    pub remaining_requests: Option<u64>,
    /// Tokens left in the bucket.
    pub remaining_tokens: Option<u64>,
    /// How long until the request bucket is full again.
    pub reset_requests: Option<Duration>,
}

/// Why a request was refused, and when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttle {
    /// Which limit: `"rpm"`, `"tpm"` or `"max_concurrent"`.
    pub limit: &'static str,
    /// When a retry may pass (for `Retry-After`).
    pub retry_after: Duration,
}

/// How long a client refused for concurrency is told to wait: requests end at unknown times.
const CONCURRENCY_RETRY: Duration = Duration::from_secs(1);

impl RateLimit {
    /// Fresh limits per `spec` at `now`.
    pub fn new(spec: RateLimitSpec, now: Duration) -> Self {
        Self {
            requests: spec.rpm.map(|n| TokenBucket::new(n, now)),
            tokens: spec.tpm.map(|n| TokenBucket::new(n, now)),
            max_concurrent: spec.max_concurrent,
            in_flight: 0,
        }
    }

    /// The state of the limits without taking anything.
    pub fn grant(&self) -> Grant {
        Grant {
            limit_requests: self.requests.map(|b| b.capacity()),
            remaining_requests: self.requests.map(|b| b.remaining()),
            remaining_tokens: self.tokens.map(|b| b.remaining()),
            reset_requests: self.requests.map(|b| b.until_full()),
        }
    }

    /// Whether one more request estimated at `tokens` may go at `now`; if so it is counted
    /// (one request, `tokens` tokens, one in flight until [`RateLimit::release`]). What the
    /// caller needs for its headers, [`RateLimit::grant`] says after.
    pub fn try_acquire(&mut self, tokens: u32, now: Duration) -> Result<(), Throttle> {
        let now = now.as_secs_f64();
        // The longest wait of the two buckets, in seconds; under a nanosecond is none, as a
        // `Duration` would have it.
        const NONE: f64 = 1e-9;
        let mut refused: Option<(&'static str, f64)> = None;
        if let Some(b) = &mut self.requests {
            let w = b.wait_secs(1.0, now);
            if w >= NONE {
                refused = Some(("rpm", w));
            }
        }
        if let Some(b) = &mut self.tokens {
            let w = b.wait_secs(f64::from(tokens), now);
            if w >= NONE && refused.is_none_or(|(_, r)| w > r) {
                refused = Some(("tpm", w));
            }
        }
        if let Some((limit, secs)) = refused {
            return Err(Throttle {
                limit,
                retry_after: Duration::from_secs_f64(secs),
            });
        }
        if self.max_concurrent.is_some_and(|m| self.in_flight >= m) {
            return Err(Throttle {
                limit: "max_concurrent",
                retry_after: CONCURRENCY_RETRY,
            });
        }
        if let Some(b) = &mut self.requests {
            b.take(1.0);
        }
        if let Some(b) = &mut self.tokens {
            b.take(f64::from(tokens));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Undoes a grant that was not used (another limit refused the request).
    pub fn undo(&mut self, tokens: u32) {
        if let Some(b) = &mut self.requests {
            b.give_back(1.0);
        }
        if let Some(b) = &mut self.tokens {
            b.give_back(f64::from(tokens));
        }
        self.release();
    }

    /// A granted request ended.
    pub fn release(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A request estimated at `estimated` tokens used `actual`: the token bucket gets the
    /// difference back, or pays it.
    pub fn reconcile(&mut self, estimated: u32, actual: u32, now: Duration) {
        if let Some(b) = &mut self.tokens {
            b.refill(now.as_secs_f64());
            b.give_back(f64::from(estimated) - f64::from(actual));
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn rpm_refuses_past_the_minute_figure_and_refills() {
        let spec = RateLimitSpec {
            rpm: Some(2),
            ..Default::default()
        };
        let mut l = RateLimit::new(spec, s(0.0));
        l.try_acquire(0, s(0.0)).unwrap();
        let g = l.grant();
        assert_eq!((g.limit_requests, g.remaining_requests), (Some(2), Some(1)));
        l.try_acquire(0, s(0.0)).unwrap();
        let t = l.try_acquire(0, s(0.0)).unwrap_err();
        assert_eq!(t.limit, "rpm");
        assert_eq!(t.retry_after, s(30.0), "one request refills in 60 s / 2");
        assert!(l.try_acquire(0, s(29.0)).is_err());
        assert!(l.try_acquire(0, s(30.0)).is_ok());
    }

    #[test]
    fn tpm_reconciles_with_real_usage() {
        let spec = RateLimitSpec {
            tpm: Some(1000),
            ..Default::default()
        };
        let mut l = RateLimit::new(spec, s(0.0));
        l.try_acquire(600, s(0.0)).unwrap();
        assert_eq!(l.try_acquire(600, s(0.0)).unwrap_err().limit, "tpm");
        // The first used only 100: 500 come back and the second fits.
        l.reconcile(600, 100, s(0.0));
        assert!(l.try_acquire(600, s(0.0)).is_ok());
        // A request larger than the whole bucket goes when the bucket is full.
        let mut big = RateLimit::new(spec, s(0.0));
        assert!(big.try_acquire(5000, s(0.0)).is_ok());
        assert!(big.try_acquire(1, s(1.0)).is_err(), "in debt");
    }

    #[test]
    fn concurrency_counts_until_released() {
        let spec = RateLimitSpec {
            max_concurrent: Some(1),
            ..Default::default()
        };
        let mut l = RateLimit::new(spec, s(0.0));
        l.try_acquire(10, s(0.0)).unwrap();
        assert_eq!(
            l.try_acquire(10, s(0.0)).unwrap_err().limit,
            "max_concurrent"
        );
        l.release();
        assert!(l.try_acquire(10, s(0.0)).is_ok());
    }

    #[test]
    fn undo_gives_everything_back() {
        let spec = RateLimitSpec {
            rpm: Some(1),
            tpm: Some(100),
            max_concurrent: Some(1),
        };
        let mut l = RateLimit::new(spec, s(0.0));
        l.try_acquire(50, s(0.0)).unwrap();
        l.undo(50);
        l.try_acquire(50, s(0.0)).unwrap();
        assert_eq!(l.grant().remaining_tokens, Some(50));
    }
}
