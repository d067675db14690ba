//! What a policy sees of a pool: its members (fixed at build time) and a per-decision snapshot
//! of their live numbers.

use std::time::Duration;

/// The index of a backend within its pool, as listed in the config. Stable for the life of a
/// pool; a reload or a membership change builds a new pool (and a new policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u32);

impl BackendId {
    /// The index as a `usize`, for slices.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A pool member as a policy needs to know it when it is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolMember {
    /// The backend's configured name: the identity consistent hashing places on its ring, so a
    /// backend keeps its keys across rebuilds as long as its name does not change.
    pub name: String,
    /// Relative share of traffic for weighted policies (at least 1).
    pub weight: u32,
}

/// What an engine last reported of its own load (vLLM's `num_requests_running`,
/// `num_requests_waiting`, `kv_cache_usage_perc`, or their equivalents), and how old that
/// report is at decision time. Policies should discount or ignore stale reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineLoad {
    /// Sequences in the engine's running batch.
    pub running: u32,
    /// Requests queued inside the engine.
    pub waiting: u32,
    /// Share of KV-cache blocks in use, 0.0 to 1.0.
    pub kv_usage: f32,
    /// Time since the report was taken.
    pub age: Duration,
}

/// Live numbers of one backend at the moment of a decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendView {
    /// Which backend this is.
    pub id: BackendId,
    /// Configured weight (at least 1).
    pub weight: u32,
    /// Requests sent to it and not yet finished.
    pub in_flight: u32,
    /// Whether it may take a new request now: healthy and under its concurrency cap.
    pub usable: bool,
    /// The engine's own report of its load, when the gateway scrapes one.
    pub engine: Option<EngineLoad>,
}

/// An immutable snapshot of a pool handed to a policy, with the time of the decision.
#[derive(Debug, Clone, Copy)]
pub struct FleetView<'a> {
    /// Every member of the pool, in pool order (`backends[i].id == BackendId(i)`).
    pub backends: &'a [BackendView],
    /// The decision time, on whatever monotonic epoch the caller uses.
    pub now: Duration,
}

impl<'a> FleetView<'a> {
    /// A snapshot at time `now`.
    pub fn new(backends: &'a [BackendView], now: Duration) -> Self {
        Self { backends, now }
    }

    /// The members that may take a request now.
    pub fn usable(&self) -> impl Iterator<Item = &'a BackendView> + 'a {
        self.backends.iter().filter(|b| b.usable)
    }

    /// How many members may take a request now.
    pub fn usable_count(&self) -> usize {
        self.usable().count()
    }

    /// Requests in flight over the whole pool.
    pub fn total_in_flight(&self) -> u64 {
        self.backends.iter().map(|b| u64::from(b.in_flight)).sum()
    }
}

/// `a` is less loaded than `b`, counting load per unit of weight: `a.in_flight / a.weight <
/// b.in_flight / b.weight`, compared by cross-multiplication so no float is involved.
pub(crate) fn lighter(a: &BackendView, b: &BackendView) -> std::cmp::Ordering {
    (u64::from(a.in_flight) * u64::from(b.weight.max(1)))
        .cmp(&(u64::from(b.in_flight) * u64::from(a.weight.max(1))))
}
