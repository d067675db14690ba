//! Routing quality on the virtual-time fleet: the LLM-aware policies against round robin,
//! weighted round robin, `least_loaded` and the SGLang-style baseline, on the same workloads
//! with fixed seeds (issue 5's acceptance criteria). Deterministic: every number below is a
//! pure function of the seeds. Run with `--nocapture` to see the table of each workload.
//!
//! Chat throughput is measured at a fixed concurrency (closed loop, `Arrivals::Users`):
//! open-loop runs that finish every request cap throughput at the arrival rate. The no-hotspot
//! check is the capacity-weighted in-flight ratio (`weighted_in_flight_imbalance_mean`).
//!
//! The fleets are four Llama-3-8B replicas on L4 GPUs (a real profile whose KV cache holds
//! about 31k tokens, so the shared-prefix workload's prefixes, 64k tokens, cannot all fit one
//! replica), and for the heterogeneous case two A100s and two L4s.

use switchyard_core::PolicySpec;
use switchyard_sim::baselines::{SglangCacheAware, SglangConfig};
use switchyard_sim::fleet::{run, run_arrivals, run_with, run_with_arrivals, Arrivals};
use switchyard_sim::workload::{
    agent_sessions, multi_turn, shared_prefix, sharegpt_like, AgentSpec, Length, MultiTurnSpec,
    ShareGptSpec, SharedPrefixSpec,
};
use switchyard_sim::{profile, FleetConfig, RunReport, Summary, Workload};

/// Every policy of ours (the LLM-aware ones) by config name.
const OURS: &[&str] = &[
    "least_loaded",
    "peak_ewma",
    "prefix_aware",
    "gpu_aware",
    "cost",
    "composite",
];

fn l4_fleet() -> FleetConfig {
    FleetConfig::uniform(&profile::l4_llama3_8b(), 4, PolicySpec::default(), 1)
}

fn with(config: &FleetConfig, policy: &str, w: &Workload) -> RunReport {
    let mut c = config.clone();
    c.policy = PolicySpec::from_name(policy).unwrap();
    let r = run(&c, w).unwrap();
    show(policy, &r.summary);
    r
}

fn sglang(config: &FleetConfig, w: &Workload) -> RunReport {
    let policy = Box::new(SglangCacheAware::new(SglangConfig::default()));
    let r = run_with(config, w, policy).unwrap();
    show("sglang_cache_aware", &r.summary);
    r
}

/// `users` users running the workload's chat sessions back to back (closed loop).
fn with_users(config: &FleetConfig, policy: &str, w: &Workload, users: usize) -> RunReport {
    let mut c = config.clone();
    c.policy = PolicySpec::from_name(policy).unwrap();
    let r = run_arrivals(&c, w, Arrivals::Users(users)).unwrap();
    show(policy, &r.summary);
    r
}

fn sglang_with_users(config: &FleetConfig, w: &Workload, users: usize) -> RunReport {
    let policy = Box::new(SglangCacheAware::new(SglangConfig::default()));
    let r = run_with_arrivals(config, w, policy, Arrivals::Users(users)).unwrap();
    show("sglang_cache_aware", &r.summary);
    r
}

/// Round robin, the SGLang-style baseline and prefix_aware, each with `users` users.
fn rr_sglang_prefix_aware_with_users(
    config: &FleetConfig,
    w: &Workload,
    users: usize,
) -> [RunReport; 3] {
    [
        with_users(config, "round_robin", w, users),
        sglang_with_users(config, w, users),
        with_users(config, "prefix_aware", w, users),
    ]
}

/// Output tokens per second.
fn tput(r: &RunReport) -> f64 {
    r.summary.output_tokens_per_s
}

fn show(name: &str, s: &Summary) {
    eprintln!(
        "{name:>20}: TTFT p50 {:8.3} p90 {:8.3} p99 {:8.3} s | e2e p99 {:7.2} s | {:7.1} out tok/s | hit {:.2} | in-flight max/mean {:.2} (peak {:.2}), per weight {:.2} | {:?}",
        s.ttft_p50.unwrap_or(f64::NAN),
        s.ttft_p90.unwrap_or(f64::NAN),
        s.ttft_p99.unwrap_or(f64::NAN),
        s.e2e_p99.unwrap_or(f64::NAN),
        s.output_tokens_per_s,
        s.prefix_cache_hit_rate,
        s.in_flight_imbalance_mean,
        s.in_flight_imbalance_max,
        s.weighted_in_flight_imbalance_mean,
        s.requests_per_backend,
    );
}

