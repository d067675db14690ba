//! The wait between two attempts of one request: exponential backoff with full jitter, raised
//! to a backend's `Retry-After` when it sent one, and always bounded.
//!
//! Attempt `n` (n = 1 for the first retry) waits a uniform draw in `[0, min(max, base x
//! 2^(n-1))]` ("full jitter", which spreads the retries of many requests that failed together
//! so they do not arrive as a wave). When the failed answer carried `Retry-After`, the wait is
//! at least that long, but never more than `max`: a request would rather fail over to another
//! backend than sleep on one backend's word. Pure: the random bits are a parameter.

use std::time::Duration;

/// Default base of the exponential.
pub const DEFAULT_BASE: Duration = Duration::from_millis(25);
/// Default cap on one wait.
pub const DEFAULT_MAX: Duration = Duration::from_millis(250);

/// The wait before retry number `retry` (1-based); `random` is 64 uniform random bits.
pub fn delay(
    retry: u32,
    base: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    random: u64,
) -> Duration {
    if retry == 0 {
        return Duration::ZERO;
    }
    let ceiling = base.saturating_mul(1u32 << (retry - 1).min(20)).min(max);
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    let jittered = ceiling.mul_f64(unit);
    match retry_after {
        Some(ra) => jittered.max(ra).min(max),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn grows_exponentially_with_full_jitter_under_the_cap() {
        let top = u64::MAX;
        assert_eq!(delay(0, MS(25), MS(250), None, top), Duration::ZERO);
        let d1 = delay(1, MS(25), MS(250), None, top);
        let d3 = delay(3, MS(25), MS(250), None, top);
        assert!(d1 <= MS(25) && d1 > MS(24), "{d1:?}");
        assert!(d3 <= MS(100) && d3 > MS(99), "{d3:?}");
        assert!(delay(40, MS(25), MS(250), None, top) <= MS(250));
        assert_eq!(delay(3, MS(25), MS(250), None, 0), Duration::ZERO);
        let half = delay(3, MS(25), MS(250), None, u64::MAX / 2);
        assert!(half > MS(49) && half < MS(51), "{half:?}");
    }

    #[test]
    fn retry_after_raises_the_wait_but_not_past_the_cap() {
        assert_eq!(delay(1, MS(25), MS(250), Some(MS(100)), 0), MS(100));
        assert_eq!(
            delay(1, MS(25), MS(250), Some(Duration::from_secs(30)), 0),
            MS(250)
        );
    }
}
