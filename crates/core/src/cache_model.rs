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
//! For a slot backend `prefix_aware` also counts what a request would make the pool forget:
//! the prompt held by the slot it would overwrite, unless another slot of the pool holds it
//! too (at one token of cost per forgotten token, [`SlotOutcome::evicted_blocks`]). Two slots
//! holding the same document are then the first to be reused, and documents keep a home.
//!
//! The slot model is a guess from routing history, as the index is: which slots are idle is
//! inferred from the gateway's own requests in flight (taken to hold the slots expected to end
//! last, from the backend's latency averages), and a restarted server or another gateway's
//! traffic makes it optimistic, which costs one cold prefill. Not modelled: llama.cpp's
//! host-memory prompt cache (`--cache-ram`), which saves a slot's prompt before reusing the
//! slot and restores a saved prompt into it; with it a server remembers more than its slots
//! (see the README's policy section).

use std::sync::Mutex;
use std::time::Duration;

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
    /// When its last request is expected to end (decision time plus the backend's expected
    /// latency for it; the decision time when unknown).
    busy_until: Duration,
}

/// Where a prompt would land on a slot backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotPick {
    /// The slot the server would choose, or the gateway names.
    pub slot: usize,
    /// Leading blocks of the prompt that slot holds.
    pub matched_blocks: u32,
    /// The gateway names the slot (llama.cpp's `id_slot`): it holds the prompt's prefix.
    pub pinned: bool,
}

/// When a slot is chosen and whether the gateway steers it (see [`SlotCaches::pick`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Steering {
    /// The decision's time.
    pub now: Duration,
    /// `None`: the server chooses among its idle slots, as llama.cpp does by itself. `Some`:
    /// the gateway names the slot holding the prompt's prefix (llama.cpp's `id_slot`), even
    /// one still busy when it is expected to be free within this long, where llama.cpp
    /// holds the request until the slot frees instead of giving it another slot and
    /// overwriting the prompt that slot holds.
    pub max_wait: Option<Duration>,
}

/// What the slot model predicts for one backend of a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SlotOutcome {
    /// Leading blocks of the prompt the chosen slot holds.
    pub matched_blocks: u32,
    /// Blocks the chosen slot holds that the prompt would overwrite and that no other slot
    /// of the pool holds: a prompt the pool forgets, to be computed again when next asked for.
    pub evicted_blocks: u32,
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
    /// requests running) would give a prompt of `blocks`, or the gateway would name under
    /// `steering`, and how many of its leading blocks that slot holds.
    pub fn pick(
        &self,
        backend: usize,
        (slots, in_flight): (u32, u32),
        blocks: &[u64],
        steering: Steering,
    ) -> SlotPick {
        let inner = self.lock();
        let empty = Vec::new();
        let table = inner.get(backend).unwrap_or(&empty);
        pick_in(table, (slots, in_flight), blocks, steering)
    }

    /// [`pick`](Self::pick) and what it would evict (see [`SlotOutcome`]).
    pub fn outcome(
        &self,
        backend: usize,
        (slots, in_flight): (u32, u32),
        blocks: &[u64],
        steering: Steering,
    ) -> SlotOutcome {
        let inner = self.lock();
        let empty = Vec::new();
        let table = inner.get(backend).unwrap_or(&empty);
        let pick = pick_in(table, (slots, in_flight), blocks, steering);
        let Some(held) = table.get(pick.slot).map(|s| &s.blocks) else {
            return SlotOutcome {
                matched_blocks: pick.matched_blocks,
                evicted_blocks: 0,
            };
        };
        let lost = held.len().saturating_sub(pick.matched_blocks as usize);
        // Held elsewhere: another slot shares at least half of it.
        let need = held.len().div_ceil(2).max(1);
        let elsewhere = inner.iter().enumerate().any(|(b, slots)| {
            slots.iter().enumerate().any(|(i, s)| {
                (b, i) != (backend, pick.slot) && common_prefix(&s.blocks, held) >= need
            })
        });
        SlotOutcome {
            matched_blocks: pick.matched_blocks,
            evicted_blocks: if elsewhere {
                0
            } else {
                u32::try_from(lost).unwrap_or(u32::MAX)
            },
        }
    }

    /// Records that `blocks` went to `backend`'s slot [`pick`](Self::pick) chose for them,
    /// keeping at most `ctx_tokens` of them, and returns that choice; the request is expected
    /// to take `latency` once it has the slot (a steered request waiting for a busy slot gets
    /// it when its current request is expected to end).
    pub fn record(
        &self,
        backend: usize,
        (slots, ctx_tokens, in_flight): (u32, u32, u32),
        blocks: &[u64],
        steering: Steering,
        latency: Duration,
    ) -> SlotPick {
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
        let pick = pick_in(table, (slots, in_flight), blocks, steering);
        let keep = (ctx_tokens as usize / BLOCK_TOKENS).min(blocks.len());
        let slot = &mut table[pick.slot];
        slot.blocks.clear();
        slot.blocks.extend_from_slice(&blocks[..keep]);
        slot.last_used = tick;
        let start = if pick.pinned {
            slot.busy_until.max(steering.now)
        } else {
            steering.now
        };
        slot.busy_until = start + latency;
        pick
    }
}