fn p90(r: &RunReport) -> f64 {
    r.summary.ttft_p90.unwrap()
}

/// No replica takes more than twice its fair share: the time-weighted max/mean ratio of
/// in-flight requests per unit of weight (a replica's fair share on a mixed fleet is its
/// capacity weight's share) stays at most 2, and so does the unweighted ratio on a fleet of
/// equal weights; every request completed.
fn assert_no_hotspot(r: &RunReport) {
    let s = &r.summary;
    assert_eq!(s.completed, s.requests, "{}: {s:?}", r.policy);
    assert!(
        s.weighted_in_flight_imbalance_mean <= 2.0,
        "{}: {s:?}",
        r.policy
    );
    if r.backends.iter().all(|b| b.name.starts_with("l4")) {
        assert!(s.in_flight_imbalance_mean <= 2.0, "{}: {s:?}", r.policy);
    }
}

/// Many users behind 16 long prefixes (4000 tokens each, 64k in all: twice one replica's
/// cache) with Zipf-skewed popularity, arriving faster than round robin can serve.
fn shared_prefix_workload() -> Workload {
    shared_prefix_with(1.0, 1)
}

/// The shared-prefix workload with popularity skew `skew` (0: uniform) and seed `seed`.
fn shared_prefix_with(skew: f64, seed: u64) -> Workload {
    shared_prefix(
        &SharedPrefixSpec {
            requests: 600,
            rate: 5.5,
            groups: 16,
            prefix_tokens: 4000,
            users_per_group: 8,
            group_skew: skew,
            suffix_tokens: Length::Uniform { min: 20, max: 200 },
            output_tokens: Length::Uniform { min: 50, max: 200 },
        },
        seed,
    )
}

/// `prefix_aware` against the SGLang-style baseline on one shared-prefix variant: returns
/// SGLang's p90 TTFT over ours.
fn lead_over_sglang(skew: f64, seed: u64) -> f64 {
    let fleet = l4_fleet();
    let w = shared_prefix_with(skew, seed);
    eprintln!("skew {skew} seed {seed}");
    let sg = sglang(&fleet, &w);
    let pa = with(&fleet, "prefix_aware", &w);
    assert_no_hotspot(&pa);
    p90(&sg) / p90(&pa)
}

/// With equally popular prefixes SGLang's strict partition (each prefix on one worker, new
/// ones on the smallest tree) is close to the best possible: its p90 TTFT sits a few tens of
/// milliseconds above the median of a cache hit. prefix_aware must stay within 10% of it.
/// Regression: before the KV-use factor, prefix_aware piled prefixes on one replica past
/// its cache on some seeds and skews (p90 1.4 to 4.3 s against SGLang's 0.3 to 0.4 s).
#[test]
fn prefix_aware_stays_within_ten_percent_of_sglang_on_uniform_popularity() {
    for seed in [1, 2] {
        let lead = lead_over_sglang(0.0, seed);
        assert!(lead >= 1.0 / 1.1, "seed {seed}: {lead}");
    }
}

/// With skewed popularity SGLang's hot prefix stays on one worker; prefix_aware spreads it
/// when that pays, and leads.
#[test]
fn prefix_aware_leads_sglang_on_skewed_popularity_across_seeds() {
    for (skew, seed, least) in [(0.5, 1, 1.1), (0.5, 2, 1.1), (1.0, 2, 1.25)] {
        let lead = lead_over_sglang(skew, seed);
        assert!(lead >= least, "skew {skew} seed {seed}: {lead}");
    }
}

#[test]
fn prefix_aware_beats_round_robin_and_sglang_on_shared_prefixes() {
    let fleet = l4_fleet();
    let cache = fleet.backends[0].engine.capacity_tokens();
    assert!(
        16 * 4000 > 2 * cache - 2000,
        "KV demand well above one replica: {cache}"
    );
    let w = shared_prefix_workload();
    let rr = with(&fleet, "round_robin", &w);
    let sg = sglang(&fleet, &w);
    let pa = with(&fleet, "prefix_aware", &w);
    assert!(p90(&rr) >= 5.0 * p90(&pa), "{} vs {}", p90(&rr), p90(&pa));
    assert!(p90(&sg) >= 1.3 * p90(&pa), "{} vs {}", p90(&sg), p90(&pa));
    let (t_rr, t_pa) = (
        rr.summary.output_tokens_per_s,
        pa.summary.output_tokens_per_s,
    );
    assert!(t_pa >= 1.5 * t_rr, "{t_pa} vs {t_rr}");
    assert!(pa.summary.prefix_cache_hit_rate > rr.summary.prefix_cache_hit_rate + 0.2);
    assert_no_hotspot(&pa);
}

