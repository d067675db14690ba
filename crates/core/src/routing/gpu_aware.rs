//! `gpu_aware`: keep requests off GPUs past their limits, and rank the rest by load.
//!
//! Use it on self-hosted fleets with a GPU exporter (DCGM) scraped, where a hot, throttling or
//! memory-starved GPU should stop taking work before it fails. A usable backend is excluded
//! when its fresh GPU report shows
//!
//! - utilization above `max_utilization` (default 1.0: off, because an inference GPU that is
//!   busy at all reads 100%; lower it to keep headroom),
//! - framebuffer use above `max_memory` (default 0.98),
//! - temperature above `max_temperature_c` (default 85 °C, below the usual ~90 °C throttle),
//!
//! or when its fresh engine report shows too little free KV cache for this request's estimate
//! (prompt plus max output tokens > free share x KV capacity). The rest are ranked by the
//! [`super::LeastLoaded`] score times `(1 + utilization)`. If every usable backend is excluded,
//! the least loaded of them is taken anyway (the decision says so): a slow answer beats none.
//! Reports older than `max_report_age` (default 2 s) stop counting. Source: the GPU-health
//! filters of NVIDIA Dynamo's and llm-d's schedulers, and the KV-fit filter of the Gateway
//! API inference extension.

use std::time::Duration;

use serde::Deserialize;

use super::least_loaded::{load_score, DEFAULT_KV_WEIGHT, DEFAULT_QUEUE_WEIGHT};
use super::registry::{duration, positive_age};
use super::signals::{fresh_engine, fresh_gpu, rank, Terms, DEFAULT_OUTPUT_TOKENS};
use super::{rotation_start, Build, NoCandidate, Policy, PolicyParams, PoolState, Registration};
use crate::fleet::BackendView;
use crate::{Decision, Detail, FleetView, Reason, RequestProfile};

/// The name config uses.
const NAME: &str = "gpu_aware";

/// Default utilization limit (off).
pub const DEFAULT_MAX_UTILIZATION: f64 = 1.0;
/// Default framebuffer-use limit.
pub const DEFAULT_MAX_MEMORY: f64 = 0.98;
/// Default temperature limit, °C.
pub const DEFAULT_MAX_TEMPERATURE_C: f64 = 85.0;

/// Limits of [`GpuAware`]: its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GpuLimits {
    /// Exclude above this utilization (0..1).
    pub max_utilization: f64,
    /// Exclude above this framebuffer use (0..1).
    pub max_memory: f64,
    /// Exclude above this temperature, °C.
    pub max_temperature_c: f64,
    /// Ignore GPU and engine reports older than this.
    #[serde(deserialize_with = "duration")]
    pub max_report_age: Duration,
}

impl Default for GpuLimits {
    fn default() -> Self {
        Self {
            max_utilization: DEFAULT_MAX_UTILIZATION,
            max_memory: DEFAULT_MAX_MEMORY,
            max_temperature_c: DEFAULT_MAX_TEMPERATURE_C,
            max_report_age: super::signals::DEFAULT_MAX_REPORT_AGE,
        }
    }
}

impl PolicyParams for GpuLimits {
    fn validate(&self) -> Result<(), String> {
        for (name, v, default) in [
            (
                "max_utilization",
                self.max_utilization,
                DEFAULT_MAX_UTILIZATION,
            ),
            ("max_memory", self.max_memory, DEFAULT_MAX_MEMORY),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                return Err(format!(
                    "{name} must be a share in (0, 1] (default {default}), got {v}"
                ));
            }
        }
        let t = self.max_temperature_c;
        if !(t.is_finite() && t > 0.0 && t < 150.0) {
            return Err(format!(
                "max_temperature_c must be in (0, 150) degrees Celsius (default {DEFAULT_MAX_TEMPERATURE_C}), got {t}"
            ));
        }
        positive_age(self.max_report_age)
    }

    fn build(&self, pool: Build<'_>) -> Box<dyn Policy> {
        Box::new(GpuAware::new(*self).with_state(pool.state))
    }
}

/// `gpu_aware`'s line in the policy table.
pub(crate) const REGISTRATION: Registration = Registration::new::<GpuLimits>(NAME);

/// Why the primary was chosen: best ranked, or (`degraded`) the least loaded of backends all
/// past a limit.
fn gpu_reason(excluded: u32, degraded: bool) -> Reason {
    let detail = if degraded {
        Detail::new("all {} past limits, least loaded taken", &[u64::from(excluded)])
    } else {
        Detail::new("best ranked, {} excluded by limits", &[u64::from(excluded)])
    };
    Reason::new(NAME, detail)
}

/// GPU-limit filter, then least load.
#[derive(Debug)]
pub struct GpuAware {
    limits: GpuLimits,
    /// The pool's state: its rotation counter breaks ties.
    state: PoolState,
}

impl GpuAware {
    /// A policy with these limits.
    pub fn new(limits: GpuLimits) -> Self {
        Self {
            limits,
            state: PoolState::default(),
        }
    }

    /// The same policy on `state` (a rebuilt pool's).
    pub fn with_state(mut self, state: PoolState) -> Self {
        self.state = state;
        self
    }

