//! A peak-sensitive exponentially weighted moving average, with time as a parameter.
//!
//! Latency averages steer load, so they must rise at once when a backend slows down and fall
//! back gradually when it recovers: a sample above the current value replaces it (the peak),
//! a sample below is blended in with a weight that depends on the time since the last sample,
//! `w = exp(-elapsed / decay)`. This is the "peak EWMA" of Finagle and Linkerd's balancers.
//! Without new samples the value stays where it is: an idle backend keeps its last known
//! latency rather than looking fast for free.

use std::time::Duration;

/// Default decay time constant: ten seconds, as Linkerd uses.
pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

/// A peak-sensitive moving average of a non-negative quantity (seconds, usually).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    value: f64,
    /// Time of the last sample; `None` before the first.
    at: Option<Duration>,
    decay_s: f64,
}

impl PeakEwma {
    /// An empty average that forgets with time constant `decay`.
    pub fn new(decay: Duration) -> Self {
        Self {
            value: 0.0,
            at: None,
            decay_s: decay.as_secs_f64().max(1e-9),
        }
    }

    /// Adds a sample observed at `now`.
    pub fn observe(&mut self, sample: f64, now: Duration) {
        if !sample.is_finite() || sample < 0.0 {
            return;
        }
        match self.at {
            None => self.value = sample,
            Some(_) if sample > self.value => self.value = sample,
            Some(at) => {
                let elapsed = now.saturating_sub(at).as_secs_f64();
                let w = (-elapsed / self.decay_s).exp();
                self.value = self.value * w + sample * (1.0 - w);
            }
        }
        self.at = Some(now);
    }

    /// The average, or `None` before the first sample.
    pub fn get(&self) -> Option<f64> {
        self.at.map(|_| self.value)
    }
}

impl Default for PeakEwma {
    fn default() -> Self {
        Self::new(DEFAULT_DECAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn empty_until_the_first_sample() {
        let mut e = PeakEwma::default();
        assert_eq!(e.get(), None);
        e.observe(0.2, s(1.0));
        assert_eq!(e.get(), Some(0.2));
    }

    #[test]
    fn a_peak_is_taken_at_once_and_forgotten_gradually() {
        let mut e = PeakEwma::new(Duration::from_secs(10));
        e.observe(0.1, s(0.0));
        e.observe(2.0, s(0.1));
        assert_eq!(e.get(), Some(2.0), "a slower sample replaces the average");
        e.observe(0.1, s(0.2));
        let v = e.get().unwrap();
        assert!(v > 1.9, "one fast sample 0.1 s later barely moves it: {v}");
        e.observe(0.1, s(60.0));
        let v = e.get().unwrap();
        assert!(v < 0.11, "a minute later the fast sample dominates: {v}");
    }

    #[test]
    fn nonsense_samples_are_ignored() {
        let mut e = PeakEwma::default();
        e.observe(f64::NAN, s(0.0));
        e.observe(-1.0, s(0.0));
        assert_eq!(e.get(), None);
    }
}
