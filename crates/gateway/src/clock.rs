//! Gateway time: a monotonic `Duration` since the first call in this process. Routing, cooldowns,
//! live signals and scrapes all stamp with it, so their times compare directly; `core` receives
//! it as `FleetView::now` and never reads a clock itself.
//!
//! It reads tokio's clock (`tokio::time::Instant`), the one every timer of the gateway runs
//! on: in a normal build that is the system's monotonic clock, and under tokio's paused test
//! clock (`start_paused`) the gateway's decisions, timeouts and cooldowns all follow the
//! paused time together, so tests of time-driven behaviour need no real sleeps.

use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Time since the process's gateway epoch.
pub fn now() -> Duration {
    EPOCH.get_or_init(Instant::now).elapsed()
}

/// Gateway time of an `Instant` taken earlier (zero if before the epoch).
pub fn at(instant: Instant) -> Duration {
    instant.saturating_duration_since(*EPOCH.get_or_init(Instant::now))
}