/// Chat sessions resending their growing history, 3 new sessions a second.
fn multi_turn_workload() -> Workload {
    multi_turn(
        &MultiTurnSpec {
            sessions: 100,
            session_rate: 3.0,
            think_time_s: 5.0,
            ..MultiTurnSpec::default()
        },
        1,
    )
}

#[test]
fn prefix_aware_beats_round_robin_and_sglang_on_multi_turn_chat() {
    let fleet = l4_fleet();
    let w = multi_turn_workload();
    let rr = with(&fleet, "round_robin", &w);
    let sg = sglang(&fleet, &w);
    let pa = with(&fleet, "prefix_aware", &w);
    assert!(p90(&rr) >= 5.0 * p90(&pa), "{} vs {}", p90(&rr), p90(&pa));
    assert!(p90(&sg) >= 1.3 * p90(&pa), "{} vs {}", p90(&sg), p90(&pa));
    // Throughput here is 1.09x round robin's, not 1.5x: this open-loop workload's duration
    // is set by its sessions' arrivals and think times, and round robin keeps up with them,
    // only later. What is checked is that it does not drop; the saturated chat test below
    // measures capacity.
    let (t_rr, t_pa) = (
        rr.summary.output_tokens_per_s,
        pa.summary.output_tokens_per_s,
    );
    assert!(t_pa >= t_rr, "{t_pa} vs {t_rr}");
    assert!(pa.summary.prefix_cache_hit_rate > rr.summary.prefix_cache_hit_rate + 0.1);
    assert_no_hotspot(&pa);
}

#[test]
fn no_policy_of_ours_is_worse_than_least_loaded_without_sharing() {
    let fleet = l4_fleet();
    let w = sharegpt_like(
        &ShareGptSpec {
            requests: 600,
            rate: 8.0,
            ..ShareGptSpec::default()
        },
        1,
    );
    let base = with(&fleet, "least_loaded", &w);
    for name in OURS.iter().filter(|n| **n != "least_loaded") {
        let r = with(&fleet, name, &w);
        assert!(
            p90(&r) <= 1.05 * p90(&base),
            "{name}: {} vs {}",
            p90(&r),
            p90(&base)
        );
        let (t, t_base) = (
            r.summary.output_tokens_per_s,
            base.summary.output_tokens_per_s,
        );
        assert!(t >= 0.95 * t_base, "{name}: {t} vs {t_base}");
        assert_no_hotspot(&r);
    }
}

#[test]
fn latency_and_load_aware_policies_beat_capacity_weights_on_a_mixed_fleet() {
    let fleet = FleetConfig::mixed(
        &[
            (&profile::a100_llama3_8b(), 2),
            (&profile::l4_llama3_8b(), 2),
        ],
        PolicySpec::default(),
        1,
    );
    let weights: Vec<u32> = fleet.backends.iter().map(|b| b.weight).collect();
    assert_eq!(
        weights,
        [5, 5, 1, 1],
        "capacity weights from the step-time model"
    );
    let w = sharegpt_like(
        &ShareGptSpec {
            requests: 600,
            rate: 10.0,
            ..ShareGptSpec::default()
        },
        2,
    );
    let e2e99 = |r: &RunReport| r.summary.e2e_p99.unwrap();
    let weighted = with(&fleet, "weighted", &w);
    // The metric can see a hotspot: weighted round robin sends each backend exactly its
    // capacity share of requests, but the L4s hold theirs longer than their weight says.
    assert!(weighted.summary.weighted_in_flight_imbalance_mean > 2.0);
    for name in ["peak_ewma", "least_loaded"] {
        let r = with(&fleet, name, &w);
        assert!(
            e2e99(&r) < e2e99(&weighted),
            "{name}: {} vs {}",
            e2e99(&r),
            e2e99(&weighted)
        );
        assert_no_hotspot(&r);
    }
}

/// Chat whose users paste long messages (documents, code, logs: 400 tokens median) behind a
/// 300-token system prompt and get short answers (40 median), 4 to 12 turns: prefill-heavy
/// chat, seeded by `seed`.
fn long_message_chat(seed: u64) -> Workload {
    multi_turn(
        &MultiTurnSpec {
            sessions: 200,
            turns: (4, 12),
            user_tokens: Length::LogNormal {
                median: 400.0,
                sigma: 0.8,
                min: 4,
                max: 2000,
            },
            output_tokens: Length::LogNormal {
                median: 40.0,
                sigma: 0.7,
                min: 8,
                max: 1000,
            },
            think_time_s: 0.0,
            ..MultiTurnSpec::default()
        },
        seed,
    )
}

