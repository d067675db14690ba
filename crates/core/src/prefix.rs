//! Prompt prefix blocks and the per-pool index of which backend was recently sent which blocks.
//!
//! **Blocks.** An engine with prefix caching (vLLM's automatic prefix caching, SGLang's radix
//! cache) reuses the KV cache of a prompt's longest cached prefix, in whole blocks of 16 tokens.
//! The gateway sees text, not token ids, so [`block_hashes`] cuts the rendered prompt
//! ([`crate::RequestProfile::prompt`]: chat messages in order with their roles) into blocks of
//! [`BLOCK_BYTES`] bytes (16 tokens at [`crate::profile::BYTES_PER_TOKEN`] bytes each) and names
//! each full block by a chained hash, `xxh3(block bytes, seed = previous block's hash)`, so a
//! hash stands for the whole prefix up to the end of its block, as an engine's block hash does.
//! A trailing partial block is not hashed: engines do not share partial blocks either.
//!
//! **Index.** [`PrefixIndex`] remembers, per backend of one pool, the blocks of prompts recently
//! routed there, and answers "how many leading blocks of this prompt does each backend hold?".
//! Memory is bounded: each backend holds at most its capacity in blocks, evicting the least
//! recently sent first; the capacity follows the engine's reported KV-cache size
//! ([`crate::EngineLoad::kv_capacity_tokens`]) when known, so the index forgets about as fast as
//! the engine does; a pool's whole index is capped at [`MAX_POOL_BLOCKS`] pairs. Within one
//! prompt, later blocks are evicted before earlier ones, as engines do, so a shared system
//! prompt outlives the questions appended to it.
//!
//! The index is a guess from routing history, not a report from the engine: a backend that
//! restarts or evicts early makes it optimistic, which costs one cold prefill. It sits behind a
//! `Mutex` held for one lookup-and-record, since policies are shared `&self` values.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

use smallvec::SmallVec;

use crate::profile::BYTES_PER_TOKEN;

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
/// caches add up to more: about 56 bytes each, so at most about 56 MiB per pool.
pub const MAX_POOL_BLOCKS: u32 = 1 << 20;

/// Seed of the first block's hash.
const ROOT: u64 = 0x7072_6566_6978_5f30;
/// "No node" in the per-backend lists.
const NIL: u32 = u32::MAX;

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

/// One (block, backend) pair, linked into its backend's recency list.
#[derive(Debug, Clone, Copy)]
struct Node {
    hash: u64,
    backend: u32,
    prev: u32,
    next: u32,
    /// How many times this block was sent to this backend while the index held it.
    uses: u32,
}

/// A backend's recency list: most recent at `head`.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: u32,
    capacity: u32,
}

#[derive(Default)]
struct Inner {
    /// Block hash to the nodes (one per backend holding it).
    map: HashMap<u64, SmallVec<[u32; 4]>, BuildHasherDefault<IdentityHasher>>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    lists: Vec<List>,
}

/// Which backend of a pool was recently sent which prompt blocks. See the module docs.
#[derive(Default)]
pub struct PrefixIndex {
    inner: Mutex<Inner>,
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
        let inner = self.lock();
        inner.nodes.len() - inner.free.len()
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
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
        let inner = self.lock();
        inner.matches(blocks, matched)
    }

    /// Records that `blocks` were sent to `backend`, whose cache holds about `capacity_blocks`
    /// blocks (clamped to 1..=[`MAX_BACKEND_BLOCKS`]); evicts its least recently sent blocks
    /// beyond that.
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
}

impl Inner {
    /// Whether `backend` holds block `hash`.
    fn holds(&self, hash: u64, backend: u32) -> bool {
        self.map.get(&hash).is_some_and(|holders| {
            holders
                .iter()
                .any(|&n| self.nodes[n as usize].backend == backend)
        })
    }

