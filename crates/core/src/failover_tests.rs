//! Unit tests of [`super`]: a mock pool, explicit `now`, and the steps the plan returns.

use super::*;
use crate::decision::Reason;

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One member of the mock pool.
#[derive(Debug, Clone, Copy, Default)]
struct Member {
    /// Out for a timed reason until then (429 cooldown, open breaker).
    down_until: Option<Duration>,
    /// Out for an open-ended reason (health checks down).
    out: bool,
    /// Total timeout per request.
    total: Option<Duration>,
}

/// A mock pool: its members and fixed random bits.
#[derive(Debug, Clone)]
struct MockPool {
    members: Vec<Member>,
    random: u64,
}

impl MockPool {
    fn new(n: usize) -> Self {
        Self {
            members: vec![Member::default(); n],
            random: 0,
        }
    }
}

impl Target for MockPool {
    fn len(&self) -> usize {
        self.members.len()
    }
    fn usable(&self, id: BackendId, now: Duration) -> bool {
        let m = &self.members[id.index()];
        !m.out && m.down_until.is_none_or(|t| now >= t)
    }
    fn total_timeout(&self, id: BackendId) -> Option<Duration> {
        self.members[id.index()].total
    }
    fn next_return(&self, now: Duration) -> Option<Duration> {
        self.members
            .iter()
            .filter(|m| !m.out)
            .filter_map(|m| m.down_until.filter(|t| *t > now))
            .min()
    }
    fn random(&self) -> u64 {
        self.random
    }
}

fn settings() -> FailoverSettings {
    FailoverSettings {
        max_attempts: 3,
        cooldown_wait: ms(3000),
        backoff_base: ms(25),
        backoff_max: ms(250),
    }
}

fn plan(budget: &RetryBudget) -> FailoverPlan<'_> {
    FailoverPlan {
        settings: settings(),
        budget,
        arrived: Duration::ZERO,
    }
}

/// A decision trying `ids` in order.
fn decision(ids: &[u32]) -> Decision {
    Decision::new(
        BackendId(ids[0]),
        Reason::text("round_robin", "next in rotation"),
    )
    .with_fallbacks(ids[1..].iter().map(|i| BackendId(*i)))
}

fn send(backend: u32, after: Duration, retry: bool) -> Step {
    Step::Send {
        backend: BackendId(backend),
        after,
        retry,
    }
}

/// A request begun at 0 whose first attempt went to `d`'s primary.
fn first_sent(plan: &FailoverPlan<'_>, pool: &MockPool, d: &Decision) -> Progress {
    let mut p = plan.begin(ms(0));
    assert_eq!(plan.next(&mut p, pool, None, ms(0)), Step::Decide);
    let first = plan.next(&mut p, pool, Some(d), ms(0));
    assert_eq!(first, send(d.primary.0, ms(0), false));
    p
}

/// A budget that always has room.
fn roomy() -> RetryBudget {
    RetryBudget::new(1.0, 1000.0)
}

#[test]
fn the_first_attempt_goes_to_the_primary_at_once_and_spends_no_budget() {
    let budget = RetryBudget::new(0.0, 0.0);
    let plan = plan(&budget);
    let pool = MockPool::new(2);
    let mut p = plan.begin(ms(0));
    assert_eq!(plan.next(&mut p, &pool, None, ms(0)), Step::Decide);
    let d = decision(&[1, 0]);
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(0)),
        send(1, ms(0), false)
    );
    assert_eq!(p.attempts(), 1);
}

