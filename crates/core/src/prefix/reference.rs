//! The block-per-node prefix index that [`super::tree`] replaced, kept as the reference its
//! tests compare against: every block a node in a hash map, every backend a recency list of
//! nodes, a lookup walking the prompt block by block and a record touching every block.

use std::collections::HashMap;

use smallvec::SmallVec;

use super::{DEFAULT_BACKEND_BLOCKS, MAX_BACKEND_BLOCKS};

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    hash: u64,
    backend: u32,
    prev: u32,
    next: u32,
    uses: u32,
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
    len: u32,
    capacity: u32,
}

/// The old index.
#[derive(Default)]
pub(super) struct Reference {
    map: HashMap<u64, SmallVec<[u32; 4]>>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    lists: Vec<List>,
}

impl Reference {
    /// (block, backend) pairs held.
    pub(super) fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Leading blocks held per backend, walked block by block; the deepest block's reuse.
    pub(super) fn matches(&self, blocks: &[u64], matched: &mut [u32]) -> u32 {
        matched.fill(0);
        let mut alive: Vec<u32> = Vec::new();
        let mut deepest = None;
        for (k, hash) in blocks.iter().enumerate() {
            let Some(holders) = self.map.get(hash) else {
                break;
            };
            let holds = |b: u32| holders.iter().any(|&n| self.nodes[n as usize].backend == b);
            if k == 0 {
                alive.extend(holders.iter().map(|&n| self.nodes[n as usize].backend));
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
                sum.saturating_add(self.nodes[n as usize].uses)
            })
        })
    }

    /// Touches every block, last first, then evicts from the tail past the capacity.
    pub(super) fn record(&mut self, blocks: &[u64], backend: u32, capacity_blocks: u32) {
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
