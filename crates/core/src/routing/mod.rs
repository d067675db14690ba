//! Routing policies: from a [`RequestProfile`] and a [`FleetView`] to a [`Decision`].
//!
//! A policy is a value built from config ([`PolicySpec::build`]) for one pool. It may keep
//! small internal state (a rotation counter, smooth-weighted current weights, a hash ring) but
//! it never does I/O and never reads a clock: the decision time is `fleet.now`.
//!
//! One policy per file:
//! - [`RoundRobin`] — each usable backend in turn.
//! - [`Random`] — weighted random draw.
//! - [`SmoothWeighted`] — nginx's smooth weighted round robin.
//! - [`LeastConnections`] — fewest in flight per unit of weight, ties rotated.
//! - [`PowerOfTwo`] — the less loaded of two random candidates.
//! - [`BoundedConsistentHash`] — session affinity on a hash ring with bounded load.
//!
//! LLM-aware policies (they read tokens in flight, engine and GPU reports, latency averages and
//! the prompt's prefix blocks; shared helpers in `signals`):
//! - [`LeastLoaded`] — least load in tokens (queue, running, KV use, own tokens in flight).
//! - [`PeakEwmaP2c`] — two random choices on expected latency x (in flight + 1).
//! - [`PrefixAware`] — cheapest (uncached prefill + queued load) in tokens, prefix index.
//! - [`GpuAware`] — excludes GPUs past limits or without KV room, ranks the rest by load.
//! - [`CostAware`] — cheapest backend fitting the context window and a quality floor.
//! - [`Composite`] — weighted scorers chosen in config.
//!
//! [`SlowStart`] wraps any of them to ramp up a backend that has just come back.

mod composite;
mod consistent_hash;
mod cost;
mod gpu_aware;
mod learned;
mod least_connections;
mod least_loaded;
mod peak_ewma;
mod power_of_two;
mod prefill_ledger;
mod prefix_aware;
mod random;
mod round_robin;
pub mod signals;
mod slow_start;
mod smooth_weighted;

pub use composite::{Composite, CompositeWeights};
pub use consistent_hash::BoundedConsistentHash;
pub use cost::CostAware;
pub use gpu_aware::{GpuAware, GpuLimits};
pub use learned::{Learned, Moved};
pub use least_connections::LeastConnections;
pub use least_loaded::{LeastLoaded, DEFAULT_KV_WEIGHT, DEFAULT_QUEUE_WEIGHT};
pub use peak_ewma::PeakEwmaP2c;
pub use power_of_two::PowerOfTwo;
pub use prefix_aware::{
    PrefixAware, DEFAULT_COPY_WEIGHT, DEFAULT_DECODE_WEIGHT, DEFAULT_PREFILL_WEIGHT,
};
pub use random::Random;
pub use round_robin::RoundRobin;
pub use signals::DEFAULT_MAX_REPORT_AGE;
pub use slow_start::SlowStart;
pub use smooth_weighted::SmoothWeighted;

use std::fmt;
use std::time::Duration;

use crate::decision::Decision;
use crate::fleet::{FleetView, PoolMember};
use crate::profile::RequestProfile;

/// No backend of the pool may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no usable backend in the pool")]
pub struct NoCandidate;

/// A routing policy for one pool.
pub trait Policy: Send + Sync + fmt::Debug {
    /// The policy's config name, e.g. `round_robin`.
    fn name(&self) -> &'static str;

    /// Chooses a primary backend and ordered fallbacks among the usable members of `fleet`.
    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<Decision, NoCandidate>;

    /// What this policy learned from traffic that its successor for the same pool may take
    /// over (see [`learned`]). Nothing, unless the policy keeps such state.
    fn learned(&self) -> Learned<'_> {
        Learned::default()
    }

    /// Takes over what the pool's previous policy learned, for the backends that stayed
    /// (`moved` maps their old positions to their new ones). Called once, before the first
    /// decision. Does nothing unless the policy keeps such state.
    fn inherit(&mut self, _previous: Learned<'_>, _moved: &Moved) {}
}

/// Default load bound of [`BoundedConsistentHash`]: a node takes at most 1.25x the average.
pub const DEFAULT_HASH_LOAD_FACTOR: f64 = 1.25;
/// Default virtual nodes per unit of weight on the hash ring.
pub const DEFAULT_HASH_VIRTUAL_NODES: u32 = 160;

