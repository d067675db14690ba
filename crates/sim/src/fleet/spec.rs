//! What a fleet run is given: its backends ([`BackendSpec`]), the policy and scrape interval
//! ([`FleetConfig`], with constructors for uniform and capacity-weighted mixed fleets), and
//! what makes a run impossible ([`FleetError`]).

use serde::Serialize;
use switchyard_core::{PolicySpec, PolicySpecError};

use crate::config::{ConfigError, EngineConfig};
use crate::profile::Profile;

/// One backend of the simulated fleet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendSpec {
    /// Its name: the identity consistent hashing places on its ring.
    pub name: String,
    /// Relative share for weighted policies (at least 1).
    pub weight: u32,
    /// Its engine; backends of one fleet may differ (heterogeneous fleets).
    pub engine: EngineConfig,
    /// The gateway's concurrency cap for it: at this many in flight it is not usable.
    pub max_in_flight: Option<u32>,
    /// Treat it as not usable while its last scraped `num_waiting` is at least this (a lagged
    /// signal, as a gateway's would be).
    pub max_waiting: Option<u32>,
    /// Treat it as not usable while the prompt tokens of the gateway's requests there that
    /// have not had their first token are at least this (the gateway's own count, not lagged).
    pub max_prefill_tokens: Option<u64>,
}

/// A fleet run's parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FleetConfig {
    /// The backends, in pool order.
    pub backends: Vec<BackendSpec>,
    /// The routing policy.
    #[serde(skip)]
    pub policy: PolicySpec,
    /// Seconds between metric scrapes: the lag of everything the driver learns from engine
    /// metrics.
    pub metrics_interval_s: f64,
    /// Seed for policies that draw at random.
    pub seed: u64,
    /// The model name requests ask for (the pool's name).
    pub model: String,
}

impl FleetConfig {
    /// `n` identical backends of `profile`, weight 1, no caps, scraped every 0.5 s.
    pub fn uniform(profile: &Profile, n: usize, policy: PolicySpec, seed: u64) -> Self {
        let engine = profile.engine_config();
        Self {
            backends: (0..n)
                .map(|i| BackendSpec {
                    name: format!("{}-{i}", profile.name),
                    weight: 1,
                    engine: engine.clone(),
                    max_in_flight: None,
                    max_waiting: None,
                    max_prefill_tokens: None,
                })
                .collect(),
            policy,
            metrics_interval_s: 0.5,
            seed,
            model: profile.model.name.to_owned(),
        }
    }
}

/// Tokens and context of the reference step [`FleetConfig::mixed`] times each engine on: a
/// mid-sized batch (256 tokens computed over 256k tokens of context).
const REFERENCE_STEP: (u64, u64) = (256, 256 * 1024);

impl FleetConfig {
    /// A heterogeneous fleet: for each `(profile, count)`, `count` backends of that profile,
    /// in order, each weighted by its capacity: how many times faster than the slowest
    /// profile it runs a reference step (256 tokens over 256k context tokens), rounded, at
    /// least 1. Those are the weights `weighted` round robin is given in a capacity-aware
    /// deployment. Scraped every 0.5 s, no caps.
    pub fn mixed(groups: &[(&Profile, usize)], policy: PolicySpec, seed: u64) -> Self {
        let step = |p: &Profile| p.step_time.seconds(REFERENCE_STEP.0, REFERENCE_STEP.1);
        let slowest = groups.iter().map(|(p, _)| step(p)).fold(0.0, f64::max);
        let mut backends = Vec::new();
        for (p, count) in groups {
            let weight = (slowest / step(p)).round().max(1.0) as u32;
            for _ in 0..*count {
                backends.push(BackendSpec {
                    name: format!("{}-{}", p.name, backends.len()),
                    weight,
                    engine: p.engine_config(),
                    max_in_flight: None,
                    max_waiting: None,
                    max_prefill_tokens: None,
                });
            }
        }
        Self {
            backends,
            policy,
            metrics_interval_s: 0.5,
            seed,
            model: groups
                .first()
                .map_or_else(String::new, |(p, _)| p.model.name.to_owned()),
        }
    }
}

/// A fleet that cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FleetError {
    /// No backend.
    #[error("the fleet has no backend")]
    NoBackends,
    /// A backend's engine configuration is invalid.
    #[error("backend '{name}': {source}")]
    Engine {
        /// The backend.
        name: String,
        /// What is wrong.
        source: ConfigError,
    },
    /// A backend's `max_in_flight` or `max_waiting` is 0, so it could never take a request.
    #[error("backend '{0}': max_in_flight and max_waiting must be at least 1")]
    ZeroCap(String),
    /// The policy's parameters are invalid.
    #[error("policy: {0}")]
    Policy(#[from] PolicySpecError),
    /// The scrape interval is not a positive number.
    #[error("metrics_interval_s must be a positive number of seconds")]
    BadInterval,
    /// A workload request's arrival is not a finite, non-negative time, or arrivals are out
    /// of order (build workloads with [`Workload::new`](crate::Workload::new), which sorts them).
    #[error("workload request {0}: arrival times must be finite, >= 0 and in order")]
    BadArrival(usize),
}