#[test]
fn a_failed_attempt_fails_over_after_a_jittered_backoff() {
    let budget = roomy();
    let plan = plan(&budget);
    let mut pool = MockPool::new(3);
    pool.random = u64::MAX;
    let mut p = plan.begin(ms(0));
    let d = decision(&[0, 1, 2]);
    plan.next(&mut p, &pool, None, ms(0));
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(0)),
        send(0, ms(0), false)
    );
    plan.report(&mut p, Outcome::Failed, ms(5));
    let Step::Send {
        backend,
        after,
        retry,
    } = plan.next(&mut p, &pool, Some(&d), ms(5))
    else {
        panic!("expected a retry");
    };
    assert_eq!((backend, retry), (BackendId(1), true));
    assert!(after > ms(24) && after <= ms(25), "{after:?}");
    plan.report(&mut p, Outcome::Failed, ms(40));
    let Step::Send { backend, after, .. } = plan.next(&mut p, &pool, Some(&d), ms(40)) else {
        panic!("expected a second retry");
    };
    assert_eq!(backend, BackendId(2));
    assert!(after > ms(49) && after <= ms(50), "doubled: {after:?}");
}

#[test]
fn an_exhausted_budget_stops_the_request_and_a_refused_retry_is_given_back() {
    // One retry in the 10 s window.
    let budget = RetryBudget::new(0.0, 0.1);
    let plan = plan(&budget);
    let pool = MockPool::new(3);
    let d = decision(&[0, 1, 2]);
    let mut p = first_sent(&plan, &pool, &d);
    plan.report(&mut p, Outcome::Failed, ms(1));
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(1)),
        send(1, ms(0), true)
    );
    // Its breaker refused it at dispatch: not an attempt, and the retry comes back.
    plan.report(&mut p, Outcome::Refused, ms(2));
    assert_eq!(p.attempts(), 1);
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(2)),
        send(2, ms(0), true)
    );
    plan.report(&mut p, Outcome::Failed, ms(3));
    // The next model would need a retry too; the budget has none left.
    assert_eq!(plan.next(&mut p, &pool, Some(&d), ms(3)), Step::NextModel);
    assert_eq!(plan.next(&mut p, &pool, None, ms(3)), Step::Decide);
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(3)),
        Step::GiveUp(GiveUp::Budget)
    );
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(4)),
        Step::GiveUp(GiveUp::Budget),
        "stopped for good"
    );
}

#[test]
fn retry_after_lengthens_the_wait_only_for_the_backend_that_sent_it() {
    let budget = roomy();
    let plan = plan(&budget);
    let mut pool = MockPool::new(2);
    let d = decision(&[0, 1]);
    let mut p = first_sent(&plan, &pool, &d);
    // 429 with Retry-After: 0.1; the gateway cools the backend down for as long.
    plan.report(
        &mut p,
        Outcome::Answered {
            retry_after: Some(ms(100)),
        },
        ms(10),
    );
    pool.members[0].down_until = Some(ms(110));
    // Another backend is not held to it (zero jitter: no wait at all).
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(10)),
        send(1, ms(0), true)
    );
    plan.report(&mut p, Outcome::Failed, ms(20));
    pool.members[1].out = true;
    // Both out; the first back in time is waited for, then asked again with its wait.
    assert_eq!(plan.next(&mut p, &pool, Some(&d), ms(20)), Step::Decide);
    assert_eq!(
        plan.next(&mut p, &pool, None, ms(20)),
        Step::Wait { until: ms(111) }
    );
    assert_eq!(plan.next(&mut p, &pool, None, ms(111)), Step::Decide);
    let d0 = decision(&[0]);
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d0), ms(111)),
        send(0, ms(100), true),
        "the Retry-After, above the backoff"
    );
}

