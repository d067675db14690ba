//! The KV cache: a pool of fixed-size blocks with automatic prefix caching, as vLLM's
//! (V1) `BlockPool` and `FreeKVCacheBlockQueue` work.
//!
//! A block holds the keys and values of `block_size` consecutive tokens of one sequence. A *full*
//! block is named by a chained hash: `hash(parent block's hash, this block's token ids)`, so a
//! hash identifies the whole prefix up to and including that block, not just its tokens. Blocks
//! are reference counted: several running sequences with the same prefix share the same blocks.
//!
//! When a sequence finishes or is preempted its blocks go back to the free queue but keep their
//! contents and their hash: a later request with the same prefix finds them by hash and takes
//! them back out of the queue (a *hit*) instead of computing them again. A block is only really
//! lost when the queue hands it out for new content: that is an *eviction*, and the queue's
//! order makes it least-recently-used. Blocks without a hash (the partial last block of a
//! sequence) are useless to anyone else, so they are queued at the front and reused first; vLLM
//! queues them at the back with the rest, which only differs in which useless block goes first.
//!
//! The free queue is a doubly linked list threaded through arrays indexed by block id, so taking
//! a hit block out of the middle of it is O(1), as in vLLM.

/// Index of a block in the pool.
pub type BlockId = u32;

/// The parent hash of a sequence's first block. Any constant works; it only has to be the same
/// for every sequence so equal prefixes get equal hashes.
pub const ROOT_HASH: u64 = 0x5357_4954_4348_5944;

/// "No block" in the free queue's links.
const NIL: u32 = u32::MAX;

