//! What an engine reports about itself: the numbers vLLM exports on `/metrics` (queue lengths,
//! KV usage, prefix-cache counters) and GPU gauges (what DCGM or `nvidia-smi` would show).
//!
//! The GPU gauges come from a deliberately simple model:
//!
//! - **utilization** is the fraction of time a step was running, averaged exponentially over
//!   [`GpuModel::util_window_s`] (≈ `nvidia-smi`'s "a kernel was executing" percentage);
//! - **temperature** follows utilization with a first-order lag: it moves toward
//!   `idle + (load - idle) * utilization` with time constant
//!   [`GpuModel::thermal_time_constant_s`];
//! - **framebuffer** use is constant: vLLM allocates weights, activation space and the whole KV
//!   cache at start-up, so memory in use does not follow load (KV use is `kv_usage`).

use serde::Serialize;

use crate::config::GpuModel;

/// GPU gauges of one engine (one GPU; under tensor parallelism every GPU shows about the same).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GpuGauges {
    /// Percent of recent time the GPU was busy, 0..100.
    pub utilization_pct: f64,
    /// Framebuffer in use, MiB.
    pub memory_used_mib: u32,
    /// Framebuffer free, MiB.
    pub memory_free_mib: u32,
    /// Die temperature, °C.
    pub temperature_c: f64,
}

/// A snapshot of an engine's metrics at a time, as a scrape of its `/metrics` would return.
/// The engine applies a step's effects when the step starts, so a snapshot taken while a step
/// runs already shows them (a real engine would show them a few milliseconds later).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EngineMetrics {
    /// When the snapshot was taken (seconds, the caller's epoch).
    pub at: f64,
    /// Requests being computed (vLLM `num_requests_running`).
    pub num_running: u32,
    /// Requests queued for KV space or a batch slot (vLLM `num_requests_waiting`).
    pub num_waiting: u32,
    /// Fraction of KV blocks in use by requests, 0..1 (vLLM `kv_cache_usage_perc`).
    pub kv_usage: f64,
    /// Prompt tokens looked up in the prefix cache, counted per admission
    /// (vLLM `prefix_cache_queries`).
    pub prefix_cache_queries: u64,
    /// Of those, tokens found cached (vLLM `prefix_cache_hits`).
    pub prefix_cache_hits: u64,
    /// KV blocks in the cache.
    pub num_gpu_blocks: u32,
    /// Tokens per KV block.
    pub block_size: u32,
    /// Preemptions so far (vLLM `num_preemptions`).
    pub preemptions_total: u64,
    /// Cached blocks overwritten by new content so far.
    pub evicted_blocks_total: u64,
    /// Prompt tokens of requests admitted so far (first admission only).
    pub prompt_tokens_total: u64,
    /// Output tokens generated so far (vLLM `generation_tokens`).
    pub generation_tokens_total: u64,
    /// Requests finished so far.
    pub requests_finished_total: u64,
    /// Steps run so far.
    pub steps_total: u64,
    /// Seconds spent in steps so far.
    pub busy_seconds_total: f64,
    /// The GPU gauges.
    pub gpu: GpuGauges,
}

impl EngineMetrics {
    /// Fraction of looked-up prompt tokens found cached, 0..1 (0 before any lookup).
    pub fn prefix_cache_hit_rate(&self) -> f64 {
        if self.prefix_cache_queries == 0 {
            0.0
        } else {
            self.prefix_cache_hits as f64 / self.prefix_cache_queries as f64
        }
    }
}

/// The state behind the utilization and temperature gauges, advanced step by step.
#[derive(Debug, Clone)]
pub(crate) struct GpuState {
    model: GpuModel,
    /// Exponentially averaged busy fraction at `at`.
    util: f64,
    /// Temperature at `at`.
    temp: f64,
    /// When `util` and `temp` were last brought up to date.
    at: f64,
}

impl GpuState {
    pub(crate) fn new(model: GpuModel) -> Self {
        Self {
            model,
            util: 0.0,
            temp: model.idle_temp_c,
            at: 0.0,
        }
    }

    /// `(util, temp)` after `dt` seconds at busy fraction `busy` (0 or 1) from `(util, temp)`.
    fn evolve(&self, util: f64, temp: f64, dt: f64, busy: f64) -> (f64, f64) {
        if dt <= 0.0 {
            return (util, temp);
        }
        let m = &self.model;
        let ku = (-dt / m.util_window_s.max(1e-9)).exp();
        let util = busy + (util - busy) * ku;
        // Temperature chases the target of the mean utilization over the interval.
        let target = m.idle_temp_c + (m.load_temp_c - m.idle_temp_c) * 0.5 * (util + busy);
        let kt = (-dt / m.thermal_time_constant_s.max(1e-9)).exp();
        (util, target + (temp - target) * kt)
    }

    /// Records a step from `start` to `end`, idle since the last update.
    pub(crate) fn on_step(&mut self, start: f64, end: f64) {
        let (u, t) = self.evolve(self.util, self.temp, start - self.at, 0.0);
        let (u, t) = self.evolve(u, t, end - start.max(self.at), 1.0);
        self.util = u;
        self.temp = t;
        self.at = self.at.max(end);
    }

    /// The gauges at `now`, idle since the last step (a time before the last step's end reads
    /// the state at its end).
    pub(crate) fn gauges(&self, now: f64) -> GpuGauges {
        let (u, t) = self.evolve(self.util, self.temp, now - self.at, 0.0);
        let m = &self.model;
        GpuGauges {
            utilization_pct: (u * 100.0).clamp(0.0, 100.0),
            memory_used_mib: m.memory_used_mib.min(m.memory_total_mib),
            memory_free_mib: m.memory_total_mib.saturating_sub(m.memory_used_mib),
            temperature_c: t,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> GpuModel {
        GpuModel {
            memory_total_mib: 1000,
            memory_used_mib: 900,
            idle_temp_c: 30.0,
            load_temp_c: 70.0,
            thermal_time_constant_s: 10.0,
            util_window_s: 1.0,
        }
    }

    #[test]
    fn busy_heats_and_fills_idle_cools_and_drains() {
        let mut g = GpuState::new(model());
        assert_eq!(g.gauges(0.0).utilization_pct, 0.0);
        assert_eq!(g.gauges(0.0).temperature_c, 30.0);
        let mut t = 0.0;
        while t < 60.0 {
            g.on_step(t, t + 0.01);
            t += 0.01;
        }
        let hot = g.gauges(t);
        assert!(hot.utilization_pct > 99.0, "{hot:?}");
        assert!(hot.temperature_c > 69.0, "{hot:?}");
        assert_eq!((hot.memory_used_mib, hot.memory_free_mib), (900, 100));
        let cold = g.gauges(t + 100.0);
        assert!(cold.utilization_pct < 1.0, "{cold:?}");
        assert!(cold.temperature_c < 31.0, "{cold:?}");
        // Half busy settles half way.
        let mut g = GpuState::new(model());
        let mut t = 0.0;
        while t < 100.0 {
            g.on_step(t, t + 0.01);
            t += 0.02;
        }
        let half = g.gauges(t);
        assert!((40.0..60.0).contains(&half.utilization_pct), "{half:?}");
        assert!((45.0..55.0).contains(&half.temperature_c), "{half:?}");
    }
}
