//! A retry budget: retries may add at most a fixed share to the requests a pool receives.
//!
//! Counting retries per request ("up to 3 attempts") lets an outage triple the load on the
//! backends that are left, just when they can least take it. A budget bounds the total
//! instead: over a sliding window, retries may be at most `ratio x requests`, with a floor of
//! `min_per_second x window` so that a quiet pool can still fail over. This is the scheme
//! Finagle and Linkerd use. Time is a parameter; the window is kept in one-second buckets.

use std::sync::Mutex;
use std::time::Duration;

/// Seconds of history the budget looks at.
pub const WINDOW_SECONDS: u64 = 10;
/// Default share of requests that may be retried.
pub const DEFAULT_RATIO: f64 = 0.2;
/// Default retries per second always allowed.
pub const DEFAULT_MIN_PER_SECOND: f64 = 10.0;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    second: u64,
    requests: u64,
    retries: u64,
}

/// A thread-safe retry budget.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_second: f64,
    buckets: Mutex<[Bucket; WINDOW_SECONDS as usize]>,
}

impl RetryBudget {
    /// A budget allowing `ratio` of requests as retries, and at least `min_per_second`.
    pub fn new(ratio: f64, min_per_second: f64) -> Self {
        Self {
            ratio: ratio.max(0.0),
            min_per_second: min_per_second.max(0.0),
            buckets: Mutex::new([Bucket::default(); WINDOW_SECONDS as usize]),
        }
    }

    fn with_bucket<T>(&self, now: Duration, f: impl FnOnce(&mut Bucket, u64, u64) -> T) -> T {
        let second = now.as_secs();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let live = |b: &Bucket| b.second + WINDOW_SECONDS > second;
        let (requests, retries) = buckets
            .iter()
            .filter(|b| live(b) && b.second != second)
            .fold((0, 0), |(q, r), b| (q + b.requests, r + b.retries));
        let slot = &mut buckets[(second % WINDOW_SECONDS) as usize];
        if slot.second != second {
            *slot = Bucket {
                second,
                requests: 0,
                retries: 0,
            };
        }
        f(slot, requests, retries)
    }

    /// Records a new request (its first attempt).
    pub fn deposit(&self, now: Duration) {
        self.with_bucket(now, |b, _, _| b.requests += 1);
    }

    /// Gives back a retry taken at about `now` that was not made after all (its backend
    /// refused it at dispatch). Taken from the current second's count; a retry taken in an
    /// earlier second stays counted.
    pub fn refund(&self, now: Duration) {
        self.with_bucket(now, |b, _, _| b.retries = b.retries.saturating_sub(1));
    }

    /// Takes one retry from the budget if it has room; false means do not retry.
    pub fn try_withdraw(&self, now: Duration) -> bool {
        let (ratio, floor) = (self.ratio, self.min_per_second * WINDOW_SECONDS as f64);
        self.with_bucket(now, |b, requests, retries| {
            let allowed = (ratio * (requests + b.requests) as f64).max(floor);
            if ((retries + b.retries) as f64) < allowed {
                b.retries += 1;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn retries_are_bounded_by_the_share_of_requests() {
        let b = RetryBudget::new(0.2, 0.0);
        for _ in 0..100 {
            b.deposit(at(500));
        }
        let granted = (0..100).filter(|_| b.try_withdraw(at(600))).count();
        assert_eq!(granted, 20);
    }

    #[test]
    fn a_refunded_retry_can_be_taken_again() {
        let b = RetryBudget::new(0.0, 0.1);
        assert!(b.try_withdraw(at(100)), "the floor allows one in 10 s");
        assert!(!b.try_withdraw(at(200)));
        b.refund(at(300));
        assert!(b.try_withdraw(at(400)));
        assert!(!b.try_withdraw(at(500)));
    }

    #[test]
    fn the_floor_lets_a_quiet_pool_fail_over() {
        let b = RetryBudget::new(0.2, 1.0);
        b.deposit(at(0));
        let granted = (0..50).filter(|_| b.try_withdraw(at(10))).count();
        assert_eq!(granted, 10, "1 per second over a 10 s window");
    }

    #[test]
    fn old_requests_and_retries_leave_the_window() {
        let b = RetryBudget::new(0.5, 0.0);
        for _ in 0..10 {
            b.deposit(at(0));
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw(at(0))).count(), 5);
        // Eleven seconds later both the requests and the retries have aged out.
        assert!(!b.try_withdraw(at(11_000)));
        for _ in 0..4 {
            b.deposit(at(11_000));
        }
        assert_eq!((0..10).filter(|_| b.try_withdraw(at(11_500))).count(), 2);
    }
}
