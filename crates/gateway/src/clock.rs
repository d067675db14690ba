//! Gateway time: a monotonic `Duration` since the first call in this process. Routing, cooldowns,
//! live signals and scrapes all stamp with it, so their times compare directly; `core` receives
//! it as `FleetView::now` and never reads a clock itself.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Time since the process's gateway epoch.
pub fn now() -> Duration {
    EPOCH.get_or_init(Instant::now).elapsed()
}

/// Gateway time of an `Instant` taken earlier (zero if before the epoch).
pub fn at(instant: Instant) -> Duration {
    instant.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
}