impl SlotCaches {
    /// A copy for the pool after its members changed (see [`crate::routing::Moved`]): kept
    /// backends' slots at their new positions, those of backends that left dropped.
    pub fn remapped(&self, moved: &crate::routing::Moved) -> SlotCaches {
        SlotCaches {
            inner: Mutex::new(moved.remap(&self.lock())),
            tick: std::sync::atomic::AtomicU64::new(
                self.tick.load(std::sync::atomic::Ordering::Relaxed),
            ),
        }
    }

    /// `matched` (the prefix index's leading blocks per backend) as each backend's cache model
    /// has it: a slot backend's from its modelled slots, an opaque one's 0. `None` when every
    /// backend is paged, so the index's answer stands as it is.
    pub fn matched(
        &self,
        fleet: &FleetView<'_>,
        blocks: &[u64],
        matched: &[u32],
        max_wait: Option<Duration>,
    ) -> Option<SmallVec<[SlotOutcome; 64]>> {
        let steering = Steering {
            now: fleet.now,
            max_wait,
        };
        if fleet.backends.iter().all(|b| b.cache == CacheModel::Paged) {
            return None;
        }
        let mut out: SmallVec<[SlotOutcome; 64]> = matched
            .iter()
            .map(|&m| SlotOutcome {
                matched_blocks: m,
                evicted_blocks: 0,
            })
            .collect();
        for b in fleet.backends {
            let Some(m) = out.get_mut(b.id.index()) else {
                continue;
            };
            match b.cache {
                CacheModel::Paged => {}
                CacheModel::Opaque => m.matched_blocks = 0,
                CacheModel::Slots { slots, .. } => {
                    *m = self.outcome(b.id.index(), (slots, b.in_flight), blocks, steering);
                }
            }
        }
        Some(out)
    }

    /// Records a decision for `chosen` when it is a slot backend; the request is expected to
    /// take `latency` there. Returns the slot to name to the server when the request is
    /// steered to one (see [`Steering::max_wait`]).
    pub fn record_decision(
        &self,
        fleet: &FleetView<'_>,
        chosen: BackendId,
        blocks: &[u64],
        latency: Option<Duration>,
        max_wait: Option<Duration>,
    ) -> Option<u32> {
        let b = fleet.backends.get(chosen.index())?;
        let CacheModel::Slots { slots, ctx_tokens } = b.cache else {
            return None;
        };
        let steering = Steering {
            now: fleet.now,
            max_wait,
        };
        let pick = self.record(
            chosen.index(),
            (slots, ctx_tokens, b.in_flight),
            blocks,
            steering,
            latency.unwrap_or_default(),
        );
        pick.pinned
            .then(|| u32::try_from(pick.slot).unwrap_or(u32::MAX))
    }
}

/// llama.cpp's choice among `table`'s idle slots (see the module docs), or the gateway's when
/// `steering` names one. The gateway's `in_flight` requests hold the slots expected to end
/// last (ties: the most recently used); when every slot is busy the request waits for the one
/// expected to end first.
fn pick_in(
    table: &[Slot],
    (slots, in_flight): (u32, u32),
    blocks: &[u64],
    steering: Steering,
) -> SlotPick {
    let n = slots.clamp(1, MAX_SLOTS) as usize;
    if table.len() != n {
        // Never used (or resized): every slot is empty; llama.cpp takes the first.
        return SlotPick {
            slot: 0,
            matched_blocks: 0,
            pinned: false,
        };
    }
    let mut order: Vec<usize> = (0..n).collect();
    // Expected to end last first (ties: most recently used first).
    let key = |i: usize| (table[i].busy_until, table[i].last_used);
    order.sort_by_key(|&b| std::cmp::Reverse(key(b)));
    let busy = (in_flight as usize).min(n - 1);
    let (busy, idle) = order.split_at(busy);
    // The slot sharing the largest fraction of the prompt, over the similarity threshold.
    let similar = |candidates: &mut dyn Iterator<Item = usize>| {
        let mut best: Option<(f64, usize, usize)> = None;
        for i in candidates {
            if table[i].blocks.is_empty() || blocks.is_empty() {
                continue;
            }
            let lcp = common_prefix(&table[i].blocks, blocks);
            let sim = lcp as f64 / blocks.len() as f64;
            if sim > DEFAULT_SLOT_SIMILARITY && best.is_none_or(|(s, _, _)| sim > s) {
                best = Some((sim, i, lcp));
            }
        }
        best
    };
    let mut best = similar(&mut idle.iter().copied());
    if let Some(max_wait) = steering.max_wait {
        // A busy slot freeing soon that holds more of the prompt than any idle one.
        let soon = steering.now + max_wait;
        let mut waiting = busy
            .iter()
            .copied()
            .filter(|&i| table[i].busy_until <= soon);
        if let Some(b) = similar(&mut waiting) {
            if best.is_none_or(|(s, _, _)| b.0 > s) {
                best = Some(b);
            }
        }
    }
    if let Some((_, slot, lcp)) = best {
        return SlotPick {
            slot,
            matched_blocks: u32::try_from(lcp).unwrap_or(u32::MAX),
            pinned: steering.max_wait.is_some(),
        };
    }
    // The least recently used of the idle slots, when none is similar enough.
    let lru = idle
        .iter()
        .copied()
        .min_by_key(|&i| table[i].last_used)
        .unwrap_or(0);
    SlotPick {
        slot: lru,
        matched_blocks: u32::try_from(common_prefix(&table[lru].blocks, blocks))
            .unwrap_or(u32::MAX),
        pinned: false,
    }
}

#[cfg(test)]
mod tests;
