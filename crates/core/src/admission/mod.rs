//! Admission arithmetic: whether a request goes now, waits, or is refused, and in what order
//! waiting requests go. Pure: no I/O, no clock; every function takes `now`.
//!
//! - [`Priority`]: the five levels a request can have, and how a client may lower its own.
//! - [`AdmissionQueue`]: a pool's waiting room, by priority with aging, fair between tenants
//!   within a level ([`VirtualTokenCounter`]), with per-level timeouts and length limits, and
//!   shedding of the lowest priority first.
//! - [`PrefillShares`]: each tenant's share of a pool's prefill, so one tenant's burst of long
//!   prompts cannot fill every engine ahead of the others.
//! - [`RateLimit`]: token buckets for requests and tokens per minute plus a concurrency cap,
//!   as a key, a tenant, a model or a backend carries them.

mod bucket;
mod priority;
mod queue;
mod share;
mod vtc;

pub use bucket::{Grant, RateLimit, RateLimitSpec, Throttle, TokenBucket};
pub use priority::{Priority, PriorityError};
pub use queue::{AdmissionQueue, Entered, LevelSettings, QueueSettings, Refused, Waiting};
pub use share::PrefillShares;
pub use vtc::{TenantId, VirtualTokenCounter, INPUT_WEIGHT, OUTPUT_WEIGHT};
