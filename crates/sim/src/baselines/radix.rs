//! A character-level radix tree of the text one worker was sent, for the SGLang-style baseline:
//! longest-prefix match, insertion, and least-recently-used eviction of leaves past a size.
//!
//! Text is handled as UTF-8 bytes, which are its characters for the ASCII text simulated
//! workloads are made of (a multi-byte character only shifts a match by a byte or two).

/// "No node".
const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Node {
    /// The edge from the parent: the text this node adds.
    edge: Vec<u8>,
    /// Children by first byte of their edge.
    children: Vec<(u8, u32)>,
    parent: u32,
    last_access: u64,
}

/// One worker's tree.
#[derive(Debug, Clone)]
pub(crate) struct RadixTree {
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Characters stored (sum of edge lengths): SGLang's per-worker tree size.
    chars: usize,
}

impl Default for RadixTree {
    fn default() -> Self {
        Self {
            nodes: vec![Node {
                edge: Vec::new(),
                children: Vec::new(),
                parent: NIL,
                last_access: 0,
            }],
            free: Vec::new(),
            chars: 0,
        }
    }
}

fn common(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl RadixTree {
    /// Characters stored.
    pub(crate) fn chars(&self) -> usize {
        self.chars
    }

    fn child(&self, n: u32, first: u8) -> Option<u32> {
        self.nodes[n as usize]
            .children
            .iter()
            .find(|(b, _)| *b == first)
            .map(|&(_, c)| c)
    }

    /// Length of the longest prefix of `text` stored.
    pub(crate) fn match_len(&self, text: &[u8]) -> usize {
        let (mut n, mut at) = (0u32, 0usize);
        while at < text.len() {
            let Some(c) = self.child(n, text[at]) else {
                break;
            };
            let edge = &self.nodes[c as usize].edge;
            let k = common(edge, &text[at..]);
            at += k;
            if k < edge.len() {
                break;
            }
            n = c;
        }
        at
    }

    fn alloc(&mut self, node: Node) -> u32 {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = node;
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        }
    }

    /// Stores `text`, stamping its path with `clock`.
    pub(crate) fn insert(&mut self, text: &[u8], clock: u64) {
        let (mut n, mut at) = (0u32, 0usize);
        self.nodes[0].last_access = clock;
        while at < text.len() {
            let Some(c) = self.child(n, text[at]) else {
                let leaf = self.alloc(Node {
                    edge: text[at..].to_vec(),
                    children: Vec::new(),
                    parent: n,
                    last_access: clock,
                });
                self.nodes[n as usize].children.push((text[at], leaf));
                self.chars += text.len() - at;
                return;
            };
            let k = common(&self.nodes[c as usize].edge, &text[at..]);
            if k < self.nodes[c as usize].edge.len() {
                // Split c's edge after k bytes: a middle node takes the shared part.
                let rest = self.nodes[c as usize].edge.split_off(k);
                let head = std::mem::take(&mut self.nodes[c as usize].edge);
                let mid = self.alloc(Node {
                    edge: head,
                    children: vec![(rest[0], c)],
                    parent: n,
                    last_access: clock,
                });
                self.nodes[c as usize].edge = rest;
                self.nodes[c as usize].parent = mid;
                for entry in &mut self.nodes[n as usize].children {
                    if entry.1 == c {
                        entry.1 = mid;
                    }
                }
                n = mid;
            } else {
                n = c;
                self.nodes[n as usize].last_access = clock;
            }
            at += k;
        }
    }

    /// Evicts least recently used leaves until at most `max_chars` are stored.
    pub(crate) fn evict_to(&mut self, max_chars: usize) {
        if self.chars <= max_chars {
            return;
        }
        // Collect leaves once, oldest first; evicting a leaf may expose its parent as a leaf,
        // which is then considered in the next round.
        while self.chars > max_chars {
            let mut leaves: Vec<(u64, u32)> = (1..self.nodes.len() as u32)
                .filter(|&i| {
                    let node = &self.nodes[i as usize];
                    node.parent != NIL && node.children.is_empty()
                })
                .map(|i| (self.nodes[i as usize].last_access, i))
                .collect();
            if leaves.is_empty() {
                break;
            }
            leaves.sort_unstable();
            for (_, leaf) in leaves {
                if self.chars <= max_chars {
                    break;
                }
                self.remove_leaf(leaf);
            }
        }
    }

    fn remove_leaf(&mut self, leaf: u32) {
        let parent = self.nodes[leaf as usize].parent;
        self.chars -= self.nodes[leaf as usize].edge.len();
        self.nodes[leaf as usize].edge = Vec::new();
        self.nodes[leaf as usize].parent = NIL;
        self.nodes[parent as usize]
            .children
            .retain(|&(_, c)| c != leaf);
        self.free.push(leaf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_match_across_splits() {
        let mut t = RadixTree::default();
        t.insert(b"system: be brief. user: hi", 1);
        t.insert(b"system: be brief. user: bye", 2);
        t.insert(b"other", 3);
        assert_eq!(t.match_len(b"system: be brief. user: hello"), 25);
        assert_eq!(t.match_len(b"system: be brief. user: bye now"), 27);
        assert_eq!(t.match_len(b"sys"), 3);
        assert_eq!(t.match_len(b"xyz"), 0);
        assert_eq!(t.chars(), 26 + 3 + 5);
    }

    #[test]
    fn eviction_drops_least_recent_leaves_first() {
        let mut t = RadixTree::default();
        t.insert(b"aaaa1111", 1);
        t.insert(b"aaaa2222", 2);
        t.insert(b"aaaa3333", 3);
        t.evict_to(12);
        assert_eq!(t.match_len(b"aaaa1111"), 4, "oldest leaf gone");
        assert_eq!(t.match_len(b"aaaa3333"), 8);
        t.evict_to(0);
        assert_eq!(t.chars(), 0);
        assert_eq!(t.match_len(b"aaaa3333"), 0);
        t.insert(b"again", 4);
        assert_eq!(t.match_len(b"again"), 5);
    }
}
