use super::*;
use crate::prefix::block_hashes;
use crate::routing::signals::DEFAULT_MAX_REPORT_AGE;
use crate::routing::test_support::{idle, prompt_request};
use crate::{BackendId, EngineLoad};

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

fn decide(p: &PrefixAware, pool: &[BackendView], prompt: &str) -> Decision {
    p.decide(
        &prompt_request(prompt),
        &FleetView::new(pool, Duration::ZERO),
    )
    .unwrap()
}

#[test]
fn a_shared_prefix_returns_to_the_backend_that_cached_it() {
    let p = policy();
    let mut pool = idle(4);
    let system = text(1, 2000);
    let first = decide(&p, &pool, &format!("{system}{}", text(2, 50))).primary;
    // Load elsewhere equal; the home is a little busier but far cheaper than a 2000-token prefill.
    pool[first.index()].prefill_tokens = 300;
    pool[first.index()].in_flight = 1;
    pool[first.index()].in_flight_tokens = 2400;
    for q in 3..10 {
        let d = decide(&p, &pool, &format!("{system}{}", text(q, 50)));
        assert_eq!(d.primary, first);
        assert!(d.reason.detail.values()[0] >= 1984, "{}", d.reason);
    }
}

#[test]
fn cold_requests_spread_over_idle_backends() {
    let p = policy();
    let pool = idle(4);
    let mut seen: Vec<u32> = (0..4)
        .map(|i| decide(&p, &pool, &text(100 + i, 500)).primary.0)
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3]);
}

#[test]
fn cold_requests_avoid_the_loaded_backend() {
    let p = policy();
    let mut pool = idle(3);
    pool[0].prefill_tokens = 5000;
    pool[0].in_flight = 2;
    pool[0].in_flight_tokens = 6000;
    pool[1].prefill_tokens = 100;
    pool[1].in_flight = 1;
    pool[1].in_flight_tokens = 400;
    let d = decide(&p, &pool, &text(7, 300));
    assert_eq!(d.primary, BackendId(2));
    assert_eq!(d.fallbacks.as_slice(), &[BackendId(1), BackendId(0)]);
}

#[test]
fn a_hot_prefix_spills_when_its_home_queue_costs_more_than_a_prefill() {
    let p = policy();
    let mut pool = idle(2);
    let system = text(1, 1000);
    let home = decide(&p, &pool, &format!("{system}{}", text(2, 20))).primary;
    let other = BackendId(1 - home.0);
    pool[home.index()].prefill_tokens = 3000;
    pool[home.index()].in_flight = 10;
    pool[home.index()].in_flight_tokens = 12_000;
    let d = decide(&p, &pool, &format!("{system}{}", text(3, 20)));
    assert_eq!(d.primary, other, "queue 3000 + 1200 > prefill 1000 + 0");
    assert_eq!(d.fallbacks.as_slice(), &[home]);
}

/// Loads under which a 1000-token prefix cached at `home` is worth copying to the other
/// backend only if it is reused: `home` has a 3000-token queue, the other none, and both run
/// ten requests. Returns the backend the next request goes to after the prefix was sent
/// `sends` times.
fn next_after_sends(sends: u32) -> (BackendId, BackendId) {
    let p = policy();
    let mut pool = idle(2);
    let prefix = text(1, 1000);
    let home = decide(&p, &pool, &format!("{prefix}{}", text(2, 20))).primary;
    let blocks = block_hashes(&prefix);
    for _ in 1..sends {
        p.index().record(&blocks, home.0, 10_000);
    }
    for b in &mut pool {
        b.in_flight = 10;
        b.in_flight_tokens = 12_000;
    }
    pool[home.index()].prefill_tokens = 3000;
    let d = decide(&p, &pool, &format!("{prefix}{}", text(3, 20)));
    (home, d.primary)
}

/// A chat session's history (its deepest block sent once, by its previous turn) stays home
/// when another replica's queue is shorter but busy with running requests; a system prompt
/// sent 20 times is copied under the same loads, since its copy will be reused.
#[test]
fn a_session_history_stays_home_where_a_popular_prefix_is_copied() {
    let (home, next) = next_after_sends(1);
    assert_eq!(
        next, home,
        "copying a history used once is not worth a 3000-token queue"
    );
    let (home, next) = next_after_sends(20);
    assert_ne!(next, home, "a prefix sent 20 times is copied");
    // Without the charge (copy_weight 0), the history moves too.
    let p = policy().with_copy_weight(0.0);
    let mut pool = idle(2);
    let history = text(1, 1000);
    let home = decide(&p, &pool, &format!("{history}{}", text(2, 20))).primary;
    for b in &mut pool {
        b.in_flight = 10;
        b.in_flight_tokens = 12_000;
    }
    pool[home.index()].prefill_tokens = 3000;
    let d = decide(&p, &pool, &format!("{history}{}", text(3, 20)));
    assert_ne!(d.primary, home);
}