#[test]
fn retry_after_never_raises_the_wait_past_backoff_max() {
    let budget = roomy();
    let plan = plan(&budget);
    let pool = MockPool::new(1);
    let d = decision(&[0]);
    let mut p = first_sent(&plan, &pool, &d);
    plan.report(
        &mut p,
        Outcome::Answered {
            retry_after: Some(Duration::from_secs(30)),
        },
        ms(1),
    );
    // Same decision again (the backend stayed usable): one round, then the next model.
    assert_eq!(plan.next(&mut p, &pool, Some(&d), ms(1)), Step::NextModel);
    // A retryable answer without Retry-After clears the one before.
    let mut p = first_sent(&plan, &pool, &d);
    let ra = Outcome::Answered {
        retry_after: Some(Duration::from_secs(30)),
    };
    plan.report(&mut p, ra, ms(1));
    let mut pool2 = MockPool::new(1);
    pool2.members[0].down_until = Some(ms(50));
    assert_eq!(plan.next(&mut p, &pool2, Some(&d), ms(1)), Step::Decide);
    assert_eq!(
        plan.next(&mut p, &pool2, None, ms(1)),
        Step::Wait { until: ms(51) }
    );
    plan.next(&mut p, &pool2, None, ms(51));
    assert_eq!(
        plan.next(&mut p, &pool2, Some(&d), ms(51)),
        send(0, ms(250), true)
    );
}

#[test]
fn a_cooling_pool_is_waited_for_only_within_cooldown_wait() {
    let budget = roomy();
    let plan = plan(&budget);
    let mut pool = MockPool::new(1);
    pool.members[0].down_until = Some(ms(2000));
    let mut p = plan.begin(ms(0));
    assert_eq!(plan.next(&mut p, &pool, None, ms(0)), Step::Decide);
    assert_eq!(
        plan.next(&mut p, &pool, None, ms(0)),
        Step::Wait { until: ms(2001) }
    );
    // Back later than 3 s after the model was entered: not waited for.
    pool.members[0].down_until = Some(ms(3500));
    assert_eq!(plan.next(&mut p, &pool, None, ms(2001)), Step::Decide);
    assert_eq!(plan.next(&mut p, &pool, None, ms(2001)), Step::NextModel);
    // Out for an open-ended reason: nothing to wait for.
    let mut p = plan.begin(ms(0));
    pool.members[0] = Member {
        out: true,
        ..Member::default()
    };
    plan.next(&mut p, &pool, None, ms(0));
    assert_eq!(plan.next(&mut p, &pool, None, ms(0)), Step::NextModel);
}

#[test]
fn waiting_never_runs_past_the_longest_total_timeout() {
    let budget = roomy();
    let plan = FailoverPlan {
        arrived: ms(100),
        ..plan(&budget)
    };
    let mut pool = MockPool::new(2);
    pool.members[0].total = Some(ms(500));
    pool.members[1].total = Some(ms(900));
    pool.members[0].down_until = Some(ms(990));
    pool.members[1].down_until = Some(ms(1010));
    let mut p = plan.begin(ms(200));
    plan.next(&mut p, &pool, None, ms(200));
    assert_eq!(
        plan.next(&mut p, &pool, None, ms(200)),
        Step::Wait { until: ms(991) },
        "back before 100 + 900"
    );
    pool.members[0].down_until = Some(ms(1001));
    let mut p = plan.begin(ms(200));
    plan.next(&mut p, &pool, None, ms(200));
    assert_eq!(plan.next(&mut p, &pool, None, ms(200)), Step::NextModel);
}

#[test]
fn candidates_without_time_left_are_skipped_and_cost_no_budget() {
    // One retry in the window: a skipped candidate must not spend it.
    let budget = RetryBudget::new(0.0, 0.1);
    let plan = plan(&budget);
    let mut pool = MockPool::new(3);
    pool.random = u64::MAX;
    pool.members[0].total = Some(ms(100));
    pool.members[1].total = Some(ms(110));
    let d = decision(&[0, 1, 2]);
    let mut p = first_sent(&plan, &pool, &d);
    plan.report(&mut p, Outcome::Failed, ms(90));
    // Backend 1 has 20 ms left, less than its ~25 ms backoff plus the minimum: skipped.
    let Step::Send { backend, retry, .. } = plan.next(&mut p, &pool, Some(&d), ms(90)) else {
        panic!("expected a retry");
    };
    assert_eq!((backend, retry), (BackendId(2), true));
    plan.report(&mut p, Outcome::Failed, ms(95));
    // A backend whose total has run out is not sent to even as a first attempt.
    let mut p = plan.begin(ms(100));
    plan.next(&mut p, &pool, None, ms(100));
    assert_eq!(
        plan.next(&mut p, &pool, Some(&decision(&[0, 2])), ms(100)),
        send(2, ms(0), false)
    );
}

