use super::*;
use std::time::Duration;

/// No steering: the server picks its slot as llama.cpp does alone.
const FREE: Steering = Steering {
    now: Duration::ZERO,
    max_wait: None,
};

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
    assert_eq!(
        m.pick(0, (1, 0), &a, FREE).matched_blocks,
        0,
        "nothing sent yet"
    );
    m.record(0, (1, 4096, 0), &a, FREE, Duration::ZERO);
    assert_eq!(
        m.pick(0, (1, 0), &prompt(1, 8, 3, 10), FREE).matched_blocks,
        8
    );
    m.record(0, (1, 4096, 0), &b, FREE, Duration::ZERO);
    // One slot: document 1 is gone however much room a paged cache would have had.
    assert_eq!(
        m.pick(0, (1, 0), &prompt(1, 8, 3, 10), FREE).matched_blocks,
        0
    );
    assert_eq!(
        m.pick(0, (1, 0), &prompt(2, 8, 3, 10), FREE).matched_blocks,
        8
    );
}

#[test]
fn two_slots_keep_two_documents_and_the_similar_slot_is_reused() {
    let m = SlotCaches::new();
    m.record(0, (2, 4096, 0), &prompt(1, 8, 1, 10), FREE, Duration::ZERO);
    m.record(0, (2, 4096, 0), &prompt(2, 8, 2, 10), FREE, Duration::ZERO);
    // Document 1 again: its slot is the less recent one, but it is the similar one.
    let p = m.pick(0, (2, 0), &prompt(1, 8, 3, 10), FREE);
    assert_eq!(p.matched_blocks, 8);
    m.record(0, (2, 4096, 0), &prompt(1, 8, 3, 10), FREE, Duration::ZERO);
    assert_eq!(
        m.pick(0, (2, 0), &prompt(2, 8, 4, 10), FREE).matched_blocks,
        8
    );
    // A third document takes the least recently used slot (document 2's).
    m.record(0, (2, 4096, 0), &prompt(3, 8, 5, 10), FREE, Duration::ZERO);
    assert_eq!(
        m.pick(0, (2, 0), &prompt(2, 8, 4, 10), FREE).matched_blocks,
        0
    );
    assert_eq!(
        m.pick(0, (2, 0), &prompt(1, 8, 4, 10), FREE).matched_blocks,
        8
    );
}

#[test]
fn below_the_similarity_threshold_the_least_recently_used_slot_is_taken() {
    let m = SlotCaches::new();
    // Slot A shares 1 block of 20 (5%) with the new prompt, slot B nothing.
    m.record(0, (2, 4096, 0), &prompt(7, 1, 1, 20), FREE, Duration::ZERO);
    m.record(0, (2, 4096, 0), &prompt(8, 20, 0, 20), FREE, Duration::ZERO);
    let p = m.pick(0, (2, 0), &prompt(7, 1, 9, 20), FREE);
    // LRU is slot A's (recorded first), which happens to share the one block.
    assert_eq!(p.matched_blocks, 1);
    // After A is refreshed, LRU is B: the 5% match is not enough to prefer A.
    m.record(0, (2, 4096, 0), &prompt(7, 1, 2, 20), FREE, Duration::ZERO);
    assert_eq!(
        m.pick(0, (2, 0), &prompt(7, 1, 9, 20), FREE).matched_blocks,
        0
    );
}

#[test]
fn busy_slots_are_not_reused_and_a_full_server_waits_for_the_oldest() {
    let m = SlotCaches::new();
    m.record(0, (2, 4096, 0), &prompt(1, 8, 1, 10), FREE, Duration::ZERO);
    m.record(0, (2, 4096, 1), &prompt(2, 8, 2, 10), FREE, Duration::ZERO);
    // One request in flight holds the most recent slot (document 2's).
    assert_eq!(
        m.pick(0, (2, 1), &prompt(2, 8, 3, 10), FREE).matched_blocks,
        0
    );
    assert_eq!(
        m.pick(0, (2, 1), &prompt(1, 8, 3, 10), FREE).matched_blocks,
        8
    );
    // Both busy: the request waits for the oldest (document 1's) slot.
    assert_eq!(
        m.pick(0, (2, 2), &prompt(1, 8, 3, 10), FREE).matched_blocks,
        8
    );
    assert_eq!(
        m.pick(0, (2, 5), &prompt(2, 8, 3, 10), FREE).matched_blocks,
        0
    );
}

#[test]
fn a_slot_keeps_at_most_its_context_and_backends_are_separate() {
    let m = SlotCaches::new();
    let long = prompt(1, 40, 1, 40);
    m.record(
        3,
        (1, 10 * BLOCK_TOKENS as u32, 0),
        &long,
        FREE,
        Duration::ZERO,
    );
    assert_eq!(m.pick(3, (1, 0), &long, FREE).matched_blocks, 10);
    assert_eq!(m.pick(0, (1, 0), &long, FREE).matched_blocks, 0);
    assert_eq!(
        m.pick(9, (1, 0), &long, FREE).matched_blocks,
        0,
        "unknown backend"
    );
    // A changed slot count (a restarted server) starts empty.
    m.record(3, (2, 4096, 0), &prompt(2, 8, 2, 10), FREE, Duration::ZERO);
    assert_eq!(m.pick(3, (2, 0), &long, FREE).matched_blocks, 0);
}