/// The chained hash of one full block: `xxh3(token ids as little-endian bytes, seed = parent)`.
/// `scratch` is a reusable buffer, so hashing allocates nothing once it has grown.
pub fn hash_block(parent: u64, tokens: &[u32], scratch: &mut Vec<u8>) -> u64 {
    // This runs per block of every simulated prompt: plain indexing into an array, which debug
    // builds compile without calls, for the usual block sizes.
    const STACK: usize = 64;
    let n = tokens.len() * 4;
    if tokens.len() <= STACK {
        let mut buf = [0u8; STACK * 4];
        let mut i = 0;
        while i < tokens.len() {
            let b = tokens[i].to_le_bytes();
            buf[4 * i] = b[0];
            buf[4 * i + 1] = b[1];
            buf[4 * i + 2] = b[2];
            buf[4 * i + 3] = b[3];
            i += 1;
        }
        return xxhash_rust::xxh3::xxh3_64_with_seed(&buf[..n], parent);
    }
    scratch.clear();
    for t in tokens {
        scratch.extend_from_slice(&t.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64_with_seed(scratch, parent)
}

/// Hash to block for every cached block: an open-addressing table with linear probing and
/// backward-shift deletion, sized once for the pool (at most one entry per block, load at most
/// one half). A std `HashMap` would do; this one is deterministic without a hasher seed, never
/// reallocates, and stays fast in the debug builds the tests run in.
#[derive(Debug, Clone)]
struct HashIndex {
    keys: Vec<u64>,
    /// [`NIL`] marks an empty slot.
    vals: Vec<BlockId>,
    mask: usize,
    len: usize,
}

impl HashIndex {
    fn with_capacity(entries: usize) -> Self {
        let slots = (entries.max(1) * 2).next_power_of_two();
        Self {
            keys: vec![0; slots],
            vals: vec![NIL; slots],
            mask: slots - 1,
            len: 0,
        }
    }

    /// The slot holding `key`, or the empty slot where it would go.
    fn find(&self, key: u64) -> usize {
        let (keys, vals) = (&self.keys[..], &self.vals[..]);
        let mut i = key as usize & self.mask;
        while vals[i] != NIL && keys[i] != key {
            i = (i + 1) & self.mask;
        }
        i
    }

    fn get(&self, key: u64) -> Option<BlockId> {
        let v = self.vals[self.find(key)];
        (v != NIL).then_some(v)
    }

    /// Inserts `key -> val` unless `key` is present; whether it inserted.
    fn insert_new(&mut self, key: u64, val: BlockId) -> bool {
        let i = self.find(key);
        if self.vals[i] != NIL {
            return false;
        }
        self.keys[i] = key;
        self.vals[i] = val;
        self.len += 1;
        true
    }

    /// Removes `key` if it maps to `val`.
    fn remove_if(&mut self, key: u64, val: BlockId) {
        let mask = self.mask;
        let mut i = self.find(key);
        let (keys, vals) = (&mut self.keys[..], &mut self.vals[..]);
        if vals[i] != val || val == NIL {
            return;
        }
        // Shift back every following entry that may move into the hole, so lookups never
        // meet a gap before their key.
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            if vals[j] == NIL {
                break;
            }
            let home = keys[j] as usize & mask;
            let stays = if i <= j {
                i < home && home <= j
            } else {
                i < home || home <= j
            };
            if !stays {
                keys[i] = keys[j];
                vals[i] = vals[j];
                i = j;
            }
        }
        vals[i] = NIL;
        self.len -= 1;
    }
}

/// The GPU's KV cache blocks, their reference counts, their hashes and the free queue.
#[derive(Debug, Clone)]
pub struct BlockPool {
    /// Sequences using each block; 0 means the block is in the free queue.
    ref_count: Vec<u32>,
    /// Each block's chained hash, while its contents are a cached full block.
    hash: Vec<Option<u64>>,
    /// Free-queue links (previous, next), [`NIL`] at the ends.
    prev: Vec<u32>,
    next: Vec<u32>,
    /// The block handed out next (least recently used).
    head: u32,
    /// The block freed most recently.
    tail: u32,
    /// Blocks in the free queue, cached or not.
    num_free: u32,
    /// Hash to block, for every block whose contents are still valid.
    cached: HashIndex,
    /// Cached blocks handed out for new content.
    evictions: u64,
}

impl BlockPool {
    /// A pool of `num_blocks` empty blocks, all free.
    pub fn new(num_blocks: u32) -> Self {
        let n = num_blocks as usize;
        let mut pool = Self {
            ref_count: vec![0; n],
            hash: vec![None; n],
            prev: vec![NIL; n],
            next: vec![NIL; n],
            head: NIL,
            tail: NIL,
            num_free: 0,
            cached: HashIndex::with_capacity(n),
            evictions: 0,
        };
        for b in 0..num_blocks {
            pool.push_back(b);
        }
        pool
    }

    /// Total blocks.
    pub fn num_blocks(&self) -> u32 {
        self.ref_count.len() as u32
    }

    /// Blocks no running sequence uses (cached or empty): what new work may take.
    pub fn num_free(&self) -> u32 {
        self.num_free
    }

    /// Fraction of blocks in use by sequences, 0..1, as vLLM's `kv_cache_usage_perc` counts it
    /// (cached blocks with no user count as free).
    pub fn usage(&self) -> f64 {
        if self.ref_count.is_empty() {
            return 0.0;
        }
        1.0 - f64::from(self.num_free) / self.ref_count.len() as f64
    }

    /// Cached blocks handed out for new content since the pool was made.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Full blocks whose contents are cached (in use or free).
    pub fn num_cached(&self) -> usize {
        self.cached.len
    }

    /// The block that holds the prefix named by `hash`, if it is still cached.
    pub fn lookup(&self, hash: u64) -> Option<BlockId> {
        self.cached.get(hash)
    }

    /// Whether `block` is in the free queue (no sequence uses it).
    pub fn is_free(&self, block: BlockId) -> bool {
        self.ref_count[block as usize] == 0
    }

    /// Takes a reference to a cached block found by [`lookup`](Self::lookup), taking it out of
    /// the free queue if nobody was using it.
    pub fn touch(&mut self, block: BlockId) {
        if self.ref_count[block as usize] == 0 {
            self.unlink(block);
        }
        self.ref_count[block as usize] += 1;
    }

    /// Takes the least recently used free block for new content, evicting its cached contents.
    /// `None` when every block is in use.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let block = self.head;
        if block == NIL {
            return None;
        }
        self.unlink(block);
        if let Some(h) = self.hash[block as usize].take() {
            self.cached.remove_if(h, block);
            self.evictions += 1;
        }
        self.ref_count[block as usize] = 1;
        Some(block)
    }

    /// Drops one reference to `block`. With no user left it goes to the free queue: at the back
    /// (most recently used) if its contents are cached, at the front if they are not.
    pub fn release(&mut self, block: BlockId) {
        let rc = &mut self.ref_count[block as usize];
        debug_assert!(*rc > 0, "release of a free block");
        *rc = rc.saturating_sub(1);
        if *rc == 0 {
            if self.hash[block as usize].is_some() {
                self.push_back(block);
            } else {
                self.push_front(block);
            }
        }
    }

    /// Records that `block` now holds the full block named by `hash`, so later requests can
    /// reuse it. If another block already holds that prefix, the first one stays the cached one.
    pub fn register(&mut self, block: BlockId, hash: u64) {
        if self.hash[block as usize].is_some() {
            return;
        }
        if self.cached.insert_new(hash, block) {
            self.hash[block as usize] = Some(hash);
        }
    }

    fn push_back(&mut self, b: BlockId) {
        self.prev[b as usize] = self.tail;
        self.next[b as usize] = NIL;
        if self.tail == NIL {
            self.head = b;
        } else {
            self.next[self.tail as usize] = b;
        }
        self.tail = b;
        self.num_free += 1;
    }

    fn push_front(&mut self, b: BlockId) {
        self.next[b as usize] = self.head;
        self.prev[b as usize] = NIL;
        if self.head == NIL {
            self.tail = b;
        } else {
            self.prev[self.head as usize] = b;
        }
        self.head = b;
        self.num_free += 1;
    }

    fn unlink(&mut self, b: BlockId) {
        let (p, n) = (self.prev[b as usize], self.next[b as usize]);
        if p == NIL {
            self.head = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.prev[b as usize] = NIL;
        self.next[b as usize] = NIL;
        self.num_free -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_hash_names_the_whole_prefix() {
        let mut s = Vec::new();
        // Small blocks hash on the stack, large ones in the scratch buffer: same function.
        let long: Vec<u32> = (0..100).collect();
        let mut bytes = Vec::new();
        long.iter()
            .for_each(|t| bytes.extend_from_slice(&t.to_le_bytes()));
        assert_eq!(
            hash_block(1, &long, &mut s),
            xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, 1)
        );
        assert_eq!(
            hash_block(1, &long[..16], &mut s),
            xxhash_rust::xxh3::xxh3_64_with_seed(&bytes[..64], 1)
        );
        let a = hash_block(ROOT_HASH, &[1, 2, 3], &mut s);
        let b = hash_block(ROOT_HASH, &[1, 2, 4], &mut s);
        assert_ne!(a, b);
        // Same tokens after a different parent: a different block.
        assert_ne!(
            hash_block(a, &[5, 6, 7], &mut s),
            hash_block(b, &[5, 6, 7], &mut s)
        );
        assert_eq!(a, hash_block(ROOT_HASH, &[1, 2, 3], &mut s));
    }

    #[test]
    fn freed_cached_blocks_are_hits_until_evicted_lru() {
        let mut pool = BlockPool::new(3);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        pool.register(a, 10);
        pool.register(b, 20);
        assert_eq!(pool.num_free(), 1);
        pool.release(a);
        pool.release(b);
        assert_eq!(pool.num_free(), 3);
        assert_eq!(pool.usage(), 0.0);
        // A hit takes the block back out of the free queue.
        assert_eq!(pool.lookup(20), Some(b));
        pool.touch(b);
        assert_eq!(pool.num_free(), 2);
        // The never-used block goes first, then the least recently freed cached one (a).
        let c = pool.allocate().unwrap();
        assert_eq!(pool.evictions(), 0);
        assert_ne!(c, a);
        let d = pool.allocate().unwrap();
        assert_eq!(d, a);
        assert_eq!(pool.evictions(), 1);
        assert_eq!(pool.lookup(10), None);
        assert_eq!(pool.lookup(20), Some(b));
        assert_eq!(pool.allocate(), None);
    }

    #[test]
    fn uncached_blocks_are_reused_before_cached_ones() {
        let mut pool = BlockPool::new(2);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        pool.register(a, 1);
        pool.release(a);
        pool.release(b); // partial block, no hash
        assert_eq!(pool.allocate(), Some(b));
        assert_eq!(pool.evictions(), 0);
    }

    #[test]
    fn hash_index_agrees_with_a_hash_map() {
        use std::collections::HashMap;
        let rng = switchyard_core::rng::SplitMix::new(5);
        let mut ours = HashIndex::with_capacity(64);
        let mut std_map: HashMap<u64, u32> = HashMap::new();
        for step in 0..20_000u32 {
            // Few distinct keys whose home slots are the last three and the first of 128, so
            // probe chains form and wrap around.
            let key = (rng.below(96) << 40) | ((125 + rng.below(4)) & 127);
            if rng.below(2) == 0 && std_map.len() < 64 {
                let inserted = ours.insert_new(key, step);
                assert_eq!(inserted, !std_map.contains_key(&key));
                std_map.entry(key).or_insert(step);
            } else if let Some(&v) = std_map.get(&key) {
                ours.remove_if(key, v);
                std_map.remove(&key);
            }
            assert_eq!(ours.get(key), std_map.get(&key).copied());
            assert_eq!(ours.len, std_map.len());
        }
        for (&k, &v) in &std_map {
            assert_eq!(ours.get(k), Some(v));
        }
    }

    #[test]
    fn shared_blocks_are_freed_by_their_last_user() {
        let mut pool = BlockPool::new(1);
        let a = pool.allocate().unwrap();
        pool.register(a, 7);
        pool.touch(a);
        pool.release(a);
        assert!(!pool.is_free(a));
        pool.release(a);
        assert!(pool.is_free(a));
        // A duplicate registration keeps the first block.
        let b = pool.allocate().unwrap();
        assert_eq!(b, a);
        pool.register(b, 8);
        assert_eq!(pool.lookup(8), Some(b));
        assert_eq!(pool.num_cached(), 1);
    }
}
