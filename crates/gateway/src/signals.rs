//! A backend's live signals beyond its in-flight count: tokens in flight, the gateway's own
//! latency averages, and the engine's and GPU exporter's last scraped reports with their time.
//!
//! Writers: dispatch and the response relay ([`crate::body`]) for tokens and latencies, the
//! scraper ([`crate::scrape`]) for reports. Reader: [`crate::fleet::Pool::view`], once per
//! decision and backend, so reads are lock-free atomics. The latency averages are updated
//! under a mutex held for a few arithmetic operations (never across an `.await`) and then
//! published to atomics, which is what decisions read.
//!
//! Times are gateway time ([`crate::clock::now`]). Fields of one report are stored in separate
//! atomics; a reader racing a writer may mix two consecutive reports of the same engine, which
//! is harmless for a load estimate and cheaper than a lock on every decision.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use switchyard_core::{EngineLoad, GpuLoad, LatencySignals, PeakEwma, RequestProfile};

use crate::scrape::{EngineSample, GpuSample};

/// Output tokens assumed for a request that sets no `max_tokens`: a typical chat answer. Only
/// load estimates use it; nothing is sent upstream.
pub const DEFAULT_EXPECTED_OUTPUT_TOKENS: u32 = 256;

/// What a request will occupy on a backend, in tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenLoad {
    /// Its prompt (estimated): prefill work until its first token.
    pub prompt: u64,
    /// Its prompt plus its expected output: KV it holds until it ends.
    pub total: u64,
}

/// The tokens a request will occupy: its prompt plus `max_tokens` (or
/// [`DEFAULT_EXPECTED_OUTPUT_TOKENS`]).
pub fn expected_tokens(profile: &RequestProfile) -> TokenLoad {
    let prompt = u64::from(profile.estimated_input_tokens);
    TokenLoad {
        prompt,
        total: prompt
            + u64::from(
                profile
                    .max_output_tokens
                    .unwrap_or(DEFAULT_EXPECTED_OUTPUT_TOKENS),
            ),
    }
}

/// `u32::MAX` marks "not reported" in the f32-bit atomics.
const NONE_BITS: u32 = u32::MAX;

/// Live signals of one backend.
#[derive(Debug, Default)]
pub struct LiveSignals {
    /// Prompt plus expected output tokens of requests in flight.
    in_flight_tokens: AtomicU64,
    /// Prompt tokens of requests in flight that have not produced a first byte yet: the
    /// prefill queued ahead of a new request.
    prefill_tokens: AtomicU64,
    engine_running: AtomicU32,
    engine_waiting: AtomicU32,
    engine_kv_bits: AtomicU32,
    /// KV capacity in tokens; 0 when not reported.
    engine_kv_capacity: AtomicU32,
    /// Gateway time of the engine report in milliseconds, plus one; 0 = never reported.
    engine_at_ms: AtomicU64,
    gpu_util_bits: AtomicU32,
    gpu_mem_bits: AtomicU32,
    gpu_temp_bits: AtomicU32,
    gpu_at_ms: AtomicU64,
    latency: Mutex<Averages>,
    /// The averages as last published, for lock-free reads.
    published: Published,
}

/// Lock-free copies of the latency averages (`f32` bits; [`NONE_BITS`] before the first
/// sample), in the order latency, TTFT, time per output token.
#[derive(Debug)]
struct Published([AtomicU32; 3]);

impl Default for Published {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU32::new(NONE_BITS)))
    }
}

impl Published {
    fn store(&self, a: &Averages) {
        for (slot, avg) in self.0.iter().zip([&a.latency, &a.ttft, &a.tpot]) {
            let bits = avg.get().map_or(NONE_BITS, |v| (v as f32).to_bits());
            slot.store(bits, Ordering::Relaxed);
        }
    }

    fn load(&self, i: usize) -> Option<f32> {
        let bits = self.0[i].load(Ordering::Relaxed);
        (bits != NONE_BITS).then(|| f32::from_bits(bits))
    }
}

#[derive(Debug, Default)]
struct Averages {
    latency: PeakEwma,
    ttft: PeakEwma,
    tpot: PeakEwma,
}

fn stamp(now: Duration) -> u64 {
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX - 1) + 1
}

/// Age of a report stamped `at` (0 = never), if it is no older than `max_age`.
fn fresh(at: u64, now: Duration, max_age: Duration) -> Option<Duration> {
    if at == 0 {
        return None;
    }
    let age = now.saturating_sub(Duration::from_millis(at - 1));
    (age <= max_age).then_some(age)
}

impl LiveSignals {
    /// Counts a dispatched request's tokens.
    pub fn add_tokens(&self, tokens: u64) {
        self.in_flight_tokens.fetch_add(tokens, Ordering::Relaxed);
    }

