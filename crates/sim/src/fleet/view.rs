//! What the virtual-time fleet shows a policy of one backend: the gateway's own live signals
//! ([`Live`]) and, from the last scrape, the engine's load and the GPU gauges with their age.

use std::time::Duration;

use switchyard_core::{
    BackendId, BackendView, CacheModel, EngineLoad, GpuLoad, LatencySignals, PeakEwma,
};

use super::BackendSpec;
use crate::config::EngineConfig;
use crate::metrics::EngineMetrics;

/// What a gateway measures of one backend from its own traffic.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Live {
    /// Prompt plus max output tokens of requests dispatched and not done.
    pub(super) in_flight_tokens: u64,
    /// Prompt tokens of requests not yet past their first token.
    pub(super) prefill_tokens: u64,
    /// Time to first token from dispatch.
    pub(super) ttft: PeakEwma,
    /// Dispatch to last token.
    pub(super) e2e: PeakEwma,
    /// Time per output token after the first.
    pub(super) tpot: PeakEwma,
}

impl Live {
    pub(super) fn latency(&self) -> LatencySignals {
        LatencySignals {
            latency_s: self.e2e.get().map(|v| v as f32),
            ttft_s: self.ttft.get().map(|v| v as f32),
            tpot_s: self.tpot.get().map(|v| v as f32),
        }
    }
}

/// What the policy sees of backend `i` at time `now` from config and scrapes: the driver's
/// live in-flight count, usability from the concurrency cap and the last scraped metrics, and
/// those metrics themselves (engine load, KV size, GPU gauges) with their age, as a gateway
/// scraping `/metrics` and a DCGM exporter would see them.
pub(super) fn backend_view(
    i: usize,
    spec: &BackendSpec,
    (in_flight, prefill_tokens): (u32, u64),
    scraped: &EngineMetrics,
    now: f64,
    cap_only: bool,
) -> BackendView {
    let under_cap = spec.max_in_flight.is_none_or(|cap| in_flight < cap)
        && (cap_only
            || spec
                .max_prefill_tokens
                .is_none_or(|cap| prefill_tokens < cap));
    let queue_ok = cap_only
        || spec
            .max_waiting
            .is_none_or(|limit| scraped.num_waiting < limit);
    BackendView {
        in_flight,
        usable: under_cap && queue_ok,
        engine: Some(EngineLoad {
            running: scraped.num_running,
            waiting: scraped.num_waiting,
            kv_usage: scraped.kv_usage as f32,
            kv_capacity_tokens: u32::try_from(
                u64::from(spec.engine.num_gpu_blocks) * u64::from(spec.engine.block_size),
            )
            .ok(),
            age: Duration::from_secs_f64((now - scraped.at).max(0.0)),
        }),
        gpu: Some(gpu_load(scraped, now)),
        cache: cache_model(&spec.engine),
        ..BackendView::idle(BackendId(i as u32), spec.weight)
    }
}

/// What a gateway that detected the engine would assume it caches: a llama.cpp-like engine's
/// slots (its `/props`), else a paged prefix cache.
pub fn cache_model(engine: &EngineConfig) -> CacheModel {
    match engine.slots {
        Some(mode) => CacheModel::Slots {
            slots: mode.slots,
            ctx_tokens: engine.max_model_len,
        },
        None => CacheModel::Paged,
    }
}

/// The scraped GPU gauges as core's [`GpuLoad`].
fn gpu_load(m: &EngineMetrics, now: f64) -> GpuLoad {
    let g = &m.gpu;
    let total = u64::from(g.memory_used_mib) + u64::from(g.memory_free_mib);
    GpuLoad {
        utilization: (g.utilization_pct / 100.0).clamp(0.0, 1.0) as f32,
        memory_used: if total == 0 {
            0.0
        } else {
            (f64::from(g.memory_used_mib) / total as f64) as f32
        },
        temperature_c: g.temperature_c as f32,
        age: Duration::from_secs_f64((now - m.at).max(0.0)),
    }
}