    /// Each backend's blocks of one chain are a prefix of it: recording touches a prompt's
    /// blocks last first, so a block is always at least as recent as every block after it
    /// in its chain, and eviction takes the least recent. So while several backends hold
    /// the leading blocks they are walked block by block, and once few enough are left each
    /// one's depth is found by binary search: a long history behind a shared system prompt
    /// costs a few lookups past the shared part instead of one per block.
    fn matches(&self, blocks: &[u64], matched: &mut [u32]) -> u32 {
        let mut alive: SmallVec<[u32; 16]> = SmallVec::new();
        let mut depth = 0usize;
        for (k, hash) in blocks.iter().enumerate() {
            let Some(holders) = self.map.get(hash) else {
                break;
            };
            if k == 0 {
                alive.extend(holders.iter().map(|&n| self.nodes[n as usize].backend));
            } else {
                alive.retain(|b| {
                    holders
                        .iter()
                        .any(|&n| self.nodes[n as usize].backend == *b)
                });
            }
            if alive.is_empty() {
                break;
            }
            depth = k + 1;
            for &b in &alive {
                if let Some(m) = matched.get_mut(b as usize) {
                    *m = depth as u32;
                }
            }
            // Binary searches (about log2 of the blocks left, per backend still matching)
            // once they cost fewer lookups than walking on.
            let left = blocks.len() - depth;
            let steps = (usize::BITS - left.leading_zeros()) as usize;
            if alive.len() * steps < left {
                let shared = depth;
                for &b in &alive {
                    // Deepest block `b` holds, in shared..=len (it holds block shared - 1).
                    let (mut lo, mut hi) = (shared, blocks.len());
                    while lo < hi {
                        let mid = lo + (hi - lo).div_ceil(2);
                        if self.holds(blocks[mid - 1], b) {
                            lo = mid;
                        } else {
                            hi = mid - 1;
                        }
                    }
                    depth = depth.max(lo);
                    if let Some(m) = matched.get_mut(b as usize) {
                        *m = lo as u32;
                    }
                }
                break;
            }
        }
        if depth == 0 {
            return 0;
        }
        // Hashes are chained, so every holder of the deepest block was sent the whole prefix.
        self.map.get(&blocks[depth - 1]).map_or(0, |holders| {
            holders.iter().fold(0u32, |sum, &n| {
                sum.saturating_add(self.nodes[n as usize].uses)
            })
        })
    }

    fn record(&mut self, blocks: &[u64], backend: u32, capacity_blocks: u32) {
        let b = backend as usize;
        if self.lists.len() <= b {
            self.lists.resize(
                b + 1,
                List {
                    head: NIL,
                    tail: NIL,
                    len: 0,
                    capacity: DEFAULT_BACKEND_BLOCKS,
                },
            );
        }
        self.lists[b].capacity = capacity_blocks.clamp(1, MAX_BACKEND_BLOCKS);
        // Last block first, so the first block ends most recent and is evicted last.
        for &hash in blocks.iter().rev() {
            let existing = self.map.get(&hash).and_then(|holders| {
                holders
                    .iter()
                    .copied()
                    .find(|&n| self.nodes[n as usize].backend == backend)
            });
            match existing {
                Some(n) => {
                    self.unlink(n);
                    self.push_front(n);
                    let uses = &mut self.nodes[n as usize].uses;
                    *uses = uses.saturating_add(1);
                }
                None => {
                    let node = Node {
                        hash,
                        backend,
                        prev: NIL,
                        next: NIL,
                        uses: 1,
                    };
                    let n = match self.free.pop() {
                        Some(n) => {
                            self.nodes[n as usize] = node;
                            n
                        }
                        None => {
                            self.nodes.push(node);
                            (self.nodes.len() - 1) as u32
                        }
                    };
                    self.push_front(n);
                    self.map.entry(hash).or_default().push(n);
                }
            }
        }
        while self.lists[b].len > self.lists[b].capacity {
            let tail = self.lists[b].tail;
            if tail == NIL {
                break;
            }
            self.evict(tail);
        }
    }

    fn push_front(&mut self, n: u32) {
        let b = self.nodes[n as usize].backend as usize;
        let list = &mut self.lists[b];
        let old = list.head;
        list.head = n;
        if old == NIL {
            list.tail = n;
        }
        list.len += 1;
        self.nodes[n as usize].prev = NIL;
        self.nodes[n as usize].next = old;
        if old != NIL {
            self.nodes[old as usize].prev = n;
        }
    }