    /// Releases a finished request's tokens.
    pub fn remove_tokens(&self, tokens: u64) {
        // Saturating: a reload can never make the count wrap below zero.
        let _ = self
            .in_flight_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(tokens))
            });
    }

    /// Tokens in flight now.
    pub fn in_flight_tokens(&self) -> u64 {
        self.in_flight_tokens.load(Ordering::Relaxed)
    }

    /// Counts a dispatched request's prompt as waiting for prefill.
    pub fn add_prefill(&self, tokens: u64) {
        self.prefill_tokens.fetch_add(tokens, Ordering::Relaxed);
    }

    /// A request's prompt is past prefill (first byte seen) or the request ended.
    pub fn remove_prefill(&self, tokens: u64) {
        let _ = self
            .prefill_tokens
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_sub(tokens))
            });
    }

    /// Prompt tokens waiting for their first byte now.
    pub fn prefill_tokens(&self) -> u64 {
        self.prefill_tokens.load(Ordering::Relaxed)
    }

    /// Records an engine report taken at `now`.
    pub fn set_engine(&self, s: &EngineSample, now: Duration) {
        self.engine_running.store(s.running, Ordering::Relaxed);
        self.engine_waiting.store(s.waiting, Ordering::Relaxed);
        self.engine_kv_bits.store(
            s.kv_usage.map_or(NONE_BITS, f32::to_bits),
            Ordering::Relaxed,
        );
        self.engine_kv_capacity
            .store(s.kv_capacity_tokens.unwrap_or(0), Ordering::Relaxed);
        self.engine_at_ms.store(stamp(now), Ordering::Release);
    }

    /// Records a GPU report taken at `now`.
    pub fn set_gpu(&self, g: &GpuSample, now: Duration) {
        self.gpu_util_bits
            .store(g.utilization.to_bits(), Ordering::Relaxed);
        self.gpu_mem_bits
            .store(g.memory_used.to_bits(), Ordering::Relaxed);
        self.gpu_temp_bits
            .store(g.temperature_c.to_bits(), Ordering::Relaxed);
        self.gpu_at_ms.store(stamp(now), Ordering::Release);
    }

    /// The engine's last report, if it is no older than `max_age`: stale reports stop
    /// counting and policies fall back to the gateway's own counters.
    pub fn engine(&self, now: Duration, max_age: Duration) -> Option<EngineLoad> {
        let age = fresh(self.engine_at_ms.load(Ordering::Acquire), now, max_age)?;
        let kv = self.engine_kv_bits.load(Ordering::Relaxed);
        let cap = self.engine_kv_capacity.load(Ordering::Relaxed);
        Some(EngineLoad {
            running: self.engine_running.load(Ordering::Relaxed),
            waiting: self.engine_waiting.load(Ordering::Relaxed),
            kv_usage: if kv == NONE_BITS {
                0.0
            } else {
                f32::from_bits(kv)
            },
            kv_capacity_tokens: (cap > 0).then_some(cap),
            age,
        })
    }

    /// The GPU exporter's last report, if it is no older than `max_age`.
    pub fn gpu(&self, now: Duration, max_age: Duration) -> Option<GpuLoad> {
        let age = fresh(self.gpu_at_ms.load(Ordering::Acquire), now, max_age)?;
        Some(GpuLoad {
            utilization: f32::from_bits(self.gpu_util_bits.load(Ordering::Relaxed)),
            memory_used: f32::from_bits(self.gpu_mem_bits.load(Ordering::Relaxed)),
            temperature_c: f32::from_bits(self.gpu_temp_bits.load(Ordering::Relaxed)),
            age,
        })
    }

    fn averages(&self) -> std::sync::MutexGuard<'_, Averages> {
        self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A response's first byte arrived `ttft` after its request.
    pub fn observe_ttft(&self, ttft: Duration, now: Duration) {
        let mut a = self.averages();
        a.ttft.observe(ttft.as_secs_f64(), now);
        self.published.store(&a);
    }

    /// A response finished `latency` after its request; `tpot` when it was a stream of
    /// several tokens.
    pub fn observe_done(&self, latency: Duration, tpot: Option<Duration>, now: Duration) {
        let mut a = self.averages();
        a.latency.observe(latency.as_secs_f64(), now);
        if let Some(t) = tpot {
            a.tpot.observe(t.as_secs_f64(), now);
        }
        self.published.store(&a);
    }

    /// The latency averages, read without a lock.
    pub fn latency(&self) -> LatencySignals {
        LatencySignals {
            latency_s: self.published.load(0),
            ttft_s: self.published.load(1),
            tpot_s: self.published.load(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn stale_engine_reports_stop_counting() {
        let s = LiveSignals::default();
        assert_eq!(s.engine(ms(0), ms(1000)), None, "never reported");
        let sample = EngineSample {
            running: 3,
            waiting: 2,
            kv_usage: Some(0.5),
            kv_capacity_tokens: Some(1000),
        };
        s.set_engine(&sample, ms(100));
        let e = s.engine(ms(600), ms(1000)).unwrap();
        assert_eq!(
            (e.running, e.waiting, e.kv_capacity_tokens),
            (3, 2, Some(1000))
        );
        assert_eq!(e.age, ms(500));
        assert_eq!(s.engine(ms(1101), ms(1000)), None, "older than max_age");
    }

    #[test]
    fn tokens_in_flight_never_wrap() {
        let s = LiveSignals::default();
        s.add_tokens(100);
        s.remove_tokens(30);
        assert_eq!(s.in_flight_tokens(), 70);
        s.remove_tokens(500);
        assert_eq!(s.in_flight_tokens(), 0);
    }

    #[test]
    fn latency_averages_appear_with_their_first_sample() {
        let s = LiveSignals::default();
        assert_eq!(s.latency(), LatencySignals::default());
        s.observe_ttft(ms(200), ms(1));
        s.observe_done(ms(900), Some(ms(20)), ms(2));
        let l = s.latency();
        assert_eq!(l.ttft_s, Some(0.2));
        assert_eq!(l.latency_s, Some(0.9));
        assert_eq!(l.tpot_s, Some(0.02));
    }
}