#[test]
fn degenerate_inputs_do_not_panic() {
    let m = SlotCaches::new();
    m.record(0, (0, 0, u32::MAX), &[], FREE, Duration::ZERO);
    assert_eq!(m.pick(0, (0, u32::MAX), &[], FREE).matched_blocks, 0);
    m.record(0, (u32::MAX, u32::MAX, 0), &[1, 2, 3], FREE, Duration::ZERO);
    assert_eq!(m.pick(0, (u32::MAX, 0), &[1, 2], FREE).matched_blocks, 2);
}

#[test]
fn overwriting_the_only_copy_of_a_prompt_counts_as_evicted_a_duplicate_does_not() {
    let m = SlotCaches::new();
    let z = Duration::ZERO;
    m.record(0, (1, 4096, 0), &prompt(1, 8, 1, 10), FREE, z);
    m.record(1, (1, 4096, 0), &prompt(2, 8, 2, 10), FREE, z);
    // Document 3 on backend 0 overwrites document 1's only copy (all 10 blocks).
    let o = m.outcome(0, (1, 0), &prompt(3, 8, 3, 10), FREE);
    assert_eq!((o.matched_blocks, o.evicted_blocks), (0, 10));
    // Document 1's question on backend 0 keeps its 8 shared blocks and loses 2.
    assert_eq!(
        m.outcome(0, (1, 0), &prompt(1, 8, 4, 10), FREE)
            .evicted_blocks,
        2
    );
    // Once backend 1 holds document 1 too, overwriting backend 0's copy forgets nothing.
    m.record(1, (1, 4096, 0), &prompt(1, 8, 5, 10), FREE, z);
    assert_eq!(
        m.outcome(0, (1, 0), &prompt(3, 8, 3, 10), FREE)
            .evicted_blocks,
        0
    );
}

#[test]
fn the_requests_in_flight_hold_the_slots_expected_to_end_last() {
    let m = SlotCaches::new();
    let s = Duration::from_secs;
    // Document 1 was sent first but runs long; document 2 after it, short.
    m.record(0, (2, 4096, 0), &prompt(1, 8, 1, 10), FREE, s(60));
    m.record(0, (2, 4096, 1), &prompt(2, 8, 2, 10), FREE, s(5));
    // One request in flight: the long one, so document 2's slot is the idle one.
    assert_eq!(
        m.pick(0, (2, 1), &prompt(2, 8, 3, 10), FREE).matched_blocks,
        8
    );
    assert_eq!(
        m.pick(0, (2, 1), &prompt(1, 8, 3, 10), FREE).matched_blocks,
        0
    );
}

#[test]
fn a_steered_request_waits_for_the_busy_slot_holding_its_prompt_when_it_frees_soon() {
    let m = SlotCaches::new();
    let s = Duration::from_secs;
    // Document 1 runs in one slot until t=10 s; document 2's slot is idle.
    m.record(0, (2, 4096, 0), &prompt(1, 8, 1, 10), FREE, s(10));
    m.record(0, (2, 4096, 1), &prompt(2, 8, 2, 10), FREE, s(1));
    let doc1 = prompt(1, 8, 3, 10);
    // Left to itself the server gives document 1 the idle slot and overwrites document 2.
    let free = m.pick(0, (2, 1), &doc1, FREE);
    assert_eq!((free.matched_blocks, free.pinned), (0, false));
    let at = |now, wait| Steering {
        now: s(now),
        max_wait: Some(s(wait)),
    };
    // Steered at t=8 s with up to 5 s of wait: the busy slot of document 1, named.
    let steered = m.pick(0, (2, 1), &doc1, at(8, 5));
    assert_eq!((steered.matched_blocks, steered.pinned), (8, true));
    assert_ne!(steered.slot, free.slot);
    // At t=2 s it frees only in 8 s, past the wait: the idle slot, not named.
    let late = m.pick(0, (2, 1), &doc1, at(2, 5));
    assert_eq!((late.slot, late.pinned), (free.slot, false));
    // An idle slot holding the prompt is named too.
    let idle = m.pick(0, (2, 1), &prompt(2, 8, 4, 10), at(8, 5));
    assert_eq!(
        (idle.slot, idle.matched_blocks, idle.pinned),
        (free.slot, 8, true)
    );
    // A request waiting for the busy slot gets it when it frees: it then holds until 10 s
    // plus its own 3 s, so the next one at t=11 s is past a 1 s wait.
    let r = m.record(0, (2, 4096, 1), &doc1, at(8, 5), s(3));
    assert_eq!((r.slot, r.pinned), (steered.slot, true));
    assert!(!m.pick(0, (2, 2), &doc1, at(11, 1)).pinned);
    assert!(m.pick(0, (2, 2), &doc1, at(11, 2)).pinned);
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
    fn with_a_slot_wait_the_decision_names_the_llamacpp_slot_holding_the_prompt() {
        let slots = CacheModel::Slots {
            slots: 2,
            ctx_tokens: 4096,
        };
        let steered = policy().with_slot_wait(Duration::from_secs(4));
        let pool = pool(1, slots);
        let first = decide(&steered, &pool, &ask(1, 1));
        assert_eq!(first.slot, None, "no slot holds document 1 yet");
        decide(&steered, &pool, &ask(2, 2));
        let again = decide(&steered, &pool, &ask(1, 3));
        assert!(cached(&again) >= 496);
        assert!(again.slot.is_some(), "document 1's slot is named");
        // Without a wait, and on paged engines, the server picks.
        let free = policy();
        decide(&free, &pool, &ask(1, 1));
        assert_eq!(decide(&free, &pool, &ask(1, 3)).slot, None);
        let paged = Vec::from([BackendView::idle(crate::BackendId(0), 1)]);
        decide(&steered, &paged, &ask(1, 1));
        assert_eq!(decide(&steered, &paged, &ask(1, 3)).slot, None);
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
