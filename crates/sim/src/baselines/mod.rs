//! Routers of other projects, rebuilt from their published designs, to measure Switchyard's
//! policies against on the same virtual-time fleet and workloads (no code of theirs is used).
//!
//! - [`SglangCacheAware`]: SGLang router's `cache_aware` policy (radix-tree prefix match with a
//!   match-ratio threshold, and a load-imbalance override).

mod radix;
pub mod sglang;

pub use sglang::{SglangCacheAware, SglangConfig};
