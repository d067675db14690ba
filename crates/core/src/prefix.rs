//! Prompt prefix blocks and the per-pool index of which backend was recently sent which blocks.
//!
//! **Blocks.** An engine with prefix caching (vLLM's automatic prefix caching, SGLang's radix
//! cache) reuses the KV cache of a prompt's longest cached prefix, in whole blocks of 16 tokens.
//! The gateway sees text, not token ids, so [`block_hashes`] cuts the rendered prompt
//! ([`crate::RequestProfile::prompt`]: chat messages in order with their roles) into blocks of
//! [`BLOCK_BYTES`] bytes (16 tokens at [`crate::profile::BYTES_PER_TOKEN`] bytes each) and names
//! each full block by a chained hash, `xxh3(block bytes, seed = previous block's hash)`, so a
//! hash stands for the whole prefix up to the end of its block, as an engine's block hash does.
//! A trailing partial block is not hashed: engines do not share partial blocks either. The
//! hashes are computed once per request, with its profile
//! ([`crate::RequestProfile::prompt_blocks`]), over at most the profile's prompt cap.
//!
//! **Index.** [`PrefixIndex`] remembers, per backend of one pool, the blocks of prompts recently
//! routed there, and answers "how many leading blocks of this prompt does each backend hold?".
//! Memory is bounded: each backend holds at most its capacity in blocks, evicting the least
//! recently sent first; the capacity follows the engine's reported KV-cache size
//! ([`crate::EngineLoad::kv_capacity_tokens`]) when known, so the index forgets about as fast as
//! the engine does; a pool's whole index is capped at [`MAX_POOL_BLOCKS`] pairs. Within one
//! prompt, later blocks are evicted before earlier ones, as engines do, so a shared system
//! prompt outlives the questions appended to it. A prompt longer than a backend's capacity has
//! only its leading blocks recorded.
//!
//! The recorded prompts are kept as a tree of runs of blocks (`tree`), so a lookup or a record
//! costs a step per branch point on the prompt's path (at most [`MAX_PATH_SEGMENTS`]) and a
//! binary search, not a step per block: a 32k-token prompt costs about what a 2k one does.
//!
//! The index is a guess from routing history, not a report from the engine: a backend that
//! restarts or evicts early makes it optimistic, which costs one cold prefill. It sits behind a
//! `Mutex` held for one lookup-and-record, since policies are shared `&self` values.

use std::hash::Hasher;
use std::sync::Mutex;

use crate::profile::BYTES_PER_TOKEN;

mod tree;

/// Tokens per block: vLLM's default `--block-size`.
pub const BLOCK_TOKENS: usize = 16;
/// Bytes of rendered prompt per block.
pub const BLOCK_BYTES: usize = BLOCK_TOKENS * BYTES_PER_TOKEN;
/// Blocks a backend may hold in the index when its engine reports no KV-cache size: 8192 blocks,
/// 131,072 tokens, about an 8B model's cache on a 40 GB GPU.
pub const DEFAULT_BACKEND_BLOCKS: u32 = 8192;
/// Most blocks one backend may hold in the index whatever its engine reports (2M tokens), so a
/// misreport cannot grow the index without bound.
pub const MAX_BACKEND_BLOCKS: u32 = 1 << 17;
/// Most (block, backend) pairs one pool's index holds, shared out evenly when the backends'
/// caches add up to more. A block costs 8 bytes plus its share of its run's record (about 100
/// bytes a run), so a pool's index takes 8 to about 100 MiB at the cap, the higher figure
/// only when every recorded prompt leaves the others after one block.
pub const MAX_POOL_BLOCKS: u32 = 1 << 20;
/// Most runs of blocks a lookup or a record walks on one prompt's path. Past them the prompt
/// matches no deeper and is recorded no further: only prompts that end, or part from every
/// other, at hundreds of different depths on one path come near it.
pub const MAX_PATH_SEGMENTS: usize = 256;

/// Seed of the first block's hash.
const ROOT: u64 = 0x7072_6566_6978_5f30;

/// The chained hashes of `prompt`'s full blocks, first block first.
pub fn block_hashes(prompt: &str) -> Vec<u64> {
    let bytes = prompt.as_bytes();
    let mut out = Vec::with_capacity(bytes.len() / BLOCK_BYTES);
    let mut parent = ROOT;
    for block in bytes.chunks_exact(BLOCK_BYTES) {
        parent = xxhash_rust::xxh3::xxh3_64_with_seed(block, parent);
        out.push(parent);
    }
    out
}

/// Block hashes are already uniformly distributed: the map uses them as they are.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Which backend of a pool was recently sent which prompt blocks. See the module docs.
#[derive(Default)]
pub struct PrefixIndex {
    inner: Mutex<tree::Tree>,
}

impl std::fmt::Debug for PrefixIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixIndex")
            .field("blocks", &self.len())
            .finish()
    }
}

impl PrefixIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// (block, backend) pairs held, over all backends.
    pub fn len(&self) -> usize {
        usize::try_from(self.lock().len()).unwrap_or(usize::MAX)
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, tree::Tree> {
        // A panic while holding the lock cannot leave the lists half-linked in a way that
        // breaks memory safety; carry on with whatever state there is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills `matched[b]` with how many leading blocks of `blocks` backend `b` holds (0 for a
    /// backend the index has never seen; `matched` is indexed by backend and may be longer or
    /// shorter than the pool).
    ///
    /// Returns the reuse count of the deepest block any backend holds: how many times it was
    /// sent, summed over the backends holding it (0 when no backend holds the first block).
    /// A system prompt or document many requests share counts high; a chat history, whose
    /// deepest block only its own earlier turn sent, counts 1.
    pub fn matches(&self, blocks: &[u64], matched: &mut [u32]) -> u32 {
        matched.fill(0);
        self.lock().matches(blocks, matched)
    }

    /// Records that `blocks` were sent to `backend`, whose cache holds about `capacity_blocks`
    /// blocks (clamped to 1..=[`MAX_BACKEND_BLOCKS`]); evicts its least recently sent blocks
    /// beyond that. Only as many leading blocks as the capacity are recorded.
    pub fn record(&self, blocks: &[u64], backend: u32, capacity_blocks: u32) {
        self.lock().record(blocks, backend, capacity_blocks);
    }

    /// [`matches`](Self::matches) then, when `send_to` picks a backend from the result,
    /// [`record`](Self::record) for it, under one lock.
    pub fn match_and_record(
        &self,
        blocks: &[u64],
        matched: &mut [u32],
        send_to: impl FnOnce(&[u32], u32) -> Option<(u32, u32)>,
    ) {
        matched.fill(0);
        let mut inner = self.lock();
        let reuse = inner.matches(blocks, matched);
        if let Some((backend, capacity)) = send_to(matched, reuse) {
            inner.record(blocks, backend, capacity);
        }
    }

    /// A copy of this index for the same pool after its members changed: `new_position(b)` is
    /// where backend `b` now sits, `None` for one that left (its blocks are dropped). Kept
    /// backends keep their blocks, recency and counts.
    pub fn remapped(&self, new_position: impl Fn(usize) -> Option<usize>) -> PrefixIndex {
        let mut tree = self.lock().clone();
        tree.remap(new_position);
        PrefixIndex {
            inner: Mutex::new(tree),
        }
    }
}

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;
