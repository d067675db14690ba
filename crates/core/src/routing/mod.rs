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
//! [`SlowStart`] wraps any of them to ramp up a backend that has just come back.

mod consistent_hash;
mod least_connections;
mod power_of_two;
mod random;
mod round_robin;
mod slow_start;
mod smooth_weighted;

pub use consistent_hash::BoundedConsistentHash;
pub use least_connections::LeastConnections;
pub use power_of_two::PowerOfTwo;
pub use random::Random;
pub use round_robin::RoundRobin;
pub use slow_start::SlowStart;
pub use smooth_weighted::SmoothWeighted;

use std::fmt;

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
        }
    }

    /// Checks parameters without building.
    pub fn validate(&self) -> Result<(), PolicySpecError> {
        if let PolicySpec::ConsistentHash {
            load_factor,
            virtual_nodes,
        } = self
        {
            if !(load_factor.is_finite() && *load_factor > 1.0) {
                return Err(PolicySpecError::BadParameter(format!(
                    "load_factor must be a number above 1.0 (default {DEFAULT_HASH_LOAD_FACTOR}), got {load_factor}"
                )));
            }
            if !(1..=4096).contains(virtual_nodes) {
                return Err(PolicySpecError::BadParameter(format!(
                    "virtual_nodes must be between 1 and 4096 (default {DEFAULT_HASH_VIRTUAL_NODES}), got {virtual_nodes}"
                )));
            }
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
        }
    }
}

/// Fallbacks for policies without an opinion on order: usable backends least loaded first.
pub(crate) fn by_load(fleet: &FleetView<'_>) -> smallvec::SmallVec<[crate::BackendId; 8]> {
    let mut ids: smallvec::SmallVec<[&crate::BackendView; 8]> = fleet.usable().collect();
    ids.sort_by(|a, b| crate::fleet::lighter(a, b));
    ids.into_iter().map(|b| b.id).collect()
}

#[cfg(test)]
pub(crate) mod test_support {
    use crate::{BackendId, BackendView, EndpointKind, RequestMeta, RequestProfile};

    /// A pool of `n` usable, idle backends with weight 1.
    pub fn idle(n: usize) -> Vec<BackendView> {
        (0..n)
            .map(|i| BackendView::idle(BackendId(i as u32), 1))
            .collect()
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