/// The SGLang-style baseline with its imbalance guard scaled to this fleet: 4 requests
/// instead of 64, which a replica holding about 8 requests never reaches. The best of the
/// thresholds tried (2, 4, 8, 16) for it on this workload.
fn sglang_tuned_with_users(config: &FleetConfig, w: &Workload, users: usize) -> RunReport {
    let policy = Box::new(SglangCacheAware::new(SglangConfig {
        balance_abs_threshold: 4,
        ..SglangConfig::default()
    }));
    let r = run_with_arrivals(config, w, policy, Arrivals::Users(users)).unwrap();
    show("sglang_tuned_abs_4", &r.summary);
    r
}

/// Saturated multi-turn chat: 32 clients run the long-message sessions back to back, each
/// sending its next turn as soon as the answer ends (closed loop, as SGLang's
/// `bench_multiturn` does; the clients start over the first 16 s), on four L4s whose
/// 31k-token caches hold about 10 live histories each. Output throughput is capacity here,
/// not the arrival clock: output tokens of all 200 sessions over the time from the first
/// turn to the last answer.
///
/// Measured (seeds 1, 2, 3): prefix_aware 1.63x, 1.64x, 1.54x round robin's throughput and
/// 8.3x, 9.5x, 5.9x better p90 TTFT; 2.5x, 7.0x, 12x better p90 than the SGLang-style
/// baseline. That baseline keeps every session where it started and, with about 8 requests
/// per replica, its 64-request imbalance guard never fires: 20 to 30% of new sessions land
/// on a replica already holding more than the least loaded (its smallest-tree rule picks the
/// replica that has been sent the least text, which is the slow one, and one- or
/// two-character chance matches past the system prompt favour the replica with the most
/// branches), stay for all their turns, overflow its cache and slow it further. Tuned to the
/// fleet (guard at 4 requests) it is still 1.9x, 1.5x and 1.3x behind on p90 and 5 to 10%
/// behind on throughput.
#[test]
fn prefix_aware_beats_round_robin_and_sglang_on_saturated_multi_turn_chat() {
    let fleet = l4_fleet();
    for seed in [1, 2, 3] {
        eprintln!("seed {seed}");
        let w = long_message_chat(seed);
        let [rr, sg, pa] = rr_sglang_prefix_aware_with_users(&fleet, &w, 32);
        let tuned = sglang_tuned_with_users(&fleet, &w, 32);
        let (t_rr, t_pa) = (tput(&rr), tput(&pa));
        assert!(t_pa >= 1.5 * t_rr, "seed {seed}: {t_pa} vs {t_rr}");
        assert!(
            p90(&rr) >= 5.0 * p90(&pa),
            "seed {seed}: {} vs {}",
            p90(&rr),
            p90(&pa)
        );
        assert!(
            p90(&sg) >= 1.3 * p90(&pa),
            "seed {seed}: {} vs {}",
            p90(&sg),
            p90(&pa)
        );
        assert!(t_pa >= tput(&sg), "seed {seed}: {t_pa} vs {}", tput(&sg));
        assert!(
            p90(&pa) <= p90(&tuned),
            "seed {seed}: {} vs {}",
            p90(&pa),
            p90(&tuned)
        );
        assert!(
            t_pa >= 0.98 * tput(&tuned),
            "seed {seed}: {t_pa} vs {}",
            tput(&tuned)
        );
        assert!(pa.summary.prefix_cache_hit_rate > rr.summary.prefix_cache_hit_rate + 0.3);
        assert_no_hotspot(&pa);
    }
}