    fn unlink(&mut self, n: u32) {
        let Node {
            backend,
            prev,
            next,
            ..
        } = self.nodes[n as usize];
        let list = &mut self.lists[backend as usize];
        if prev == NIL {
            list.head = next;
        } else {
            self.nodes[prev as usize].next = next;
        }
        let list = &mut self.lists[backend as usize];
        if next == NIL {
            list.tail = prev;
        } else {
            self.nodes[next as usize].prev = prev;
        }
        self.lists[backend as usize].len -= 1;
    }

    fn evict(&mut self, n: u32) {
        self.unlink(n);
        let hash = self.nodes[n as usize].hash;
        if let Some(holders) = self.map.get_mut(&hash) {
            holders.retain(|m| *m != n);
            if holders.is_empty() {
                self.map.remove(&hash);
            }
        }
        self.free.push(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The block-by-block walk `Inner::matches` replaced, as the reference it must agree with.
    fn matches_by_walking(inner: &Inner, blocks: &[u64], matched: &mut [u32]) -> u32 {
        matched.fill(0);
        let mut alive: Vec<u32> = Vec::new();
        let mut deepest = None;
        for (k, hash) in blocks.iter().enumerate() {
            let Some(holders) = inner.map.get(hash) else {
                break;
            };
            let holds = |b: u32| {
                holders
                    .iter()
                    .any(|&n| inner.nodes[n as usize].backend == b)
            };
            if k == 0 {
                alive.extend(holders.iter().map(|&n| inner.nodes[n as usize].backend));
            } else {
                alive.retain(|b| holds(*b));
            }
            if alive.is_empty() {
                break;
            }
            deepest = Some(holders);
            for &b in &alive {
                if let Some(m) = matched.get_mut(b as usize) {
                    *m = k as u32 + 1;
                }
            }
        }
        deepest.map_or(0, |holders| {
            holders.iter().fold(0u32, |sum, &n| {
                sum.saturating_add(inner.nodes[n as usize].uses)
            })
        })
    }

    /// A chain of `len` block hashes, chained as `block_hashes` chains them, whose first
    /// `shared` blocks are those of chain `root`.
    fn chain(root: u64, shared: usize, own: u64, len: usize) -> Vec<u64> {
        let mut parent = ROOT;
        (0..len)
            .map(|k| {
                let content = if k < shared { root } else { own };
                parent = xxhash_rust::xxh3::xxh3_64_with_seed(&content.to_le_bytes(), parent);
                parent
            })
            .collect()
    }

    proptest! {
        #[test]
        fn matches_agrees_with_the_block_by_block_walk(
            records in proptest::collection::vec(
                (0u64..3, 0usize..40, 0u64..6, 1usize..80, 0u32..8, 2u32..60),
                1..60,
            ),
            queries in proptest::collection::vec((0u64..3, 0usize..40, 0u64..6, 1usize..80), 1..8),
        ) {
            let idx = PrefixIndex::new();
            for (root, shared, own, len, backend, cap) in records {
                idx.record(&chain(root, shared, own + 10, len), backend, cap);
            }
            for (root, shared, own, len) in queries {
                let q = chain(root, shared, own + 10, len);
                let (mut fast, mut slow) = ([0u32; 10], [0u32; 10]);
                let reuse = idx.matches(&q, &mut fast);
                let expected = matches_by_walking(&idx.lock(), &q, &mut slow);
                prop_assert_eq!(fast, slow);
                prop_assert_eq!(reuse, expected);
            }
        }
    }

    fn text(seed: u8, blocks: usize) -> String {
        (0..blocks * BLOCK_BYTES)
            .map(|i| char::from(b'a' + ((i as u8).wrapping_mul(7) ^ seed) % 26))
            .collect()
    }

    #[test]
    fn equal_prefixes_share_hashes_and_partial_blocks_are_not_hashed() {
        let sys = text(1, 3);
        let a = block_hashes(&format!("{sys}{}", text(2, 2)));
        let b = block_hashes(&format!("{sys}{}", text(3, 1)));
        assert_eq!(a.len(), 5);
        assert_eq!(b.len(), 4);
        assert_eq!(a[..3], b[..3]);
        assert_ne!(a[3], b[3]);
        assert_eq!(block_hashes(&sys[..BLOCK_BYTES * 2 + 10]).len(), 2);
        // Same block text at another position is another block (the hash is chained).
        let twice = block_hashes(&format!("{0}{0}", text(4, 1)));
        assert_ne!(twice[0], twice[1]);
    }

    #[test]
    fn matches_count_leading_blocks_per_backend() {
        let idx = PrefixIndex::new();
        let long = block_hashes(&format!("{}{}", text(1, 4), text(2, 4)));
        idx.record(&long[..4], 0, 100);
        idx.record(&long, 2, 100);
        let mut m = [9u32; 4];
        idx.matches(&long, &mut m);
        assert_eq!(m, [4, 0, 8, 0]);
        // A prompt that diverges after two blocks matches two on both.
        let other = block_hashes(&format!("{}{}", &text(1, 4)[..2 * BLOCK_BYTES], text(5, 3)));
        idx.matches(&other, &mut m);
        assert_eq!(m, [2, 0, 2, 0]);
    }

    #[test]
    fn capacity_evicts_least_recent_and_suffixes_before_prefixes() {
        let idx = PrefixIndex::new();
        let a = block_hashes(&text(1, 4));
        let b = block_hashes(&text(2, 4));
        idx.record(&a, 0, 6);
        idx.record(&b, 0, 6);
        assert_eq!(idx.len(), 6, "bounded by capacity");
        let mut m = [0u32; 1];
        idx.matches(&b, &mut m);
        assert_eq!(m[0], 4, "the most recent prompt is whole");
        idx.matches(&a, &mut m);
        assert_eq!(m[0], 2, "the older one lost its last blocks, not its first");
        // Shrinking the capacity (the engine reported a smaller cache) evicts at once.
        idx.record(&b, 0, 2);
        assert_eq!(idx.len(), 2);
        idx.matches(&a, &mut m);
        assert_eq!(m[0], 0);
    }

    #[test]
    fn recording_again_refreshes_instead_of_duplicating() {
        let idx = PrefixIndex::new();
        let a = block_hashes(&text(1, 3));
        for _ in 0..10 {
            idx.record(&a, 1, 100);
        }
        assert_eq!(idx.len(), 3);
        let mut m = [0u32; 2];
        idx.matches(&a, &mut m);
        assert_eq!(m, [0, 3]);
    }

    #[test]
    fn reuse_counts_sends_of_the_deepest_held_block_over_its_holders() {
        let idx = PrefixIndex::new();
        let sys = text(1, 2);
        let a = block_hashes(&format!("{sys}{}", text(2, 2)));
        let mut m = [0u32; 2];
        assert_eq!(idx.matches(&a, &mut m), 0, "nothing held");
        for _ in 0..3 {
            idx.record(&a[..2], 0, 100);
        }
        idx.record(&a[..2], 1, 100);
        idx.record(&a, 1, 100);
        // The deepest block held anywhere is a's last, sent once (to backend 1).
        assert_eq!(idx.matches(&a, &mut m), 1);
        assert_eq!(m, [2, 4]);
        // A prompt sharing only the system part: its last shared block went 3 + 2 times.
        let b = block_hashes(&format!("{sys}{}", text(3, 2)));
        assert_eq!(idx.matches(&b, &mut m), 5);
        assert_eq!(m, [2, 2]);
    }

    #[test]
    fn memory_stays_bounded_under_churn() {
        let idx = PrefixIndex::new();
        for i in 0..500u32 {
            let blocks: Vec<u64> = (0..20).map(|k| u64::from(i) * 1000 + k).collect();
            idx.record(&blocks, i % 4, 50);
        }
        assert_eq!(idx.len(), 200);
        let inner = idx.lock();
        assert!(inner.nodes.len() <= 220, "slab reuses freed nodes");
        assert_eq!(inner.map.len(), 200);
    }
}
