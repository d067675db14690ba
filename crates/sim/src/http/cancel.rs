//! Clients that leave before their answer is complete. vLLM aborts a request whose client
//! disconnected, so the engine stops spending steps on it; a replica does the same, at once
//! (a stream notices its body being dropped even while it sends nothing, see
//! [`super::stream`]), and records the cancel so that a test or the chaos benchmark can check
//! that a departure upstream of it reached the replica.
//!
//! Recorded: requests the engine had accepted and not finished when their client left.
//! Not recorded: streams the replica's own faults cut, and requests lost in a `crash`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::server::Shared;
use crate::RequestId;

/// Most cancelled requests a replica remembers by key (the total counts them all).
const RECENT_CAP: usize = 16_384;

/// The cancels a replica saw, over its whole life (a crash does not reset it: it is the
/// clients' history, not the engine's).
#[derive(Debug, Default)]
pub struct CancelLog {
    /// Every cancel.
    total: AtomicU64,
    /// The output seeds ([`super::output::output_seed`]) of the latest [`RECENT_CAP`].
    recent: Mutex<VecDeque<u64>>,
}

/// What [`CancelLog::read`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cancellations {
    /// Requests cancelled by their client since the replica started.
    pub total: u64,
    /// The output seeds of the latest ones, oldest first: a request's key, which a client
    /// computes with [`super::output::expected`].
    pub recent: Vec<u64>,
}

impl CancelLog {
    fn record(&self, key: u64) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT_CAP {
            recent.pop_front();
        }
        recent.push_back(key);
    }

    /// Requests cancelled so far.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The total and the recent keys.
    pub fn read(&self) -> Cancellations {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        Cancellations {
            total: self.total(),
            recent: recent.iter().copied().collect(),
        }
    }
}

/// A request in the engine whose client may still leave. Dropped before [`finished`] or
/// [`cut_by_fault`], it aborts the engine's request and, unless the replica crashed, records
/// a cancel.
///
/// [`finished`]: InFlight::finished
/// [`cut_by_fault`]: InFlight::cut_by_fault
#[derive(Debug)]
pub(super) struct InFlight {
    shared: Arc<Shared>,
    id: RequestId,
    /// The key the cancel is recorded under: the request's output seed.
    key: u64,
    /// Still waiting for the engine.
    armed: bool,
}

impl InFlight {
    /// Request `id` (output seed `key`) was just accepted by the engine.
    pub(super) fn new(shared: Arc<Shared>, id: RequestId, key: u64) -> Self {
        Self {
            shared,
            id,
            key,
            armed: true,
        }
    }

    /// The engine finished it (or stopped: a crash): nothing to cancel.
    pub(super) fn finished(&mut self) {
        self.armed = false;
    }

    /// A fault of the replica's own ends it: abort the engine's request, record nothing.
    pub(super) fn cut_by_fault(&mut self) {
        if self.armed {
            self.armed = false;
            self.shared.driver.abort(self.id);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.armed {
            self.shared.driver.abort(self.id);
            if !self.shared.is_crashed() {
                self.shared.cancels.record(self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_counts_everything_and_remembers_the_latest() {
        let log = CancelLog::default();
        for k in 0..(RECENT_CAP as u64 + 5) {
            log.record(k);
        }
        let r = log.read();
        assert_eq!(r.total, RECENT_CAP as u64 + 5);
        assert_eq!(r.recent.len(), RECENT_CAP);
        assert_eq!(r.recent.first(), Some(&5));
        assert_eq!(r.recent.last(), Some(&(RECENT_CAP as u64 + 4)));
    }
}
