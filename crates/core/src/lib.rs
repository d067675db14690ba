//! `switchyard-core`: the pure logic of Switchyard.
//!
//! Everything here is a function of its inputs: a [`RequestProfile`] (what a request is), a
//! [`FleetView`] (a snapshot of a pool's backends and their live numbers, including the time
//! `now`) and a [`Policy`] (how to choose). The result is a [`Decision`]: a primary backend, an
//! ordered list of fallbacks and the reason. There is no I/O, no clock read and no async runtime
//! in this crate, so the gateway, the tests and the virtual-time simulator run the same code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admission;
pub mod backoff;
pub mod breaker;
pub mod cache_model;
pub mod calendar;
pub mod decision;
pub mod ewma;
pub mod failover;
pub mod fleet;
pub mod ip_text;
pub mod outlier;
pub mod prefix;
pub mod profile;
pub mod retry_budget;
pub mod rng;
pub mod routing;

pub use breaker::{Breaker, BreakerConfig, BreakerState};
pub use cache_model::{CacheModel, SlotCaches};
pub use decision::{CandidateScore, Decision, Detail, Explanation, Reason};
pub use ewma::PeakEwma;
pub use failover::{FailoverPlan, FailoverSettings, GiveUp, Outcome, Progress, Step};
pub use fleet::{
    BackendId, BackendView, EngineLoad, FleetView, GpuLoad, LatencySignals, PoolMember, Price,
};
pub use outlier::{OutlierConfig, OutlierDetector};
pub use prefix::PrefixIndex;
pub use profile::{
    EndpointKind, ParseLimits, ProfileError, RequestMeta, RequestProfile, SessionSource,
};
pub use retry_budget::RetryBudget;
pub use routing::{NoCandidate, Policy, PolicySpec, PolicySpecError};
