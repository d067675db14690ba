//! The segment tree behind [`super::PrefixIndex`]: which backend holds which leading blocks of
//! which prompt chain, with per-backend least-recently-sent eviction, in work per lookup and
//! per record that grows with the number of branch points on a prompt's path, not its length.
//!
//! **Segments.** The chains recorded form a tree: two prompts share their blocks up to where
//! they diverge. A [`Segment`] is a run of blocks with no branch and no recorded prompt end
//! inside it; it keeps its blocks' chained hashes in order, so where a prompt leaves it is
//! found by comparing (binary search: a chained hash equal at one position is equal at every
//! earlier one). Segments are found by their first block's hash alone, since a chained hash
//! names its whole prefix: the child of a segment that continues with hash `h` is the segment
//! whose first hash is `h`.
//!
//! **Holdings.** Each backend holds, per segment, a number of its leading blocks (a
//! [`Holding`]). A backend's blocks of one chain are always a prefix of it, so a backend holding
//! part of a segment holds its ancestors whole, and a backend's depth on a prompt is the deepest
//! holding on the prompt's path. A holding counts the sends of its blocks: a segment is split
//! where a recorded prompt ends or a backend's holding stops, so every block of a holding was
//! sent the same number of times.
//!
//! **Recency.** Each backend's holdings sit in a recency list, most recent at the head.
//! Recording a prompt moves the holdings of its path to the head, its first segment first, so
//! a chain's later blocks always sit behind its earlier ones; eviction trims the holding at the
//! tail from its last block. That is the order the block-per-node index this replaced evicted
//! in (its tests keep it as the reference), at one list move per segment instead of per block.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use smallvec::SmallVec;

use super::{IdentityHasher, DEFAULT_BACKEND_BLOCKS, MAX_BACKEND_BLOCKS, MAX_PATH_SEGMENTS};

/// "None" in links and parents.
const NIL: u32 = u32::MAX;

/// A run of blocks of recorded chains with no branch inside.
#[derive(Debug, Clone, Default)]
struct Segment {
    /// Chained hashes of its blocks, in chain order.
    hashes: Vec<u64>,
    /// Chain position of its first block (the blocks of its ancestors before it).
    start: u32,
    /// The segment it continues; [`NIL`] at a chain's start.
    parent: u32,
    /// Segments that continue it.
    children: u32,
    /// Its holdings, at most one per backend.
    holders: SmallVec<[u32; 4]>,
}

/// The leading blocks of one segment that one backend holds.
#[derive(Debug, Clone, Copy)]
struct Holding {
    segment: u32,
    backend: u32,
    /// Leading blocks of the segment held, at least 1.
    count: u32,
    /// Times these blocks were sent to the backend while the index held them.
    uses: u32,
    /// Neighbours in the backend's recency list (towards the head, towards the tail).
    prev: u32,
    next: u32,
}

/// One backend's recency list: most recent at `head`.
#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    /// Blocks held: the sum of the list's holdings' counts.
    blocks: u64,
    /// Most blocks the backend may hold.
    capacity: u32,
}

impl Default for List {
    fn default() -> Self {
        Self {
            head: NIL,
            tail: NIL,
            blocks: 0,
            capacity: DEFAULT_BACKEND_BLOCKS,
        }
    }
}

/// Everything the index holds; see the module docs.
#[derive(Debug, Clone, Default)]
pub(super) struct Tree {
    /// First block hash of each segment to the segment.
    first: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    segments: Vec<Segment>,
    free_segments: Vec<u32>,
    holdings: Vec<Holding>,
    free_holdings: Vec<u32>,
    /// Per backend, indexed by its position in the pool.
    lists: Vec<List>,
    /// (block, backend) pairs held, over all backends.
    blocks: u64,
}

