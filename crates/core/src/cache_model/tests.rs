use super::*;
use std::time::Duration;

/// A prompt of `n` blocks: a shared document `doc` (`shared` blocks) then its own tail.
fn prompt(doc: u64, shared: usize, tail: u64, n: usize) -> Vec<u64> {
    (0..n)
        .map(|k| {
            if k < shared {
                doc * 1000 + k as u64
            } else {
                tail * 1_000_000 + k as u64
            }
        })
        .collect()
}

#[test]
fn a_slot_holds_only_the_last_prompt_sent_to_it() {
    let m = SlotCaches::new();
    let a = prompt(1, 8, 1, 10);
    let b = prompt(2, 8, 2, 10);
    assert_eq!(m.pick(0, 1, 0, &a).matched_blocks, 0, "nothing sent yet");
    m.record(0, (1, 4096), 0, &a, Duration::ZERO);
    assert_eq!(m.pick(0, 1, 0, &prompt(1, 8, 3, 10)).matched_blocks, 8);
    m.record(0, (1, 4096), 0, &b, Duration::ZERO);
    // One slot: document 1 is gone however much room a paged cache would have had.
    assert_eq!(m.pick(0, 1, 0, &prompt(1, 8, 3, 10)).matched_blocks, 0);
    assert_eq!(m.pick(0, 1, 0, &prompt(2, 8, 3, 10)).matched_blocks, 8);
}

#[test]
fn two_slots_keep_two_documents_and_the_similar_slot_is_reused() {
    let m = SlotCaches::new();
    m.record(0, (2, 4096), 0, &prompt(1, 8, 1, 10), Duration::ZERO);
    m.record(0, (2, 4096), 0, &prompt(2, 8, 2, 10), Duration::ZERO);
    // Document 1 again: its slot is the less recent one, but it is the similar one.
    let p = m.pick(0, 2, 0, &prompt(1, 8, 3, 10));
    assert_eq!(p.matched_blocks, 8);
    m.record(0, (2, 4096), 0, &prompt(1, 8, 3, 10), Duration::ZERO);
    assert_eq!(m.pick(0, 2, 0, &prompt(2, 8, 4, 10)).matched_blocks, 8);
    // A third document takes the least recently used slot (document 2's).
    m.record(0, (2, 4096), 0, &prompt(3, 8, 5, 10), Duration::ZERO);
    assert_eq!(m.pick(0, 2, 0, &prompt(2, 8, 4, 10)).matched_blocks, 0);
    assert_eq!(m.pick(0, 2, 0, &prompt(1, 8, 4, 10)).matched_blocks, 8);
}

#[test]
fn below_the_similarity_threshold_the_least_recently_used_slot_is_taken() {
    let m = SlotCaches::new();
    // Slot A shares 1 block of 20 (5%) with the new prompt, slot B nothing.
    m.record(0, (2, 4096), 0, &prompt(7, 1, 1, 20), Duration::ZERO);
    m.record(0, (2, 4096), 0, &prompt(8, 20, 0, 20), Duration::ZERO);
    let p = m.pick(0, 2, 0, &prompt(7, 1, 9, 20));
    // LRU is slot A's (recorded first), which happens to share the one block.
    assert_eq!(p.matched_blocks, 1);
    // After A is refreshed, LRU is B: the 5% match is not enough to prefer A.
    m.record(0, (2, 4096), 0, &prompt(7, 1, 2, 20), Duration::ZERO);
    assert_eq!(m.pick(0, 2, 0, &prompt(7, 1, 9, 20)).matched_blocks, 0);
}