/// A policy as named in config, with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum PolicySpec {
    /// `round_robin`
    RoundRobin,
    /// `random`
    Random,
    /// `weighted`
    Weighted,
    /// `least_connections`
    LeastConnections,
    /// `power_of_two`
    PowerOfTwo,
    /// `consistent_hash`
    ConsistentHash {
        /// A node may take at most this multiple of the average load (> 1.0).
        load_factor: f64,
        /// Ring points per unit of backend weight.
        virtual_nodes: u32,
    },
    /// `least_loaded`
    LeastLoaded {
        /// Weight of an engine-queued request relative to a running one (>= 0).
        queue_weight: f64,
        /// Weight of KV-cache use (>= 0).
        kv_weight: f64,
        /// Engine reports older than this stop counting.
        max_report_age: Duration,
    },
    /// `peak_ewma`
    PeakEwma,
    /// `prefix_aware`
    PrefixAware {
        /// Weight of the request's own uncached prefill against queued prefill (> 0).
        prefill_weight: f64,
        /// Weight of a token in flight against a token to prefill (>= 0).
        decode_weight: f64,
        /// Weight, per request running at the target, of copying a prefix another backend
        /// holds, divided by how often that prefix was reused (>= 0).
        copy_weight: f64,
        /// Engine reports older than this stop counting.
        max_report_age: Duration,
    },
    /// `gpu_aware`
    GpuAware {
        /// The exclusion limits.
        limits: GpuLimits,
    },
    /// `cost`
    Cost {
        /// Backends with a configured quality below this (or none) are excluded.
        quality_floor: Option<f32>,
    },
    /// `composite`
    Composite {
        /// The scorers' weights.
        weights: CompositeWeights,
        /// Engine and GPU reports older than this stop counting.
        max_report_age: Duration,
    },
}

/// A policy spec that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicySpecError {
    /// The name is not a known policy.
    #[error("unknown policy '{0}'")]
    Unknown(String),
    /// A parameter is out of range.
    #[error("{0}")]
    BadParameter(String),
}

