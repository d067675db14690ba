//! Routing policies: from a [`RequestProfile`] and a [`FleetView`] to a [`Decision`].
//!
//! A policy is a value built from config ([`PolicySpec::build`]) for one pool. What it learns
//! from traffic (prefix index, slot model, counters) lives in the pool's [`PoolState`], which
//! a rebuild carries over; it never does I/O and never reads a clock: the decision time is
//! `fleet.now`.
//!
//! Each policy's file owns its name, its parameters type (serde, defaults, range checks) and
//! its constructor, in a [`Registration`]; the `policies!` table below lists the files. Adding
//! a policy is one new file and one line in that table.
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

/// Declares each policy file as a module and lists its [`Registration`] in the table.
macro_rules! policies {
    ($($file:ident),* $(,)?) => {
        $(mod $file;)*
        /// Every policy's registration, in the order config errors and benchmarks list them.
        pub(crate) const REGISTRY: &[&Registration] = &[$(&$file::REGISTRATION),*];
        /// Every policy name config accepts, in table order.
        pub(crate) const NAMES: &[&str] = &[$($file::REGISTRATION.name),*];
    };
}

// The policy table: one line per policy file.
policies! {
    round_robin,
    random,
    smooth_weighted,
    least_connections,
    power_of_two,
    consistent_hash,
    least_loaded,
    peak_ewma,
    prefix_aware,
    gpu_aware,
    cost,
    composite,
}

mod pool_state;
mod prefill_ledger;
mod registry;
pub mod signals;
mod slow_start;

pub use composite::{Composite, CompositeParams, CompositeWeights};
pub use consistent_hash::{
    BoundedConsistentHash, ConsistentHashParams, DEFAULT_HASH_LOAD_FACTOR,
    DEFAULT_HASH_VIRTUAL_NODES, MAX_RING_POINTS,
};
pub use cost::{CostAware, CostParams};
pub use gpu_aware::{GpuAware, GpuLimits};
pub use least_connections::LeastConnections;
pub use least_loaded::{LeastLoaded, LeastLoadedParams, DEFAULT_KV_WEIGHT, DEFAULT_QUEUE_WEIGHT};
pub use peak_ewma::PeakEwmaP2c;
pub use pool_state::{Moved, PoolState};
pub use power_of_two::PowerOfTwo;
pub use prefix_aware::{
    PrefixAware, PrefixAwareParams, DEFAULT_COPY_WEIGHT, DEFAULT_DECODE_WEIGHT,
    DEFAULT_PREFILL_WEIGHT,
};
pub use random::Random;
pub use registry::{takes, Build, PolicyParams, PolicySpec, PolicySpecError, Registration};
pub use round_robin::RoundRobin;
pub use signals::DEFAULT_MAX_REPORT_AGE;
pub use slow_start::SlowStart;
pub use smooth_weighted::SmoothWeighted;

use std::fmt;

use crate::decision::Decision;
use crate::fleet::FleetView;
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

    /// The pool's routing state this policy keeps (see [`PoolState`]), if it keeps any.
    fn state(&self) -> Option<&PoolState> {
        None
    }

    /// The state to hand to this pool's next policy after a member change: this one's,
    /// renumbered by `moved` for the backends that stayed; empty if it keeps none.
    fn handover(&self, moved: &Moved) -> PoolState {
        self.state()
            .map_or_else(PoolState::default, |s| s.carried(moved))
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