#[test]
fn busy_slots_are_not_reused_and_a_full_server_waits_for_the_oldest() {
    let m = SlotCaches::new();
    m.record(0, (2, 4096), 0, &prompt(1, 8, 1, 10), Duration::ZERO);
    m.record(0, (2, 4096), 1, &prompt(2, 8, 2, 10), Duration::ZERO);
    // One request in flight holds the most recent slot (document 2's).
    assert_eq!(m.pick(0, 2, 1, &prompt(2, 8, 3, 10)).matched_blocks, 0);
    assert_eq!(m.pick(0, 2, 1, &prompt(1, 8, 3, 10)).matched_blocks, 8);
    // Both busy: the request waits for the oldest (document 1's) slot.
    assert_eq!(m.pick(0, 2, 2, &prompt(1, 8, 3, 10)).matched_blocks, 8);
    assert_eq!(m.pick(0, 2, 5, &prompt(2, 8, 3, 10)).matched_blocks, 0);
}

#[test]
fn a_slot_keeps_at_most_its_context_and_backends_are_separate() {
    let m = SlotCaches::new();
    let long = prompt(1, 40, 1, 40);
    m.record(3, (1, 10 * BLOCK_TOKENS as u32), 0, &long, Duration::ZERO);
    assert_eq!(m.pick(3, 1, 0, &long).matched_blocks, 10);
    assert_eq!(m.pick(0, 1, 0, &long).matched_blocks, 0);
    assert_eq!(m.pick(9, 1, 0, &long).matched_blocks, 0, "unknown backend");
    // A changed slot count (a restarted server) starts empty.
    m.record(3, (2, 4096), 0, &prompt(2, 8, 2, 10), Duration::ZERO);
    assert_eq!(m.pick(3, 2, 0, &long).matched_blocks, 0);
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let m = SlotCaches::new();
    m.record(0, (0, 0), u32::MAX, &[], Duration::ZERO);
    assert_eq!(m.pick(0, 0, u32::MAX, &[]).matched_blocks, 0);
    m.record(0, (u32::MAX, u32::MAX), 0, &[1, 2, 3], Duration::ZERO);
    assert_eq!(m.pick(0, u32::MAX, 0, &[1, 2]).matched_blocks, 2);
}

#[test]
fn overwriting_the_only_copy_of_a_prompt_counts_as_evicted_a_duplicate_does_not() {
    let m = SlotCaches::new();
    let z = Duration::ZERO;
    m.record(0, (1, 4096), 0, &prompt(1, 8, 1, 10), z);
    m.record(1, (1, 4096), 0, &prompt(2, 8, 2, 10), z);
    // Document 3 on backend 0 overwrites document 1's only copy (all 10 blocks).
    let o = m.outcome(0, 1, 0, &prompt(3, 8, 3, 10));
    assert_eq!((o.matched_blocks, o.evicted_blocks), (0, 10));
    // Document 1's question on backend 0 keeps its 8 shared blocks and loses 2.
    assert_eq!(m.outcome(0, 1, 0, &prompt(1, 8, 4, 10)).evicted_blocks, 2);
    // Once backend 1 holds document 1 too, overwriting backend 0's copy forgets nothing.
    m.record(1, (1, 4096), 0, &prompt(1, 8, 5, 10), z);
    assert_eq!(m.outcome(0, 1, 0, &prompt(3, 8, 3, 10)).evicted_blocks, 0);
}

#[test]
fn the_requests_in_flight_hold_the_slots_expected_to_end_last() {
    let m = SlotCaches::new();
    let s = Duration::from_secs;
    // Document 1 was sent first but runs long; document 2 after it, short.
    m.record(0, (2, 4096), 0, &prompt(1, 8, 1, 10), s(60));
    m.record(0, (2, 4096), 1, &prompt(2, 8, 2, 10), s(5));
    // One request in flight: the long one, so document 2's slot is the idle one.
    assert_eq!(m.pick(0, 2, 1, &prompt(2, 8, 3, 10)).matched_blocks, 8);
    assert_eq!(m.pick(0, 2, 1, &prompt(1, 8, 3, 10)).matched_blocks, 0);
}

mod with_prefix_aware {
    use std::time::Duration;

