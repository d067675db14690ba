use super::reference::Reference;
use super::*;
use proptest::prelude::*;

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
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Same answers as the block-per-node index it replaced, after any history of records
    /// (prompts that share, extend, shorten and leave each other; capacities that shrink and
    /// grow, so eviction runs often), including its block count.
    #[test]
    fn agrees_with_the_block_per_node_reference(
        records in proptest::collection::vec(
            (0u64..3, 0usize..40, 0u64..6, 1usize..80, 0u32..8, 2u32..60),
            1..80,
        ),
        queries in proptest::collection::vec((0u64..3, 0usize..40, 0u64..6, 1usize..80), 1..8),
    ) {
        let idx = PrefixIndex::new();
        let mut reference = Reference::default();
        let (mut fast, mut slow) = ([0u32; 10], [0u32; 10]);
        for (root, shared, own, len, backend, cap) in records {
            let blocks = chain(root, shared, own + 10, len);
            // Look up before each record too: the state in between must agree as well.
            prop_assert_eq!(idx.matches(&blocks, &mut fast), reference.matches(&blocks, &mut slow));
            prop_assert_eq!(fast, slow);
            idx.record(&blocks, backend, cap);
            reference.record(&blocks, backend, cap);
            prop_assert_eq!(idx.len(), reference.len());
        }
        for (root, shared, own, len) in queries {
            let q = chain(root, shared, own + 10, len);
            let reuse = idx.matches(&q, &mut fast);
            prop_assert_eq!(reuse, reference.matches(&q, &mut slow));
            prop_assert_eq!(fast, slow);
        }
    }

    /// After a member change, a kept backend answers as it did at its old position, a removed
    /// one holds nothing, and recording goes on as if it had been numbered so from the start.
    #[test]
    fn remapping_keeps_kept_backends_and_drops_removed_ones(
        records in proptest::collection::vec(
            (0u64..3, 0usize..40, 0u64..6, 1usize..80, 0u32..4, 2u32..60),
            1..40,
        ),
        queries in proptest::collection::vec((0u64..3, 0usize..40, 0u64..6, 1usize..80), 1..8),
        removed in 0usize..4,
    ) {
        let idx = PrefixIndex::new();
        for (root, shared, own, len, backend, cap) in &records {
            idx.record(&chain(*root, *shared, own + 10, *len), *backend, *cap);
        }
        // Backend `removed` leaves; the others shift down behind it, and a new one joins at 3.
        let moved = idx.remapped(|b| match b.cmp(&removed) {
            std::cmp::Ordering::Less => Some(b),
            std::cmp::Ordering::Equal => None,
            std::cmp::Ordering::Greater => Some(b - 1),
        });
        // The same history recorded without the removed backend, in its new numbering.
        let expected = PrefixIndex::new();
        for (root, shared, own, len, backend, cap) in &records {
            let b = *backend as usize;
            if b != removed {
                let n = if b > removed { b - 1 } else { b };
                expected.record(&chain(*root, *shared, own + 10, *len), n as u32, *cap);
            }
        }
        prop_assert_eq!(moved.len(), expected.len());
        let (mut got, mut want) = ([0u32; 4], [0u32; 4]);
        for (root, shared, own, len) in queries {
            let q = chain(root, shared, own + 10, len);
            prop_assert_eq!(moved.matches(&q, &mut got), expected.matches(&q, &mut want));
            prop_assert_eq!(got, want);
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
fn a_prompt_longer_than_the_capacity_records_only_its_leading_blocks() {
    let idx = PrefixIndex::new();
    let long: Vec<u64> = chain(1, 0, 2, 5000);
    idx.record(&long, 0, 300);
    assert_eq!(idx.len(), 300);
    let mut m = [0u32; 1];
    idx.matches(&long, &mut m);
    assert_eq!(m[0], 300);
    assert_eq!(idx.lock().segments(), 1);
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
    for i in 0..500u64 {
        idx.record(&chain(i % 7, 10, i + 100, 20), (i % 4) as u32, 50);
    }
    assert_eq!(idx.len(), 200);
    let tree = idx.lock();
    assert!(tree.segments() <= 200, "{} segments", tree.segments());
}

#[test]
fn a_path_of_many_prompt_ends_is_walked_only_so_deep() {
    // Prompts ending at every depth put a run boundary after every block.
    let idx = PrefixIndex::new();
    let long = chain(1, 0, 2, MAX_PATH_SEGMENTS + 50);
    for len in 1..=long.len() {
        idx.record(&long[..len], 0, 10_000);
    }
    let mut m = [0u32; 1];
    idx.matches(&long, &mut m);
    assert_eq!(m[0] as usize, MAX_PATH_SEGMENTS);
}