    /// Why `b` is excluded for `need` tokens, if it is: the term naming the limit and the value.
    fn exclusion(&self, b: &BackendView, need: f64) -> Option<(&'static str, f64)> {
        let l = &self.limits;
        if let Some(g) = fresh_gpu(b, l.max_report_age) {
            if f64::from(g.utilization) > l.max_utilization {
                return Some(("excluded_gpu_utilization", f64::from(g.utilization)));
            }
            if f64::from(g.memory_used) > l.max_memory {
                return Some(("excluded_gpu_memory", f64::from(g.memory_used)));
            }
            if f64::from(g.temperature_c) > l.max_temperature_c {
                return Some(("excluded_gpu_temperature", f64::from(g.temperature_c)));
            }
        }
        if let Some(e) = fresh_engine(b, l.max_report_age) {
            if let Some(cap) = e.kv_capacity_tokens {
                let free = (1.0 - f64::from(e.kv_usage).clamp(0.0, 1.0)) * f64::from(cap);
                if free < need {
                    return Some(("excluded_kv_free_tokens", free));
                }
            }
        }
        None
    }

    fn score(&self, b: &BackendView, mut terms: Option<&mut Terms>) -> f64 {
        let engine = fresh_engine(b, self.limits.max_report_age);
        let load = load_score(
            b,
            engine,
            DEFAULT_QUEUE_WEIGHT,
            DEFAULT_KV_WEIGHT,
            terms.as_deref_mut(),
        );
        let util = fresh_gpu(b, self.limits.max_report_age)
            .map_or(0.0, |g| f64::from(g.utilization).clamp(0.0, 1.0));
        if let Some(t) = terms {
            t.push(("gpu_utilization", util));
        }
        load * (1.0 + util)
    }
}

impl Policy for GpuAware {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state(&self) -> Option<&PoolState> {
        Some(&self.state)
    }

    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<Decision, NoCandidate> {
        let start = rotation_start(&self.state.rotation, fleet.backends.len());
        let need = f64::from(request.estimated_input_tokens)
            + f64::from(request.max_output_tokens.unwrap_or(DEFAULT_OUTPUT_TOKENS));
        let mut excluded = 0u32;
        let ranked = rank(fleet, start, |b, mut terms| {
            if let Some(why) = self.exclusion(b, need) {
                excluded += 1;
                if let Some(t) = terms.as_deref_mut() {
                    t.push(why);
                }
                return None;
            }
            Some((self.score(b, terms), 0.0))
        });
        if !ranked.top.is_empty() {
            return ranked
                .decision(|_| gpu_reason(excluded, false))
                .ok_or(NoCandidate);
        }
        // Everything usable is past a limit: the least loaded of them anyway.
        let explanation = ranked.explanation;
        let mut fallback = rank(fleet, start, |b, _| Some((self.score(b, None), 0.0)));
        fallback.explanation = explanation;
        fallback
            .decision(|_| gpu_reason(excluded, true))
            .ok_or(NoCandidate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::test_support::{idle, request};
    use crate::{BackendId, EngineLoad, GpuLoad};

    fn gpu(util: f32, mem: f32, temp: f32, age_s: u64) -> Option<GpuLoad> {
        Some(GpuLoad {
            utilization: util,
            memory_used: mem,
            temperature_c: temp,
            age: Duration::from_secs(age_s),
        })
    }

    #[test]
    fn excludes_hot_or_full_gpus_and_ranks_the_rest() {
        let mut pool = idle(4);
        pool[0].gpu = gpu(0.5, 0.5, 91.0, 0); // too hot
        pool[1].gpu = gpu(0.5, 0.99, 60.0, 0); // memory full
        pool[2].gpu = gpu(0.9, 0.5, 60.0, 0);
        pool[2].in_flight = 1;
        pool[2].in_flight_tokens = 100;
        pool[3].gpu = gpu(0.9, 0.5, 60.0, 0);
        pool[3].in_flight = 1;
        pool[3].in_flight_tokens = 300;
        let d = GpuAware::new(GpuLimits::default())
            .decide(
                &request(None),
                &FleetView::new(&pool, Duration::ZERO).explaining(true),
            )
            .unwrap();
        assert_eq!(d.primary, BackendId(2));
        assert_eq!(d.fallbacks.as_slice(), &[BackendId(3)]);
        assert_eq!(
            d.reason,
gpu_reason(2, false)
        );
        let e = d.explanation.unwrap();
        assert_eq!(e.candidates[0].terms, [("excluded_gpu_temperature", 91.0)]);
    }

    #[test]
    fn excludes_a_backend_whose_free_kv_cannot_fit_the_request() {
        let mut pool = idle(2);
        pool[0].engine = Some(EngineLoad {
            running: 3,
            waiting: 0,
            kv_usage: 0.999,
            kv_capacity_tokens: Some(100_000),
            age: Duration::ZERO,
        });
        pool[1].in_flight = 5;
        pool[1].in_flight_tokens = 50_000;
        let d = GpuAware::new(GpuLimits::default())
            .decide(&request(None), &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(1), "100 free tokens < 1 + 256 needed");
    }

    #[test]
    fn stale_reports_do_not_exclude_and_all_excluded_still_routes() {
        let mut pool = idle(2);
        pool[0].gpu = gpu(0.5, 0.5, 95.0, 60);
        pool[1].in_flight = 3;
        pool[1].in_flight_tokens = 900;
        let p = GpuAware::new(GpuLimits::default());
        let d = p
            .decide(&request(None), &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(
            d.primary,
            BackendId(0),
            "a minute-old temperature is ignored"
        );
        pool[0].gpu = gpu(0.5, 0.5, 95.0, 0);
        pool[1].gpu = gpu(0.5, 0.5, 95.0, 0);
        let d = p
            .decide(&request(None), &FleetView::new(&pool, Duration::ZERO))
            .unwrap();
        assert_eq!(d.primary, BackendId(0));
        assert_eq!(
            d.reason,
gpu_reason(2, true)
        );
        pool.iter_mut().for_each(|b| b.usable = false);
        assert_eq!(
            p.decide(&request(None), &FleetView::new(&pool, Duration::ZERO)),
            Err(NoCandidate)
        );
    }
}