    use crate::routing::test_support::{idle, prompt_request};
    use crate::routing::{
        PrefixAware, DEFAULT_DECODE_WEIGHT, DEFAULT_MAX_REPORT_AGE, DEFAULT_PREFILL_WEIGHT,
    };
    use crate::{BackendView, CacheModel, Decision, FleetView, Policy};

    fn policy() -> PrefixAware {
        PrefixAware::new(
            DEFAULT_PREFILL_WEIGHT,
            DEFAULT_DECODE_WEIGHT,
            DEFAULT_MAX_REPORT_AGE,
        )
    }

    /// `tokens` tokens of text named by `seed`.
    fn text(seed: u32, tokens: usize) -> String {
        (0..tokens * 4)
            .map(|i| char::from(b'a' + ((i as u32 * 31 + seed * 7919) % 26) as u8))
            .collect()
    }

    /// Document `doc` (500 tokens) and question `q` (20 tokens).
    fn ask(doc: u32, q: u32) -> String {
        format!("{}{}", text(doc, 500), text(1000 + q, 20))
    }

    fn decide(p: &PrefixAware, pool: &[BackendView], prompt: &str) -> Decision {
        p.decide(
            &prompt_request(prompt),
            &FleetView::new(pool, Duration::ZERO),
        )
        .unwrap()
    }

    fn cached(d: &Decision) -> u32 {
        assert_eq!(d.reason.policy, "prefix_aware");
        d.reason.detail.values()[0] as u32
    }

    fn pool(n: usize, cache: CacheModel) -> Vec<BackendView> {
        let mut pool = idle(n);
        for b in &mut pool {
            b.cache = cache;
        }
        pool
    }

    /// Sends document 1 then document 2 to backend 0 only, then asks about document 1 again
    /// with both backends open; the cached tokens the policy expects.
    fn after_two_documents_on_one_server(cache: CacheModel) -> (u32, u32) {
        let p = policy();
        let mut pool = pool(2, cache);
        pool[1].usable = false;
        decide(&p, &pool, &ask(1, 1));
        decide(&p, &pool, &ask(2, 2));
        pool[1].usable = true;
        let d = decide(&p, &pool, &ask(1, 3));
        (d.primary.0, cached(&d))
    }

    #[test]
    fn a_llamacpp_slot_is_known_to_hold_only_its_last_prompt() {
        // The paged model believes backend 0 still holds document 1 and sends it there.
        let (primary, tokens) = after_two_documents_on_one_server(CacheModel::Paged);
        assert_eq!(primary, 0);
        assert!(tokens >= 496, "{tokens}");
        // With one slot, document 2 replaced it: nothing is cached anywhere.
        let one_slot = CacheModel::Slots {
            slots: 1,
            ctx_tokens: 4096,
        };
        let (_, tokens) = after_two_documents_on_one_server(one_slot);
        assert_eq!(tokens, 0);
        // With two slots, both documents stay.
        let two_slots = CacheModel::Slots {
            slots: 2,
            ctx_tokens: 4096,
        };
        let (primary, tokens) = after_two_documents_on_one_server(two_slots);
        assert_eq!((primary, tokens >= 496), (0, true), "{tokens}");
    }

    #[test]
    fn hosted_backends_are_never_expected_to_hold_a_prefix() {
        let (_, tokens) = after_two_documents_on_one_server(CacheModel::Opaque);
        assert_eq!(tokens, 0);
    }

    #[test]
    fn four_documents_settle_two_per_server_of_two_slots() {
        let p = policy();
        let pool = pool(
            2,
            CacheModel::Slots {
                slots: 2,
                ctx_tokens: 4096,
            },
        );
        let mut home = [None; 4];
        for round in 0..6u32 {
            for doc in 0..4u32 {
                let d = decide(&p, &pool, &ask(doc, round * 4 + doc));
                if round >= 2 {
                    assert!(cached(&d) >= 496, "round {round} doc {doc}");
                    assert_eq!(*home[doc as usize].get_or_insert(d.primary), d.primary);
                }
            }
        }
    }
}