/// How many leading hashes of `segment` equal those of `blocks`, given that the first do.
/// Chained hashes agree up to where two chains part and differ from there on, so the answer
/// is found by binary search.
fn common(segment: &[u64], blocks: &[u64]) -> usize {
    let m = segment.len().min(blocks.len());
    if m == 0 || segment[m - 1] == blocks[m - 1] {
        return m;
    }
    // segment[lo - 1] == blocks[lo - 1]; segment[hi] != blocks[hi].
    let (mut lo, mut hi) = (1, m - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if segment[mid] == blocks[mid] {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Puts `item` in a free slot of `slab`, or a new one; returns its index.
fn slot<T>(slab: &mut Vec<T>, free: &mut Vec<u32>, item: T) -> u32 {
    match free.pop() {
        Some(i) => {
            slab[i as usize] = item;
            i
        }
        None => {
            slab.push(item);
            (slab.len() - 1) as u32
        }
    }
}

impl Tree {
    /// (block, backend) pairs held.
    pub(super) fn len(&self) -> u64 {
        self.blocks
    }

    /// Segments alive (for tests of memory bounds).
    #[cfg(test)]
    pub(super) fn segments(&self) -> usize {
        self.segments.len() - self.free_segments.len()
    }

    /// The segment starting at chain position `pos` with first hash `hash`, if any.
    fn find(&self, hash: u64, pos: usize) -> Option<u32> {
        self.first
            .get(&hash)
            .copied()
            .filter(|&s| self.segments[s as usize].start as usize == pos)
    }

    /// See [`super::PrefixIndex::matches`]; `matched` is already zeroed.
    pub(super) fn matches(&self, blocks: &[u64], matched: &mut [u32]) -> u32 {
        let (mut pos, mut deepest, mut deepest_segment) = (0usize, 0usize, NIL);
        for _ in 0..MAX_PATH_SEGMENTS {
            if pos == blocks.len() {
                break;
            }
            let Some(s) = self.find(blocks[pos], pos) else {
                break;
            };
            let segment = &self.segments[s as usize];
            let common = common(&segment.hashes, &blocks[pos..]);
            for &h in &segment.holders {
                let h = &self.holdings[h as usize];
                let depth = pos + (h.count as usize).min(common);
                if let Some(m) = matched.get_mut(h.backend as usize) {
                    *m = depth as u32;
                }
                if depth > deepest {
                    (deepest, deepest_segment) = (depth, s);
                }
            }
            if common < segment.hashes.len() {
                break;
            }
            pos += common;
        }
        if deepest_segment == NIL {
            return 0;
        }
        // Hashes are chained, so every holder of the deepest block was sent the whole prefix.
        let segment = &self.segments[deepest_segment as usize];
        segment
            .holders
            .iter()
            .map(|&h| &self.holdings[h as usize])
            .filter(|h| segment.start as usize + h.count as usize >= deepest)
            .fold(0u32, |sum, h| sum.saturating_add(h.uses))
    }

    /// See [`super::PrefixIndex::record`].
    pub(super) fn record(&mut self, blocks: &[u64], backend: u32, capacity_blocks: u32) {
        let b = backend as usize;
        if self.lists.len() <= b {
            self.lists.resize(b + 1, List::default());
        }
        let capacity = capacity_blocks.clamp(1, MAX_BACKEND_BLOCKS);
        self.lists[b].capacity = capacity;
        // Blocks past the backend's capacity would be evicted at once: never recorded.
        let blocks = &blocks[..blocks.len().min(capacity as usize)];
        let mut path: SmallVec<[u32; 32]> = SmallVec::new();
        let (mut pos, mut parent) = (0usize, NIL);
        for _ in 0..MAX_PATH_SEGMENTS {
            if pos == blocks.len() {
                break;
            }
            let rest = &blocks[pos..];
            let Some(mut s) = self.find(rest[0], pos) else {
                if self.first.contains_key(&rest[0]) {
                    // Two chains' hashes collided: leave the rest of this one unrecorded.
                    break;
                }
                let s = self.new_segment(rest.to_vec(), pos, parent);
                path.push(self.new_holding(s, backend, rest.len() as u32, 1));
                break;
            };
            let covered = common(&self.segments[s as usize].hashes, rest);
            if covered < self.segments[s as usize].hashes.len() {
                // The prompt ends or leaves the segment inside it: split it there.
                s = self.split(s, covered);
            }
            match self.holding_of(s, backend) {
                Some(h) => {
                    let count = self.holdings[h as usize].count as usize;
                    if count < covered {
                        // Held in part: its blocks were sent once more, the rest for the
                        // first time, so they become two segments.
                        self.split(s, count);
                        let tail = self.new_holding(s, backend, (covered - count) as u32, 1);
                        self.touch(h);
                        path.push(h);
                        path.push(tail);
                    } else {
                        self.touch(h);
                        path.push(h);
                    }
                }
                None => path.push(self.new_holding(s, backend, covered as u32, 1)),
            }
            parent = s;
            pos += covered;
        }
        // Most recent first: the chain's first segment ends at the head.
        for &h in path.iter().rev() {
            self.unlink(h);
            self.push_front(h);
        }
        self.evict_to_capacity(b);
    }

    /// Renumbers the backends: `new_position(b)` is backend `b`'s new position, `None` for a
    /// backend that left, whose holdings are dropped (as is a second backend mapped to a
    /// position already taken).
    pub(super) fn remap(&mut self, new_position: impl Fn(usize) -> Option<usize>) {
        let mut taken: Vec<bool> = Vec::new();
        let targets: Vec<Option<usize>> = (0..self.lists.len())
            .map(|b| {
                let n = new_position(b)?;
                if taken.len() <= n {
                    taken.resize(n + 1, false);
                }
                (!std::mem::replace(&mut taken[n], true)).then_some(n)
            })
            .collect();
        for (b, target) in targets.iter().enumerate() {
            if target.is_none() {
                // Last first, so each holding removed is a leaf of the backend's.
                while self.lists[b].tail != NIL {
                    self.remove_holding(self.lists[b].tail);
                }
            }
        }
        let mut lists = vec![List::default(); taken.len()];
        for (b, target) in targets.into_iter().enumerate() {
            let Some(n) = target else {
                continue;
            };
            let mut h = self.lists[b].head;
            while h != NIL {
                self.holdings[h as usize].backend = n as u32;
                h = self.holdings[h as usize].next;
            }
            lists[n] = self.lists[b];
        }
        self.lists = lists;
    }

    fn holding_of(&self, s: u32, backend: u32) -> Option<u32> {
        self.segments[s as usize]
            .holders
            .iter()
            .copied()
            .find(|&h| self.holdings[h as usize].backend == backend)
    }

    /// One more send of a holding's blocks.
    fn touch(&mut self, h: u32) {
        let uses = &mut self.holdings[h as usize].uses;
        *uses = uses.saturating_add(1);
    }

    fn new_segment(&mut self, hashes: Vec<u64>, start: usize, parent: u32) -> u32 {
        let first = hashes[0];
        let segment = Segment {
            hashes,
            start: start as u32,
            parent,
            children: 0,
            holders: SmallVec::new(),
        };
        let s = slot(&mut self.segments, &mut self.free_segments, segment);
        if parent != NIL {
            self.segments[parent as usize].children += 1;
        }
        self.first.insert(first, s);
        s
    }

    /// A holding not yet linked into its backend's list.
    fn new_holding(&mut self, segment: u32, backend: u32, count: u32, uses: u32) -> u32 {
        let holding = Holding {
            segment,
            backend,
            count,
            uses,
            prev: NIL,
            next: NIL,
        };
        let h = slot(&mut self.holdings, &mut self.free_holdings, holding);
        self.segments[segment as usize].holders.push(h);
        self.lists[backend as usize].blocks += u64::from(count);
        self.blocks += u64::from(count);
        h
    }

    /// Cuts segment `s` after its first `k` blocks (0 < k < len). The first part becomes a new
    /// segment, returned, in `s`'s place under its parent; `s` keeps the rest and its
    /// children. Each holding reaching past the cut is split in two, the first part just
    /// ahead of it in its backend's list.
    fn split(&mut self, s: u32, k: usize) -> u32 {
        let (start, parent) = {
            let seg = &self.segments[s as usize];
            (seg.start, seg.parent)
        };
        let head_hashes = self.segments[s as usize].hashes[..k].to_vec();
        // Not through new_segment: the parent's child count does not change.
        let head = Segment {
            hashes: head_hashes,
            start,
            parent,
            children: 1,
            holders: SmallVec::new(),
        };
        let head = slot(&mut self.segments, &mut self.free_segments, head);
        let seg = &mut self.segments[s as usize];
        seg.hashes.drain(..k);
        seg.start += k as u32;
        seg.parent = head;
        let tail_first = seg.hashes[0];
        let head_first = self.segments[head as usize].hashes[0];
        self.first.insert(head_first, head);
        self.first.insert(tail_first, s);
        let holders = std::mem::take(&mut self.segments[s as usize].holders);
        let mut kept = SmallVec::new();
        for h in holders {
            let holding = self.holdings[h as usize];
            if holding.count as usize <= k {
                self.holdings[h as usize].segment = head;
                self.segments[head as usize].holders.push(h);
            } else {
                let first = Holding {
                    segment: head,
                    count: k as u32,
                    ..holding
                };
                let f = slot(&mut self.holdings, &mut self.free_holdings, first);
                self.segments[head as usize].holders.push(f);
                self.holdings[h as usize].count -= k as u32;
                self.link_before(f, h);
                kept.push(h);
            }
        }
        self.segments[s as usize].holders = kept;
        head
    }

    /// Links holding `f` just ahead of linked holding `h` in their backend's list.
    fn link_before(&mut self, f: u32, h: u32) {
        let b = self.holdings[h as usize].backend as usize;
        let prev = self.holdings[h as usize].prev;
        self.holdings[f as usize].prev = prev;
        self.holdings[f as usize].next = h;
        self.holdings[h as usize].prev = f;
        if prev == NIL {
            self.lists[b].head = f;
        } else {
            self.holdings[prev as usize].next = f;
        }
    }

    fn push_front(&mut self, h: u32) {
        let b = self.holdings[h as usize].backend as usize;
        let old = self.lists[b].head;
        self.lists[b].head = h;
        if old == NIL {
            self.lists[b].tail = h;
        } else {
            self.holdings[old as usize].prev = h;
        }
        self.holdings[h as usize].prev = NIL;
        self.holdings[h as usize].next = old;
    }

    /// Takes `h` out of its backend's list (nothing if it is not in it).
    fn unlink(&mut self, h: u32) {
        let Holding {
            backend,
            prev,
            next,
            ..
        } = self.holdings[h as usize];
        let list = &mut self.lists[backend as usize];
        if prev == NIL && list.head != h {
            return;
        }
        if prev == NIL {
            list.head = next;
        } else {
            self.holdings[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[backend as usize].tail = prev;
        } else {
            self.holdings[next as usize].prev = prev;
        }
        self.holdings[h as usize].prev = NIL;
        self.holdings[h as usize].next = NIL;
    }

    /// Trims backend `b`'s least recent blocks until it holds no more than its capacity.
    fn evict_to_capacity(&mut self, b: usize) {
        while self.lists[b].blocks > u64::from(self.lists[b].capacity) {
            let t = self.lists[b].tail;
            if t == NIL {
                break;
            }
            let excess = self.lists[b].blocks - u64::from(self.lists[b].capacity);
            let count = self.holdings[t as usize].count;
            if u64::from(count) <= excess {
                self.remove_holding(t);
            } else {
                self.holdings[t as usize].count -= excess as u32;
                self.lists[b].blocks -= excess;
                self.blocks -= excess;
                self.trim(self.holdings[t as usize].segment);
            }
        }
    }

    fn remove_holding(&mut self, h: u32) {
        self.unlink(h);
        let Holding {
            segment,
            backend,
            count,
            ..
        } = self.holdings[h as usize];
        self.lists[backend as usize].blocks -= u64::from(count);
        self.blocks -= u64::from(count);
        let seg = &mut self.segments[segment as usize];
        seg.holders.retain(|x| *x != h);
        self.free_holdings.push(h);
        if seg.holders.is_empty() && seg.children == 0 {
            self.remove_segment(segment);
        } else {
            self.trim(segment);
        }
    }

    /// Drops the blocks of a leaf segment that no backend holds any more.
    fn trim(&mut self, s: u32) {
        let seg = &mut self.segments[s as usize];
        if seg.children > 0 {
            return;
        }
        let held = seg
            .holders
            .iter()
            .map(|&h| self.holdings[h as usize].count as usize)
            .max()
            .unwrap_or(0);
        if held < seg.hashes.len() {
            seg.hashes.truncate(held.max(1));
            if seg.hashes.capacity() > 2 * seg.hashes.len() + 16 {
                seg.hashes.shrink_to_fit();
            }
        }
    }

    /// Frees an unheld leaf segment, and its ancestors that it leaves unheld and childless.
    fn remove_segment(&mut self, mut s: u32) {
        loop {
            let seg = std::mem::take(&mut self.segments[s as usize]);
            if let Some(&first) = seg.hashes.first() {
                if self.first.get(&first) == Some(&s) {
                    self.first.remove(&first);
                }
            }
            self.free_segments.push(s);
            if seg.parent == NIL {
                return;
            }
            let parent = &mut self.segments[seg.parent as usize];
            parent.children = parent.children.saturating_sub(1);
            if !(parent.holders.is_empty() && parent.children == 0) {
                self.trim(seg.parent);
                return;
            }
            s = seg.parent;
        }
    }
}
