//! Decision time of the LLM-aware policies with 64 backends and a warm prefix index, and,
//! apart from it, what building a request's profile (parsing and hashing its prompt) costs.
//!
//! `cargo bench -p switchyard-core --bench decide` runs Criterion (mean times) and then a
//! plain timing loop of single decisions that prints p50, p99 and max per policy, since the
//! target (p99 <= 20 us) is a tail figure Criterion does not report.
//!
//! The pool: 64 backends with live load, fresh engine and GPU reports and latency averages.
//! Two request sets, each warmed into the index with 5,000 decisions before timing:
//! - `short`: 32 shared 2,000-token system prompts (8 KiB of text, 125 prefix blocks)
//!   followed by a 50-200 token question; KV capacity 31k tokens (an L4's);
//! - `long_32k`: 32k-token prompts: 8 shared 2,000-token system prompts, one of 32
//!   30,000-token documents, a 50-200 token question; KV capacity 500k tokens (an H100's).
//!
//! Decisions read the block hashes the profile already holds; `profile_32k` times building
//! that profile from a 32k-token chat body (parsing, rendering, hashing), and `hash_32k` the
//! hashing alone.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use switchyard_core::prefix::block_hashes;
use switchyard_core::{
    BackendId, BackendView, EndpointKind, EngineLoad, FleetView, GpuLoad, LatencySignals, Policy,
    PolicySpec, PoolMember, Price, RequestMeta, RequestProfile,
};

const BACKENDS: usize = 64;
const POLICIES: &[&str] = &[
    "least_loaded",
    "peak_ewma",
    "prefix_aware",
    "gpu_aware",
    "cost",
    "composite",
];

/// Deterministic filler text: `tokens` x 4 bytes named by `seed`.
fn text(seed: u64, tokens: usize) -> String {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..tokens * 4)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect()
}

/// The profile of a request with this prompt, built as the simulator builds one.
fn profile(prompt: String) -> RequestProfile {
    RequestProfile {
        kind: EndpointKind::ChatCompletions,
        model: "m".into(),
        model_span: 0..0,
        stream: true,
        include_usage: false,
        user: None,
        session_key: None,
        session_source: None,
        estimated_input_tokens: (prompt.len() / 4) as u32,
        prompt_blocks: block_hashes(&prompt),
        prompt,
        max_output_tokens: Some(200),
    }
}

/// 256 requests: 2,000-token system prompts (one of 32) and a question.
fn short_requests() -> Vec<RequestProfile> {
    let systems: Vec<String> = (0..32).map(|g| text(g + 1, 2000)).collect();
    (0..256u64)
        .map(|i| {
            let question = text(1000 + i, 50 + (i as usize * 37) % 150);
            profile(format!("{}{question}", systems[(i % 32) as usize]))
        })
        .collect()
}

/// 128 requests of about 32k tokens: a system prompt (one of 8), a document (one of 32), a
/// question.
fn long_requests() -> Vec<RequestProfile> {
    let systems: Vec<String> = (0..8).map(|g| text(g + 1, 2000)).collect();
    let documents: Vec<String> = (0..32).map(|d| text(100 + d, 30_000)).collect();
    (0..128u64)
        .map(|i| {
            let question = text(1000 + i, 50 + (i as usize * 37) % 150);
            let (s, d) = ((i % 8) as usize, (i % 32) as usize);
            profile(format!("{}{}{question}", systems[s], documents[d]))
        })
        .collect()
}

fn pool(kv_capacity_tokens: u32) -> (Vec<PoolMember>, Vec<BackendView>) {
    let members = (0..BACKENDS)
        .map(|i| PoolMember {
            name: format!("b{i}"),
            weight: 1,
            price: Some(Price {
                input_per_mtok: 0.1 + (i % 4) as f64 * 0.05,
                output_per_mtok: 0.4,
            }),
            context_window: Some(65_536),
            quality: Some(0.8),
        })
        .collect();
    let views = (0..BACKENDS)
        .map(|i| {
            let load = (i * 7919 % 13) as u32;
            BackendView {
                in_flight: load,
                in_flight_tokens: u64::from(load) * 2300,
                prefill_tokens: u64::from(load % 3) * 2100,
                engine: Some(EngineLoad {
                    running: load,
                    waiting: load % 3,
                    kv_usage: 0.1 + load as f32 / 20.0,
                    kv_capacity_tokens: Some(kv_capacity_tokens),
                    age: Duration::from_millis(200),
                }),
                gpu: Some(GpuLoad {
                    utilization: 0.5 + load as f32 / 30.0,
                    memory_used: 0.9,
                    temperature_c: 60.0 + load as f32,
                    age: Duration::from_millis(300),
                }),
                latency: LatencySignals {
                    latency_s: Some(3.0 + load as f32 * 0.1),
                    ttft_s: Some(0.1 + load as f32 * 0.01),
                    tpot_s: Some(0.02),
                },
                ..BackendView::idle(BackendId(i as u32), 1)
            }
        })
        .collect();
    (members, views)
}

