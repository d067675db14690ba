//! The outcome of a routing decision.

use smallvec::SmallVec;
use std::fmt;

use crate::fleet::BackendId;

/// How many fallbacks a decision carries at most. Retries are bounded by a budget anyway; a few
/// ordered alternatives are all failover needs, and computing more costs time on every request.
pub const MAX_FALLBACKS: usize = 3;

/// Where a request goes: a primary backend, ordered fallbacks, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The backend to try first.
    pub primary: BackendId,
    /// Backends to try next, best first, none equal to `primary`.
    pub fallbacks: SmallVec<[BackendId; MAX_FALLBACKS]>,
    /// Why `primary` was chosen.
    pub reason: Reason,
    /// Every candidate's score, when the fleet view asked for it ([`FleetView::explain`]) and
    /// the policy scores candidates.
    ///
    /// [`FleetView::explain`]: crate::FleetView::explain
    pub explanation: Option<Box<Explanation>>,
}

/// How a scoring policy saw each candidate: lower `score` is better unless the policy says
/// otherwise in its docs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Explanation {
    /// One entry per backend considered, in pool order.
    pub candidates: Vec<CandidateScore>,
}

/// One candidate's score and the terms it was made of.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateScore {
    /// The backend.
    pub id: BackendId,
    /// Its total score.
    pub score: f64,
    /// Named parts of the score (e.g. `("uncached_tokens", 1200.0)`), or why it was excluded
    /// (`("excluded_gpu_temperature", 91.0)`).
    pub terms: Vec<(&'static str, f64)>,
}

/// Why a policy chose its primary backend. Shown in debug headers and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Next in rotation.
    RoundRobin,
    /// Drawn at random (weighted by configured weight).
    Random,
    /// Highest current weight in smooth weighted round robin.
    SmoothWeighted,
    /// Fewest requests in flight per unit of weight.
    LeastConnections {
        /// The chosen backend's in-flight count.
        in_flight: u32,
    },
    /// Less loaded of two random candidates.
    PowerOfTwo {
        /// The candidate that lost.
        other: BackendId,
    },
    /// The session key's home on the hash ring.
    HashHome,
    /// The key's home was over its load bound; the next node on the ring took it.
    HashSpill {
        /// The home node that was over its bound.
        home: BackendId,
    },
    /// Least load in tokens (queue, running, KV use and the gateway's own tokens in flight).
    LeastLoaded {
        /// The chosen backend's load score, in tokens per unit of weight.
        load_tokens: u64,
    },
    /// Lower expected latency x (in flight + 1) of two random candidates.
    PeakEwma {
        /// The candidate that lost.
        other: BackendId,
    },
    /// Cheapest estimated prefill plus queued load: `cached_tokens` of the prompt are expected
    /// to be in the chosen backend's prefix cache.
    PrefixAffinity {
        /// Prompt tokens expected to be cached there.
        cached_tokens: u32,
        /// Prompt tokens it is expected to prefill.
        uncached_tokens: u32,
    },
    /// Best ranked of the backends within GPU and KV limits.
    GpuAware {
        /// Usable backends excluded by the limits.
        excluded: u32,
        /// Every usable backend was past a limit, so the least loaded of them was taken anyway.
        degraded: bool,
    },
    /// Cheapest backend that fits the request's context window and the quality floor.
    Cheapest {
        /// The request's estimated price there, in millionths of a currency unit.
        micro_cost: u64,
    },
    /// Lowest weighted sum of the configured scorers.
    Composite,
    /// A policy defined outside this crate (a benchmark baseline, a test probe), in its words.
    External {
        /// The policy's name.
        policy: &'static str,
        /// Why it chose.
        why: &'static str,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::RoundRobin => f.write_str("round_robin: next in rotation"),
            Reason::Random => f.write_str("random: weighted draw"),
            Reason::SmoothWeighted => f.write_str("weighted: highest current weight"),
            Reason::LeastConnections { in_flight } => {
                write!(f, "least_connections: {in_flight} in flight")
            }
            Reason::PowerOfTwo { other } => {
                write!(f, "power_of_two: less loaded than candidate {}", other.0)
            }
            Reason::HashHome => f.write_str("consistent_hash: key's home node"),
            Reason::HashSpill { home } => {
                write!(
                    f,
                    "consistent_hash: home {} over load bound, spilled",
                    home.0
                )
            }
            Reason::LeastLoaded { load_tokens } => {
                write!(f, "least_loaded: load {load_tokens} tokens per weight")
            }
            Reason::PeakEwma { other } => {
                write!(
                    f,
                    "peak_ewma: lower latency x load than candidate {}",
                    other.0
                )
            }
            Reason::PrefixAffinity {
                cached_tokens,
                uncached_tokens,
            } => write!(
                f,
                "prefix_aware: {cached_tokens} prompt tokens cached, {uncached_tokens} to prefill"
            ),
            Reason::GpuAware { excluded, degraded } => {
                if *degraded {
                    write!(
                        f,
                        "gpu_aware: all {excluded} past limits, least loaded taken"
                    )
                } else {
                    write!(f, "gpu_aware: best ranked, {excluded} excluded by limits")
                }
            }
            Reason::Cheapest { micro_cost } => {
                write!(f, "cost: cheapest fit, {micro_cost} micro-units")
            }
            Reason::Composite => f.write_str("composite: lowest weighted score"),
            Reason::External { policy, why } => write!(f, "{policy}: {why}"),
        }
    }
}

impl Decision {
    /// A decision with no fallbacks.
    pub fn new(primary: BackendId, reason: Reason) -> Self {
        Self {
            primary,
            fallbacks: SmallVec::new(),
            reason,
            explanation: None,
        }
    }

    /// Fills fallbacks from `candidates` in order, skipping the primary and repeats, up to
    /// [`MAX_FALLBACKS`].
    pub fn with_fallbacks(mut self, candidates: impl IntoIterator<Item = BackendId>) -> Self {
        for id in candidates {
            if self.fallbacks.len() == MAX_FALLBACKS {
                break;
            }
            if id != self.primary && !self.fallbacks.contains(&id) {
                self.fallbacks.push(id);
            }
        }
        self
    }

    /// Attaches an explanation.
    pub fn with_explanation(mut self, explanation: Explanation) -> Self {
        self.explanation = Some(Box::new(explanation));
        self
    }

    /// Primary then fallbacks: the order in which to try backends.
    pub fn attempts(&self) -> impl Iterator<Item = BackendId> + '_ {
        std::iter::once(self.primary).chain(self.fallbacks.iter().copied())
    }
}