/// Multi-turn chat in the shape of SGLang's multi-turn cache benchmark (`bench_multiturn`:
/// 512-token user turns, 64-token answers, 5 rounds, no system prompt, each client sending
/// its next turn as soon as the answer ends) with 256 concurrent clients on four H100s,
/// starting 20 a second. Prefill is most of the work, so throughput is capacity: round robin
/// recomputes histories (hit rate 0.30 against an ideal of 0.69) and queues.
/// Measured: prefix_aware 1.72x round robin's output throughput and 6x better p90 TTFT; the
/// SGLang-style baseline, which never moves a session, is 3% ahead on throughput and level
/// on p90 (0.110 s against 0.111 s) here.
#[test]
fn prefix_aware_serves_1_5x_round_robin_throughput_on_saturated_chat() {
    let fleet = FleetConfig::uniform(&profile::h100_llama3_8b(), 4, PolicySpec::default(), 1);
    let w = multi_turn(
        &MultiTurnSpec {
            sessions: 600,
            session_rate: 20.0,
            turns: (5, 5),
            system_tokens: 0,
            user_tokens: Length::Fixed(512),
            output_tokens: Length::Fixed(64),
            think_time_s: 0.0,
            max_context_tokens: 32_000,
        },
        1,
    );
    let [rr, sg, pa] = rr_sglang_prefix_aware_with_users(&fleet, &w, 256);
    let (t_rr, t_sg, t_pa) = (tput(&rr), tput(&sg), tput(&pa));
    assert!(t_pa >= 1.5 * t_rr, "{t_pa} vs {t_rr}");
    assert!(t_pa >= 0.95 * t_sg, "{t_pa} vs {t_sg}");
    assert!(p90(&rr) >= 5.0 * p90(&pa), "{} vs {}", p90(&rr), p90(&pa));
    assert!(p90(&pa) <= 1.1 * p90(&sg), "{} vs {}", p90(&pa), p90(&sg));
    assert!(pa.summary.prefix_cache_hit_rate >= 0.65);
    assert_no_hotspot(&pa);
}

/// The default chat shape (150-token answers, 10 s think time) at the same fixed
/// concurrency: decode dominates every turn, so the prefill prefix_aware saves buys only a
/// few percent of throughput; it must not cost any.
#[test]
fn prefix_aware_does_not_lose_throughput_on_decode_bound_chat() {
    let fleet = l4_fleet();
    let w = multi_turn(
        &MultiTurnSpec {
            sessions: 200,
            think_time_s: 1.0,
            ..MultiTurnSpec::default()
        },
        1,
    );
    let rr = with_users(&fleet, "round_robin", &w, 64);
    let pa = with_users(&fleet, "prefix_aware", &w, 64);
    let (t_rr, t_pa) = (
        rr.summary.output_tokens_per_s,
        pa.summary.output_tokens_per_s,
    );
    assert!(t_pa >= t_rr, "{t_pa} vs {t_rr}");
    assert!(pa.summary.prefix_cache_hit_rate > rr.summary.prefix_cache_hit_rate + 0.2);
    assert_no_hotspot(&pa);
}

/// Agent sessions (`agent_sessions`: a 2,000-token system prompt with tools shared by four
/// agents, 10-30 turns of tool results resent as history, 50-200 token answers, tools running
/// 0.5 s) on four H100s, whose 440k-token caches hold the live sessions once they are split
/// between replicas but not when every replica sees every session, at 192 users: round robin
/// queues (p90 TTFT 0.23 s) and re-prefills histories (hit rate 0.70 against 0.90).
/// Measured: prefix_aware 1.32x round robin's output throughput and 3.1x better p90 TTFT;
/// level with the SGLang-style baseline (p90 0.072 s against 0.070 s, throughput within 1%).
/// Before `copy_weight` charged moving a session's history, 9% of later turns left their
/// cache and p90 was 0.087 s.
#[test]
fn prefix_aware_serves_more_agent_turns_per_second_on_h100s() {
    let fleet = FleetConfig::uniform(&profile::h100_llama3_8b(), 4, PolicySpec::default(), 1);
    let w = agent_sessions(
        &AgentSpec {
            sessions: 400,
            tool_time_s: 0.5,
            ..AgentSpec::default()
        },
        1,
    );
    let [rr, sg, pa] = rr_sglang_prefix_aware_with_users(&fleet, &w, 192);
    let (t_rr, t_sg, t_pa) = (tput(&rr), tput(&sg), tput(&pa));
    assert!(t_pa >= 1.2 * t_rr, "{t_pa} vs {t_rr}");
    assert!(t_pa >= 0.95 * t_sg, "{t_pa} vs {t_sg}");
    assert!(p90(&rr) >= 2.5 * p90(&pa), "{} vs {}", p90(&rr), p90(&pa));
    assert!(p90(&pa) <= 1.1 * p90(&sg), "{} vs {}", p90(&pa), p90(&sg));
    assert!(pa.summary.prefix_cache_hit_rate > rr.summary.prefix_cache_hit_rate + 0.15);
    assert_no_hotspot(&pa);
}
