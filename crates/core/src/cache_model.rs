//! What routing assumes a backend's engine keeps cached, per engine kind, and the slot model
//! for engines that keep one prompt per slot (llama.cpp).
//!
//! [`CacheModel`] travels in each [`BackendView`](crate::BackendView); the gateway sets it from
//! the engine it detected (or config), the simulator from its engine mode:
//!
//! - [`CacheModel::Paged`] (vLLM, SGLang, TGI, and anything not yet detected): one prefix cache
//!   of fixed-size blocks shared by every request, evicting the least recently used block. The
//!   pool's [`PrefixIndex`](crate::PrefixIndex) predicts it, sized from the engine's reported
//!   KV capacity (`cache_config_info`, `max_total_num_tokens`).
//! - [`CacheModel::Slots`] (llama.cpp's server): `total_slots` slots, each holding the last
//!   prompt it served (up to its share of `n_ctx`). A request takes an idle slot: the one whose
//!   cached prompt shares the largest fraction of the new prompt, if that fraction is over the
//!   server's `--slot-prompt-similarity` (0.1 by default), else the least recently used idle
//!   slot. It reuses only that slot's common prefix, so a server holds at most `total_slots`
//!   prompts however large its cache is. [`SlotCaches`] replays that choice per backend.
//! - [`CacheModel::Opaque`] (hosted APIs): nothing is predicted; their caching is not ours to
//!   know, so routing counts no prompt token as cached there.
//!
//! The slot model is a guess from routing history, as the index is: which slots are idle is
//! inferred from the gateway's own requests in flight (the most recently used slots are taken
//! to be the busy ones), and a restarted server or another gateway's traffic makes it
//! optimistic, which costs one cold prefill.

use std::sync::Mutex;

use smallvec::SmallVec;

use crate::fleet::{BackendId, FleetView};
use crate::prefix::BLOCK_TOKENS;

/// llama.cpp's default `--slot-prompt-similarity`: the fraction of a new prompt a slot's
/// cached prompt must share for the slot to be chosen over the least recently used one.
pub const DEFAULT_SLOT_SIMILARITY: f64 = 0.1;

/// Most slots one backend is modelled with, whatever it reports, so a misreport cannot grow
/// the model without bound.
pub const MAX_SLOTS: u32 = 256;

/// How a backend's engine caches prompts, as routing models it. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheModel {
    /// A paged prefix cache shared by every request (vLLM, SGLang): block LRU.
    #[default]
    Paged,
    /// One cached prompt per slot with similarity-based slot reuse (llama.cpp).
    Slots {
        /// Slots of the server (`total_slots` in llama.cpp's `GET /props`).
        slots: u32,
        /// Tokens one slot holds (`default_generation_settings.n_ctx` in `GET /props`).
        ctx_tokens: u32,
    },
    /// No prediction: hosted APIs.
    Opaque,
}

/// One modelled slot.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// Block hashes of the last prompt sent to it, at most the slot's context.
    blocks: Vec<u64>,
    /// Order of its last use (0: never used).
    last_used: u64,
}

/// Where a prompt would land on a slot backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPick {
    /// The slot the server would choose.
    pub slot: usize,
    /// Leading blocks of the prompt that slot holds.
    pub matched_blocks: u32,
}

/// Per backend of one pool, the prompts its slots were last sent. See the module docs.
#[derive(Debug, Default)]
pub struct SlotCaches {
    /// Per backend (by pool index): its slots; empty until first used.
    inner: Mutex<Vec<Vec<Slot>>>,
    /// Last use counter, shared by the pool.
    tick: std::sync::atomic::AtomicU64,
}

