//! How much of the prefill queued at each backend is really uncached, for [`super::PrefixAware`].
//!
//! The gateway counts a backend's queued prefill as prompt tokens of requests not yet past
//! their first token ([`crate::BackendView::prefill_tokens`]), whole prompts: it cannot know
//! which part the engine had cached. The policy knows what it expected at each decision, so
//! it keeps, per backend, a ledger of its recent decisions (prompt tokens, expected uncached
//! tokens), newest last. Engines prefill first come, first served, so the pending prompt tokens
//! are the newest entries' prompts: walking back from the newest until they add up to the
//! pending count gives the uncached tokens still to prefill. Pending tokens beyond the ledger
//! (requests it never saw) count whole.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Decisions remembered per backend: more than any engine queue the estimate needs to cover.
const LEDGER_LEN: usize = 256;

/// The prefill pending at one backend, as the ledger reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Pending {
    /// Uncached prompt tokens still to prefill.
    pub uncached_tokens: f64,
    /// Requests waiting for their first token.
    pub requests: f64,
}

/// Per-backend ledgers of recent decisions.
#[derive(Debug, Default)]
pub(crate) struct PrefillLedger {
    ledgers: Mutex<Vec<VecDeque<(u32, u32)>>>,
}

impl PrefillLedger {
    /// Fills `out[b]` with the uncached share of `pending[b]` prompt tokens at each backend,
    /// and how many requests those tokens belong to (a request partly pending counts in part;
    /// tokens beyond the ledger count as requests of `fallback_tokens` each).
    pub(crate) fn uncached_pending(
        &self,
        pending: impl Iterator<Item = u64>,
        fallback_tokens: f64,
        out: &mut [Pending],
    ) {
        let ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        for (b, (pending, slot)) in pending.zip(out.iter_mut()).enumerate() {
            let mut remaining = pending;
            let (mut uncached, mut requests) = (0.0, 0.0);
            if let Some(ledger) = ledgers.get(b) {
                for &(prompt, unc) in ledger.iter().rev() {
                    if remaining == 0 {
                        break;
                    }
                    let take = remaining.min(u64::from(prompt));
                    if prompt > 0 {
                        let part = take as f64 / f64::from(prompt);
                        uncached += f64::from(unc) * part;
                        requests += part;
                    }
                    remaining -= take;
                }
            }
            *slot = Pending {
                uncached_tokens: uncached + remaining as f64,
                requests: requests + remaining as f64 / fallback_tokens.max(1.0),
            };
        }
    }

    /// A copy for the pool after its members changed: kept backends' ledgers at their new
    /// positions, those of backends that left dropped.
    pub(crate) fn remapped(&self, moved: &super::pool_state::Moved) -> PrefillLedger {
        let ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        PrefillLedger {
            ledgers: Mutex::new(moved.remap(&ledgers)),
        }
    }

    /// Records a decision for `backend`.
    pub(crate) fn record(&self, backend: usize, prompt: u64, uncached: u64) {
        let mut ledgers = self.ledgers.lock().unwrap_or_else(|e| e.into_inner());
        if ledgers.len() <= backend {
            ledgers.resize_with(backend + 1, VecDeque::new);
        }
        let ledger = &mut ledgers[backend];
        if ledger.len() == LEDGER_LEN {
            ledger.pop_front();
        }
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        ledger.push_back((clamp(prompt), clamp(uncached.min(prompt))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_tokens_are_the_newest_decisions_and_unknown_ones_count_whole() {
        let l = PrefillLedger::default();
        l.record(0, 1000, 1000); // cold, long done
        l.record(0, 1000, 100); // warm
        l.record(0, 500, 50); // warm, newest
        let mut out = [Pending::default(); 2];
        let p = |uncached_tokens, requests| Pending {
            uncached_tokens,
            requests,
        };
        // 1000 pending: the newest 500 (50 uncached) and half of the one before (50).
        l.uncached_pending([1000u64, 300].into_iter(), 100.0, &mut out);
        assert_eq!(out, [p(100.0, 1.5), p(300.0, 3.0)]);
        // More pending than the ledger knows: the excess counts whole.
        l.uncached_pending([3000u64, 0].into_iter(), 100.0, &mut out);
        assert_eq!(out, [p(1150.0 + 500.0, 3.0 + 5.0), p(0.0, 0.0)]);
    }
}