#[test]
fn a_round_refused_at_dispatch_decides_again_a_few_times() {
    let budget = roomy();
    let plan = plan(&budget);
    let pool = MockPool::new(1);
    let d = decision(&[0]);
    let mut p = plan.begin(ms(0));
    plan.next(&mut p, &pool, None, ms(0));
    for round in 0..=MAX_REFUSED_ROUNDS {
        assert_eq!(
            plan.next(&mut p, &pool, Some(&d), ms(0)),
            send(0, ms(0), false),
            "round {round}"
        );
        plan.report(&mut p, Outcome::Refused, ms(0));
        let expected = if round < MAX_REFUSED_ROUNDS {
            Step::Decide
        } else {
            Step::NextModel
        };
        assert_eq!(plan.next(&mut p, &pool, Some(&d), ms(0)), expected);
    }
    assert_eq!(p.attempts(), 0);
}

#[test]
fn max_attempts_bounds_each_model_and_fallback_models_start_afresh() {
    let budget = roomy();
    let plan = FailoverPlan {
        settings: FailoverSettings {
            max_attempts: 2,
            ..settings()
        },
        ..plan(&budget)
    };
    let pool = MockPool::new(3);
    let d = decision(&[0, 1, 2]);
    let mut p = plan.begin(ms(0));
    plan.next(&mut p, &pool, None, ms(0));
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(0)),
        send(0, ms(0), false)
    );
    plan.report(
        &mut p,
        Outcome::Answered {
            retry_after: Some(ms(200)),
        },
        ms(1),
    );
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(1)),
        send(1, ms(0), true)
    );
    plan.report(&mut p, Outcome::Failed, ms(2));
    assert_eq!(plan.next(&mut p, &pool, Some(&d), ms(2)), Step::NextModel);
    assert_eq!(p.model(), 1);
    // The fallback model: its own attempts, every one a retry; model 0's Retry-After does
    // not speak for model 1's backend 0.
    assert_eq!(plan.next(&mut p, &pool, None, ms(2)), Step::Decide);
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(2)),
        send(0, ms(0), true)
    );
    plan.report(&mut p, Outcome::Failed, ms(3));
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(3)),
        send(1, ms(0), true)
    );
    plan.report(&mut p, Outcome::Failed, ms(4));
    assert_eq!(plan.next(&mut p, &pool, Some(&d), ms(4)), Step::NextModel);
    assert_eq!(p.attempts(), 4);
}

#[test]
fn unusable_candidates_are_skipped_on_retries_only() {
    let budget = roomy();
    let plan = plan(&budget);
    let mut pool = MockPool::new(2);
    pool.members[0].out = true;
    pool.members[1].out = true;
    let d = decision(&[0, 1]);
    let mut p = plan.begin(ms(0));
    plan.next(&mut p, &pool, None, ms(0));
    // The policy chose it: the first attempt goes even if it turned unusable since.
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(0)),
        send(0, ms(0), false)
    );
    plan.report(&mut p, Outcome::Failed, ms(1));
    assert_eq!(plan.next(&mut p, &pool, Some(&d), ms(1)), Step::NextModel);
}

#[test]
fn a_local_shortage_stops_at_once() {
    let budget = roomy();
    let plan = plan(&budget);
    let pool = MockPool::new(2);
    let d = decision(&[0, 1]);
    let mut p = first_sent(&plan, &pool, &d);
    plan.report(&mut p, Outcome::Local, ms(1));
    assert_eq!(
        plan.next(&mut p, &pool, Some(&d), ms(1)),
        Step::GiveUp(GiveUp::Local)
    );
}