#[test]
fn a_fresh_engine_queue_counts_a_stale_one_does_not() {
    let p = policy();
    let mut pool = idle(2);
    pool[0].in_flight = 1;
    pool[0].in_flight_tokens = 500;
    pool[1].in_flight = 1;
    pool[1].in_flight_tokens = 500;
    pool[0].engine = Some(EngineLoad {
        running: 1,
        waiting: 20,
        kv_usage: 0.5,
        kv_capacity_tokens: Some(16_000),
        age: Duration::from_millis(300),
    });
    assert_eq!(decide(&p, &pool, &text(5, 100)).primary, BackendId(1));
    if let Some(e) = pool[0].engine.as_mut() {
        e.age = Duration::from_secs(60);
    }
    pool[1].in_flight_tokens = 600;
    assert_eq!(decide(&p, &pool, &text(6, 100)).primary, BackendId(0));
}

#[test]
fn never_picks_an_unusable_backend_even_with_the_prefix_and_explains() {
    let p = policy();
    let mut pool = idle(3);
    let system = text(1, 800);
    let home = decide(&p, &pool, &format!("{system}{}", text(2, 10))).primary;
    pool[home.index()].usable = false;
    let d = p
        .decide(
            &prompt_request(&format!("{system}{}", text(3, 10))),
            &FleetView::new(&pool, Duration::ZERO).explaining(true),
        )
        .unwrap();
    assert_ne!(d.primary, home);
    assert!(!d.fallbacks.contains(&home));
    let e = d.explanation.unwrap();
    let c = &e.candidates[home.index()];
    assert!(c.score.is_infinite());
    let chosen = &e.candidates[d.primary.index()];
    assert!(chosen.terms.iter().any(|(k, _)| *k == "uncached_tokens"));
    pool.iter_mut().for_each(|b| b.usable = false);
    assert_eq!(
        p.decide(
            &prompt_request(&system),
            &FleetView::new(&pool, Duration::ZERO)
        ),
        Err(NoCandidate)
    );
}

#[test]
fn the_index_is_sized_from_the_engine_cache() {
    let p = policy();
    let mut pool = idle(1);
    pool[0].engine = Some(EngineLoad {
        running: 0,
        waiting: 0,
        kv_usage: 0.0,
        kv_capacity_tokens: Some(16 * 100),
        age: Duration::ZERO,
    });
    for i in 0..20 {
        decide(&p, &pool, &text(200 + i, 160)); // 10 blocks each
    }
    assert_eq!(p.index().len(), 100);
}

#[test]
fn a_large_pool_shares_the_index_cap() {
    let mut b = idle(1)[0];
    b.engine = Some(EngineLoad {
        running: 0,
        waiting: 0,
        kv_usage: 0.0,
        kv_capacity_tokens: Some(16 * 100_000),
        age: Duration::ZERO,
    });
    assert_eq!(capacity_blocks(&b, 4), 100_000);
    assert_eq!(capacity_blocks(&b, 64), crate::prefix::MAX_POOL_BLOCKS / 64);
    b.engine = None;
    assert_eq!(capacity_blocks(&b, 4), DEFAULT_BACKEND_BLOCKS);
}

#[test]
fn large_pools_empty_prompts_and_empty_pools_do_not_break_it() {
    let p = policy();
    let pool = idle(100); // past the inline capacity of the per-decision buffers
    let system = text(9, 300);
    let first = decide(&p, &pool, &format!("{system}a")).primary;
    assert_eq!(decide(&p, &pool, &format!("{system}b")).primary, first);
    let d = p
        .decide(
            &prompt_request(""),
            &FleetView::new(&pool, Duration::ZERO).explaining(true),
        )
        .unwrap();
    assert_eq!(d.explanation.unwrap().candidates.len(), 100);
    assert_eq!(
        p.decide(&prompt_request("x"), &FleetView::new(&[], Duration::ZERO)),
        Err(NoCandidate)
    );
}

/// Regression: without a KV term, cold prefixes piled onto a replica whose cache was already
/// full of other prefixes in use, which then stalled admissions and preempted requests.
#[test]
fn a_cold_prefix_goes_where_the_kv_cache_has_room_but_a_hit_stays_home() {
    let p = policy();
    let mut pool = idle(2);
    let engine = |kv_usage| {
        Some(EngineLoad {
            running: 4,
            waiting: 0,
            kv_usage,
            kv_capacity_tokens: Some(32_000),
            age: Duration::from_millis(200),
        })
    };
    // Backend 0 is slightly less loaded in tokens but its cache is nearly full.
    pool[0].in_flight = 4;
    pool[0].in_flight_tokens = 4_000;
    pool[0].engine = engine(0.95);
    pool[1].in_flight = 4;
    pool[1].in_flight_tokens = 6_000;
    pool[1].engine = engine(0.2);
    let doc = text(40, 2000);
    let d = decide(&p, &pool, &format!("{doc}{}", text(41, 30)));
    assert_eq!(d.primary, BackendId(1), "{d:?}");
    // With equal KV use, the lighter backend 0 would have taken it.
    let q = policy();
    pool[0].engine = engine(0.2);
    let d = decide(&q, &pool, &format!("{doc}{}", text(41, 30)));
    assert_eq!(d.primary, BackendId(0), "{d:?}");
    // Once backend 1 holds the prefix, a full cache elsewhere does not pull it away, and a
    // full cache at home does not push it away either: a hit prefills almost nothing.
    pool[0].engine = engine(0.2);
    pool[1].engine = engine(0.95);
    let home = decide(&p, &pool, &format!("{doc}{}", text(42, 30)));
    assert_eq!(home.primary, BackendId(1), "{home:?}");
}