/// One request set on its pool.
struct Case {
    name: &'static str,
    members: Vec<PoolMember>,
    views: Vec<BackendView>,
    requests: Vec<RequestProfile>,
}

fn cases() -> Vec<Case> {
    let (members, views) = pool(31_000);
    let (long_members, long_views) = pool(500_000);
    vec![
        Case {
            name: "short",
            members,
            views,
            requests: short_requests(),
        },
        Case {
            name: "long_32k",
            members: long_members,
            views: long_views,
            requests: long_requests(),
        },
    ]
}

/// A policy with its prefix index warmed by 5,000 decisions.
fn warm(name: &str, case: &Case) -> Box<dyn Policy> {
    let policy = PolicySpec::from_name(name)
        .expect("known policy")
        .build(&case.members, 7);
    let fleet = FleetView::new(&case.views, Duration::from_secs(1));
    for k in 0..5000 {
        let _ = policy.decide(&case.requests[k % case.requests.len()], &fleet);
    }
    policy
}

/// A chat body whose prompt is about 32k tokens.
fn body_32k() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "m",
        "messages": [
            {"role": "system", "content": text(1, 2000)},
            {"role": "user", "content": format!("{}{}", text(2, 30_000), text(3, 100))},
        ],
        "max_tokens": 200,
    }))
    .expect("serializable")
}

fn criterion_benches(c: &mut Criterion, cases: &[Case]) {
    for case in cases {
        let mut group = c.benchmark_group(format!("decide_64_backends_{}", case.name));
        for name in POLICIES {
            let policy = warm(name, case);
            let fleet = FleetView::new(&case.views, Duration::from_secs(1));
            let reqs = &case.requests;
            let mut k = 0usize;
            group.bench_function(BenchmarkId::from_parameter(name), |b| {
                b.iter(|| {
                    k = k.wrapping_add(1);
                    black_box(policy.decide(black_box(&reqs[k % reqs.len()]), &fleet)).ok()
                })
            });
        }
        group.finish();
    }
    let body = body_32k();
    let mut group = c.benchmark_group("profile");
    group.bench_function("profile_32k", |b| {
        b.iter(|| {
            RequestProfile::parse(
                EndpointKind::ChatCompletions,
                black_box(&body),
                RequestMeta::default(),
            )
            .ok()
        })
    });
    let prompt = text(4, 32_000);
    group.bench_function("hash_32k", |b| b.iter(|| block_hashes(black_box(&prompt))));
    group.finish();
}

/// p50, p99 and max of `n` timings of `f`.
fn tail(n: usize, mut f: impl FnMut(usize)) -> (f64, f64, f64) {
    let mut times: Vec<Duration> = (0..n)
        .map(|k| {
            let t = Instant::now();
            f(k);
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    let at = |p: f64| times[((p * n as f64) as usize).min(n - 1)].as_secs_f64() * 1e6;
    (at(0.50), at(0.99), times[n - 1].as_secs_f64() * 1e6)
}

fn print_tail(name: &str, (p50, p99, max): (f64, f64, f64)) {
    println!("  {name:>13}: p50 {p50:>7.2} us  p99 {p99:>7.2} us  max {max:>8.2} us");
}

/// Times `n` single decisions per policy and case, and `n` profiles, and prints p50, p99, max.
fn tail_report(cases: &[Case], n: usize) {
    for case in cases {
        println!(
            "single-decision times, {} requests, 64 backends, warm prefix index, {n} decisions each:",
            case.name
        );
        for name in POLICIES {
            let policy = warm(name, case);
            let fleet = FleetView::new(&case.views, Duration::from_secs(1));
            let reqs = &case.requests;
            print_tail(
                name,
                tail(n, |k| {
                    black_box(policy.decide(black_box(&reqs[k % reqs.len()]), &fleet)).ok();
                }),
            );
        }
    }
    println!("building the profile of a 32k-token chat body (before any decision), {n} each:");
    let body = body_32k();
    print_tail(
        "parse+hash",
        tail(n, |_| {
            black_box(RequestProfile::parse(
                EndpointKind::ChatCompletions,
                black_box(&body),
                RequestMeta::default(),
            ))
            .ok();
        }),
    );
    let prompt = text(4, 32_000);
    print_tail(
        "hash only",
        tail(n, |_| {
            black_box(block_hashes(black_box(&prompt)));
        }),
    );
}

fn main() {
    let cases = cases();
    let benchmarking = std::env::args().any(|a| a == "--bench");
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &cases);
    c.final_summary();
    // Under `cargo test` (no --bench) a short loop checks the code path; the figures come from
    // `cargo bench`.
    tail_report(&cases, if benchmarking { 20_000 } else { 200 });
}