impl PolicySpec {
    /// Every policy name config accepts.
    pub const NAMES: &'static [&'static str] = &[
        "round_robin",
        "random",
        "weighted",
        "least_connections",
        "power_of_two",
        "consistent_hash",
        "least_loaded",
        "peak_ewma",
        "prefix_aware",
        "gpu_aware",
        "cost",
        "composite",
    ];

    /// The spec for a policy name with default parameters.
    pub fn from_name(name: &str) -> Result<Self, PolicySpecError> {
        Ok(match name {
            "round_robin" => PolicySpec::RoundRobin,
            "random" => PolicySpec::Random,
            "weighted" => PolicySpec::Weighted,
            "least_connections" => PolicySpec::LeastConnections,
            "power_of_two" => PolicySpec::PowerOfTwo,
            "consistent_hash" => PolicySpec::ConsistentHash {
                load_factor: DEFAULT_HASH_LOAD_FACTOR,
                virtual_nodes: DEFAULT_HASH_VIRTUAL_NODES,
            },
            "least_loaded" => PolicySpec::LeastLoaded {
                queue_weight: DEFAULT_QUEUE_WEIGHT,
                kv_weight: DEFAULT_KV_WEIGHT,
                max_report_age: DEFAULT_MAX_REPORT_AGE,
            },
            "peak_ewma" => PolicySpec::PeakEwma,
            "prefix_aware" => PolicySpec::PrefixAware {
                prefill_weight: DEFAULT_PREFILL_WEIGHT,
                decode_weight: DEFAULT_DECODE_WEIGHT,
                copy_weight: DEFAULT_COPY_WEIGHT,
                max_report_age: DEFAULT_MAX_REPORT_AGE,
            },
            "gpu_aware" => PolicySpec::GpuAware {
                limits: GpuLimits::default(),
            },
            "cost" => PolicySpec::Cost {
                quality_floor: None,
            },
            "composite" => PolicySpec::Composite {
                weights: CompositeWeights::default(),
                max_report_age: DEFAULT_MAX_REPORT_AGE,
            },
            other => return Err(PolicySpecError::Unknown(other.to_owned())),
        })
    }

    /// The config name of this spec.
    pub fn name(&self) -> &'static str {
        match self {
            PolicySpec::RoundRobin => "round_robin",
            PolicySpec::Random => "random",
            PolicySpec::Weighted => "weighted",
            PolicySpec::LeastConnections => "least_connections",
            PolicySpec::PowerOfTwo => "power_of_two",
            PolicySpec::ConsistentHash { .. } => "consistent_hash",
            PolicySpec::LeastLoaded { .. } => "least_loaded",
            PolicySpec::PeakEwma => "peak_ewma",
            PolicySpec::PrefixAware { .. } => "prefix_aware",
            PolicySpec::GpuAware { .. } => "gpu_aware",
            PolicySpec::Cost { .. } => "cost",
            PolicySpec::Composite { .. } => "composite",
        }
    }

    /// Checks parameters without building.
    pub fn validate(&self) -> Result<(), PolicySpecError> {
        match self {
            PolicySpec::ConsistentHash {
                load_factor,
                virtual_nodes,
            } => {
                if !(load_factor.is_finite() && *load_factor > 1.0) {
                    return Err(bad(format!(
                        "load_factor must be a number above 1.0 (default {DEFAULT_HASH_LOAD_FACTOR}), got {load_factor}"
                    )));
                }
                if !(1..=4096).contains(virtual_nodes) {
                    return Err(bad(format!(
                        "virtual_nodes must be between 1 and 4096 (default {DEFAULT_HASH_VIRTUAL_NODES}), got {virtual_nodes}"
                    )));
                }
            }
            PolicySpec::LeastLoaded {
                queue_weight,
                kv_weight,
                max_report_age,
            } => {
                non_negative("queue_weight", *queue_weight, DEFAULT_QUEUE_WEIGHT)?;
                non_negative("kv_weight", *kv_weight, DEFAULT_KV_WEIGHT)?;
                positive_age(*max_report_age)?;
            }
            PolicySpec::PrefixAware {
                prefill_weight,
                decode_weight,
                copy_weight,
                max_report_age,
            } => {
                if !(prefill_weight.is_finite() && *prefill_weight > 0.0) {
                    return Err(bad(format!(
                        "prefill_weight must be a number above 0 (default {DEFAULT_PREFILL_WEIGHT}), got {prefill_weight}"
                    )));
                }
                non_negative("decode_weight", *decode_weight, DEFAULT_DECODE_WEIGHT)?;
                non_negative("copy_weight", *copy_weight, DEFAULT_COPY_WEIGHT)?;
                positive_age(*max_report_age)?;
            }
            PolicySpec::GpuAware { limits } => {
                for (name, v, default) in [
                    (
                        "max_utilization",
                        limits.max_utilization,
                        gpu_aware::DEFAULT_MAX_UTILIZATION,
                    ),
                    (
                        "max_memory",
                        limits.max_memory,
                        gpu_aware::DEFAULT_MAX_MEMORY,
                    ),
                ] {
                    if !(v.is_finite() && v > 0.0 && v <= 1.0) {
                        return Err(bad(format!(
                            "{name} must be a share in (0, 1] (default {default}), got {v}"
                        )));
                    }
                }
                let t = limits.max_temperature_c;
                if !(t.is_finite() && t > 0.0 && t < 150.0) {
                    return Err(bad(format!(
                        "max_temperature_c must be in (0, 150) degrees Celsius (default {}), got {t}",
                        gpu_aware::DEFAULT_MAX_TEMPERATURE_C
                    )));
                }
                positive_age(limits.max_report_age)?;
            }
            PolicySpec::Cost { quality_floor } => {
                if quality_floor.is_some_and(|q| !q.is_finite()) {
                    return Err(bad("quality_floor must be a finite number".into()));
                }
            }
            PolicySpec::Composite {
                weights,
                max_report_age,
            } => {
                for (name, w) in weights.named() {
                    non_negative(name, w, 0.0)?;
                }
                if weights.named().iter().all(|(_, w)| *w == 0.0) {
                    return Err(bad(
                        "composite needs at least one scorer weight above 0 (prefix, queue, kv, latency, cost, gpu)".into(),
                    ));
                }
                positive_age(*max_report_age)?;
            }
            PolicySpec::RoundRobin
            | PolicySpec::Random
            | PolicySpec::Weighted
            | PolicySpec::LeastConnections
            | PolicySpec::PowerOfTwo
            | PolicySpec::PeakEwma => {}
        }
        Ok(())
    }

    /// Builds the policy for a pool with these members. `seed` feeds policies that draw at
    /// random, so a run is reproducible for a seed.
    pub fn build(&self, members: &[PoolMember], seed: u64) -> Box<dyn Policy> {
        match self {
            PolicySpec::RoundRobin => Box::new(RoundRobin::new()),
            PolicySpec::Random => Box::new(Random::new(seed)),
            PolicySpec::Weighted => Box::new(SmoothWeighted::new(members.len())),
            PolicySpec::LeastConnections => Box::new(LeastConnections::new()),
            PolicySpec::PowerOfTwo => Box::new(PowerOfTwo::new(seed)),
            PolicySpec::ConsistentHash {
                load_factor,
                virtual_nodes,
            } => Box::new(BoundedConsistentHash::new(
                members,
                *load_factor,
                *virtual_nodes,
            )),
            PolicySpec::LeastLoaded {
                queue_weight,
                kv_weight,
                max_report_age,
            } => Box::new(LeastLoaded::new(*queue_weight, *kv_weight, *max_report_age)),
            PolicySpec::PeakEwma => Box::new(PeakEwmaP2c::new(seed)),
            PolicySpec::PrefixAware {
                prefill_weight,
                decode_weight,
                copy_weight,
                max_report_age,
            } => Box::new(
                PrefixAware::new(*prefill_weight, *decode_weight, *max_report_age)
                    .with_copy_weight(*copy_weight),
            ),
            PolicySpec::GpuAware { limits } => Box::new(GpuAware::new(*limits)),
            PolicySpec::Cost { quality_floor } => Box::new(CostAware::new(members, *quality_floor)),
            PolicySpec::Composite {
                weights,
                max_report_age,
            } => Box::new(Composite::new(*weights, members, *max_report_age)),
        }
    }
}