/// Leading blocks `a` and `b` share.
fn common_prefix(a: &[u64], b: &[u64]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl SlotCaches {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Vec<Slot>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot backend `backend` (with `slots` slots and `in_flight` of the gateway's
    /// requests running) would give a prompt of `blocks`, and how many of its leading blocks
    /// that slot holds.
    pub fn pick(&self, backend: usize, slots: u32, in_flight: u32, blocks: &[u64]) -> SlotPick {
        let inner = self.lock();
        let empty = Vec::new();
        let table = inner.get(backend).unwrap_or(&empty);
        pick_in(table, slots, in_flight, blocks)
    }

    /// Records that `blocks` went to `backend`'s slot [`pick`](Self::pick) chose for them,
    /// keeping at most `ctx_tokens` of them.
    pub fn record(
        &self,
        backend: usize,
        slots: u32,
        ctx_tokens: u32,
        in_flight: u32,
        blocks: &[u64],
    ) {
        let tick = 1 + self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut inner = self.lock();
        if inner.len() <= backend {
            inner.resize_with(backend + 1, Vec::new);
        }
        let n = slots.clamp(1, MAX_SLOTS) as usize;
        let table = &mut inner[backend];
        // The server was restarted with another slot count: start over.
        if table.len() != n {
            *table = vec![Slot::default(); n];
        }
        let at = pick_in(table, slots, in_flight, blocks).slot;
        let keep = (ctx_tokens as usize / BLOCK_TOKENS).min(blocks.len());
        let slot = &mut table[at];
        slot.blocks.clear();
        slot.blocks.extend_from_slice(&blocks[..keep]);
        slot.last_used = tick;
    }
}

impl SlotCaches {
    /// `matched` (the prefix index's leading blocks per backend) as each backend's cache model
    /// has it: a slot backend's from its modelled slots, an opaque one's 0. `None` when every
    /// backend is paged, so the index's answer stands as it is.
    pub fn matched(
        &self,
        fleet: &FleetView<'_>,
        blocks: &[u64],
        matched: &[u32],
    ) -> Option<SmallVec<[u32; 64]>> {
        if fleet.backends.iter().all(|b| b.cache == CacheModel::Paged) {
            return None;
        }
        let mut out: SmallVec<[u32; 64]> = SmallVec::from_slice(matched);
        for b in fleet.backends {
            let Some(m) = out.get_mut(b.id.index()) else {
                continue;
            };
            match b.cache {
                CacheModel::Paged => {}
                CacheModel::Opaque => *m = 0,
                CacheModel::Slots { slots, .. } => {
                    *m = self
                        .pick(b.id.index(), slots, b.in_flight, blocks)
                        .matched_blocks;
                }
            }
        }
        Some(out)
    }

    /// Records a decision for `chosen` when it is a slot backend.
    pub fn record_decision(&self, fleet: &FleetView<'_>, chosen: BackendId, blocks: &[u64]) {
        let Some(b) = fleet.backends.get(chosen.index()) else {
            return;
        };
        if let CacheModel::Slots { slots, ctx_tokens } = b.cache {
            self.record(chosen.index(), slots, ctx_tokens, b.in_flight, blocks);
        }
    }
}

/// llama.cpp's choice among `table`'s idle slots (see the module docs). The gateway's
/// `in_flight` requests hold the most recently used slots; when every slot is busy the request
/// waits for the one used longest ago, which is taken to finish first.
fn pick_in(table: &[Slot], slots: u32, in_flight: u32, blocks: &[u64]) -> SlotPick {
    let n = slots.clamp(1, MAX_SLOTS) as usize;
    if table.len() != n {
        // Never used (or resized): every slot is empty; llama.cpp takes the first.
        return SlotPick {
            slot: 0,
            matched_blocks: 0,
        };
    }
    let mut order: Vec<usize> = (0..n).collect();
    // Most recently used first.
    order.sort_by(|&a, &b| table[b].last_used.cmp(&table[a].last_used));
    let busy = (in_flight as usize).min(n);
    let idle: &[usize] = if busy < n {
        &order[busy..]
    } else {
        &order[n - 1..]
    };
    let mut best: Option<(f64, usize, usize)> = None;
    for &i in idle {
        let lcp = common_prefix(&table[i].blocks, blocks);
        if table[i].blocks.is_empty() || blocks.is_empty() {
            continue;
        }
        let sim = lcp as f64 / blocks.len() as f64;
        if sim > DEFAULT_SLOT_SIMILARITY && best.is_none_or(|(s, _, _)| sim > s) {
            best = Some((sim, i, lcp));
        }
    }
    let (slot, lcp) = match best {
        Some((_, i, lcp)) => (i, lcp),
        None => {
            // Least recently used idle slot (the last of `idle`; never used slots count 0).
            let i = *idle.last().unwrap_or(&0);
            (i, common_prefix(&table[i].blocks, blocks))
        }
    };
    SlotPick {
        slot,
        matched_blocks: u32::try_from(lcp).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests;
