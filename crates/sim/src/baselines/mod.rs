//! Routers of other projects, rebuilt from their published designs, to measure Switchyard's
//! policies against on the same virtual-time fleet and workloads (no code of theirs is used).
//!
//! - [`SglangCacheAware`]: SGLang router's `cache_aware` policy (radix-tree prefix match with a
//!   match-ratio threshold, and a load-imbalance override).
//! - [`PagedOnly`]: any policy shown every backend as a paged prefix cache, as Switchyard's own
//!   `prefix_aware` routed before it knew engine kinds.

mod paged_only;
mod radix;
pub mod sglang;

pub use paged_only::PagedOnly;
pub use sglang::{SglangCacheAware, SglangConfig};