fn bad(message: String) -> PolicySpecError {
    PolicySpecError::BadParameter(message)
}

fn non_negative(name: &str, v: f64, default: f64) -> Result<(), PolicySpecError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(format!(
            "{name} must be a number >= 0 (default {default}), got {v}"
        )))
    }
}

fn positive_age(age: Duration) -> Result<(), PolicySpecError> {
    if age.is_zero() {
        Err(bad(
            "max_report_age must be above 0 (default 2s): engine reports would never count".into(),
        ))
    } else {
        Ok(())
    }
}

/// Fallbacks for policies without an opinion on order: usable backends least loaded first.
pub(crate) fn by_load(fleet: &FleetView<'_>) -> smallvec::SmallVec<[crate::BackendId; 8]> {
    let mut ids: smallvec::SmallVec<[&crate::BackendView; 8]> = fleet.usable().collect();
    ids.sort_by(|a, b| crate::fleet::lighter(a, b));
    ids.into_iter().map(|b| b.id).collect()
}

#[cfg(test)]
mod spec_tests;

/// Where a policy's scan of `n` backends starts this time: a shared counter taken modulo `n`,
/// so equal scores rotate instead of favouring the first backend.
pub(crate) fn rotation_start(counter: &std::sync::atomic::AtomicU64, n: usize) -> usize {
    let n = n.max(1) as u64;
    (counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n) as usize
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::time::Duration;

    use super::Policy;
    use crate::{
        BackendId, BackendView, EndpointKind, FleetView, PoolMember, RequestMeta, RequestProfile,
    };

    /// How many of `n` decisions for `request` over `pool` chose each backend as primary.
    pub fn primary_counts(
        policy: &dyn Policy,
        pool: &[BackendView],
        request: &RequestProfile,
        n: usize,
    ) -> Vec<u32> {
        let mut counts = vec![0u32; pool.len()];
        for _ in 0..n {
            let d = policy.decide(request, &FleetView::new(pool, Duration::ZERO));
            counts[d.unwrap().primary.index()] += 1;
        }
        counts
    }

    /// Pool members of weight 1 with these names.
    pub fn members(names: &[&str]) -> Vec<PoolMember> {
        names
            .iter()
            .map(|n| PoolMember {
                name: n.to_string(),
                weight: 1,
                ..PoolMember::default()
            })
            .collect()
    }

    /// A pool of `n` usable, idle backends with weight 1.
    pub fn idle(n: usize) -> Vec<BackendView> {
        (0..n)
            .map(|i| BackendView::idle(BackendId(i as u32), 1))
            .collect()
    }

    /// A completions request with this prompt.
    pub fn prompt_request(prompt: &str) -> RequestProfile {
        let body = serde_json::json!({"model": "m", "prompt": prompt, "max_tokens": 100});
        RequestProfile::parse(
            EndpointKind::Completions,
            body.to_string().as_bytes(),
            RequestMeta::default(),
        )
        .unwrap()
    }

    /// A chat request with an optional session header.
    pub fn request(session: Option<&str>) -> RequestProfile {
        RequestProfile::parse(
            EndpointKind::ChatCompletions,
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            RequestMeta {
                session_header: session,
                client_addr: None,
            },
        )
        .unwrap()
    }
}
