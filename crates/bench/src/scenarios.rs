//! The named workloads of `switchyard bench decisions` and `switchyard bench trace`: a fleet,
//! a seeded workload, per-request tags (tenant, priority) and the TTFT SLO goodput is counted
//! against.
//!
//! | name | fleet | what it asks of a policy |
//! |---|---|---|
//! | `shared_prefix` | 4 x L4 | many users behind 16 prefixes of 2,000 tokens whose KV (32k tokens) exceeds one L4's cache (~31k): locality decides hit rate |
//! | `multi_turn` | 4 x L4 | chat sessions resending their growing history: session affinity |
//! | `agent` | 4 x H100 | tool-using agent sessions: a long shared system prompt, the history of tool results resent every turn, short answers |
//! | `low_sharing` | 4 x L4 | ShareGPT-like independent prompts: the control no policy may regress on |
//! | `heterogeneous` | 2 x H100 (weight 3) + 2 x L4 (weight 1) | fast and slow replicas: load balance by capacity |
//! | `tenants` | 4 x L4 | five steady tenants and one abusive tenant sending bursts of long prompts: per-tenant service gap |
//! | `priority` | 2 x L4 | a critical / standard / batch mix offered above capacity: per-priority TTFT |
//!
//! The shapes come from the sim crate's generators (`switchyard_sim::workload`); the tenant
//! and priority mixes are built here from them, so the sim crate's file is not touched. Every
//! scenario is a pure function of its name, size and seed.

use switchyard_core::rng::SplitMix;
use switchyard_sim::workload::{
    agent_sessions, multi_turn, shared_prefix, sharegpt_like, AgentSpec, Length, MultiTurnSpec,
    ShareGptSpec, SharedPrefixSpec, Workload, WorkloadRequest,
};
use switchyard_sim::{profile, BackendSpec, Profile};

/// Every scenario name, in report order.
pub const NAMES: &[&str] = &[
    "shared_prefix",
    "multi_turn",
    "agent",
    "low_sharing",
    "heterogeneous",
    "tenants",
    "priority",
];

/// Priority labels, most important first.
pub const PRIORITIES: [&str; 3] = ["critical", "standard", "batch"];

/// The tenant whose traffic is abusive in the `tenants` scenario.
pub const ABUSIVE_TENANT: &str = "tenant-x";

/// Who sent a request and how important it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tag {
    /// Tenant name, if the scenario has tenants.
    pub tenant: Option<String>,
    /// Priority label, if the scenario has priorities.
    pub priority: Option<&'static str>,
}

/// A fleet, a workload and what the report breaks it down by.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name (one of [`NAMES`]).
    pub name: &'static str,
    /// The simulated backends, in pool order.
    pub backends: Vec<BackendSpec>,
    /// The requests, sorted by arrival.
    pub workload: Workload,
    /// One tag per request, in workload order.
    pub tags: Vec<Tag>,
    /// Goodput counts requests whose TTFT is at most this, seconds.
    pub slo_ttft_s: f64,
}

impl Scenario {
    /// The same scenario offered `load` times as fast (arrival times divided by `load`): 2.0
    /// doubles the request rate. Non-positive or non-finite values leave it unchanged.
    pub fn at_load(mut self, load: f64) -> Scenario {
        if load.is_finite() && load > 0.0 && load != 1.0 {
            for r in &mut self.workload.requests {
                r.arrival /= load;
            }
        }
        self
    }
}

/// How big to make a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// The full benchmark (minutes for all scenarios and policies in release).
    Full,
    /// A few percent of it, for smoke runs and tests.
    Quick,
}

/// A scenario error: an unknown name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workload '{0}'; known: shared_prefix, multi_turn, agent, low_sharing, heterogeneous, tenants, priority")]
pub struct UnknownScenario(pub String);

fn backends(list: &[(Profile, u32, usize)]) -> Vec<BackendSpec> {
    let mut out = Vec::new();
    for (p, weight, count) in list {
        for _ in 0..*count {
            out.push(BackendSpec {
                name: format!("{}-{}", p.name, out.len()),
                weight: *weight,
                engine: p.engine_config(),
                max_in_flight: None,
                max_waiting: None,
                max_prefill_tokens: None,
            });
        }
    }
    out
}

/// Requests and tags sorted together by arrival (stable).
fn sorted(mut v: Vec<(WorkloadRequest, Tag)>) -> (Workload, Vec<Tag>) {
    v.sort_by(|a, b| a.0.arrival.total_cmp(&b.0.arrival));
    let (requests, tags) = v.into_iter().unzip();
    (Workload { requests }, tags)
}

fn untagged(w: Workload) -> (Workload, Vec<Tag>) {
    let n = w.len();
    (w, vec![Tag::default(); n])
}

/// Builds scenario `name` at `size` from `seed`.
pub fn build(name: &str, size: Size, seed: u64) -> Result<Scenario, UnknownScenario> {
    let scale = |full: usize| match size {
        Size::Full => full,
        Size::Quick => (full / 25).max(20),
    };
    let l4 = profile::l4_llama3_8b();
    let (name, backends, (workload, tags), slo) = match name {
        "shared_prefix" => (
            "shared_prefix",
            backends(&[(l4, 1, 4)]),
            untagged(shared_prefix(
                &SharedPrefixSpec {
                    requests: scale(4000),
                    rate: 5.0,
                    groups: 16,
                    prefix_tokens: 2000,
                    users_per_group: 8,
                    ..SharedPrefixSpec::default()
                },
                seed,
            )),
            2.0,
        ),
        "multi_turn" => (
            "multi_turn",
            backends(&[(l4, 1, 4)]),
            untagged(multi_turn(
                &MultiTurnSpec {
                    sessions: scale(1000),
                    session_rate: 1.1,
                    think_time_s: 6.0,
                    system_tokens: 500,
                    ..MultiTurnSpec::default()
                },
                seed,
            )),
            2.0,
        ),
        "agent" => (
            "agent",
            backends(&[(profile::h100_llama3_8b(), 1, 4)]),
            untagged(agent_sessions(
                &AgentSpec {
                    sessions: scale(1000),
                    session_rate: 1.5,
                    tool_time_s: 0.5,
                    ..AgentSpec::default()
                },
                seed,
            )),
            2.0,
        ),
        "low_sharing" => (
            "low_sharing",
            backends(&[(l4, 1, 4)]),
            untagged(sharegpt_like(
                &ShareGptSpec {
                    requests: scale(4000),
                    rate: 8.0,
                    ..ShareGptSpec::default()
                },
                seed,
            )),
            2.0,
        ),
        "heterogeneous" => (
            "heterogeneous",
            backends(&[(profile::h100_llama3_8b(), 3, 2), (l4, 1, 2)]),
            untagged(sharegpt_like(
                &ShareGptSpec {
                    requests: scale(8000),
                    rate: 20.0,
                    ..ShareGptSpec::default()
                },
                seed,
            )),
            2.0,
        ),
        "tenants" => (
            "tenants",
            backends(&[(l4, 1, 4)]),
            tenants(scale(3000), seed, true),
            2.0,
        ),
        "priority" => (
            "priority",
            backends(&[(l4, 1, 2)]),
            priorities(scale(2000), seed),
            5.0,
        ),
        other => return Err(UnknownScenario(other.to_owned())),
    };
    Ok(Scenario {
        name,
        backends,
        workload,
        tags,
        slo_ttft_s: slo,
    })
}

/// Requests in one burst of the abusive tenant.
const BURST: usize = 40;
/// Seconds between the abusive tenant's bursts.
const BURST_EVERY_S: f64 = 30.0;

/// Five steady tenants (ShareGPT-like, 0.6 requests/s each: 3/4 of `requests`) and, with
/// `abusive`, a sixth (1/6 of `requests`) that sends bursts: every 30 s, 40 requests within
/// 2 s, with prompts of 500-1500 tokens.
pub fn tenants(requests: usize, seed: u64, abusive: bool) -> (Workload, Vec<Tag>) {
    let steady = 5;
    let per = requests * 3 / 4 / steady;
    let mut all = Vec::new();
    for t in 0..steady {
        let w = sharegpt_like(
            &ShareGptSpec {
                requests: per.max(1),
                rate: 0.6,
                ..ShareGptSpec::default()
            },
            seed.wrapping_add(1 + t as u64),
        );
        let tag = Tag {
            tenant: Some(format!("tenant-{}", t + 1)),
            priority: None,
        };
        all.extend(w.requests.into_iter().map(|r| (r, tag.clone())));
    }
    let span = all.iter().map(|(r, _)| r.arrival).fold(0.0, f64::max);
    if abusive {
        let rng = SplitMix::new(seed ^ 0xab05);
        let burst = sharegpt_like(
            &ShareGptSpec {
                requests: (requests / 6).max(1),
                rate: 30.0,
                prompt_tokens: Length::Uniform {
                    min: 500,
                    max: 1500,
                },
                ..ShareGptSpec::default()
            },
            seed ^ 0xabcd,
        );
        let tag = Tag {
            tenant: Some(ABUSIVE_TENANT.into()),
            priority: None,
        };
        let bursts = (span / BURST_EVERY_S).floor().max(1.0) as usize;
        for (i, mut r) in burst.requests.into_iter().enumerate() {
            let b = (i / BURST) % bursts;
            let jitter = (rng.below(2000) as f64) / 1000.0;
            r.arrival = 5.0 + b as f64 * BURST_EVERY_S + jitter;
            all.push((r, tag.clone()));
        }
    }
    sorted(all)
}

/// A mix offered above two L4s' capacity: 20 % critical, 30 % standard, 50 % batch,
/// arriving at 6.5 requests/s.
pub fn priorities(requests: usize, seed: u64) -> (Workload, Vec<Tag>) {
    let w = sharegpt_like(
        &ShareGptSpec {
            requests,
            rate: 6.5,
            ..ShareGptSpec::default()
        },
        seed,
    );
    let rng = SplitMix::new(seed ^ 0x7072_696f);
    let tagged = w
        .requests
        .into_iter()
        .map(|r| {
            let roll = rng.below(10);
            let p = match roll {
                0..=1 => PRIORITIES[0],
                2..=4 => PRIORITIES[1],
                _ => PRIORITIES[2],
            };
            (
                r,
                Tag {
                    tenant: None,
                    priority: Some(p),
                },
            )
        })
        .collect();
    sorted(tagged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scenario_builds_sorted_tagged_and_reproducible() {
        for name in NAMES {
            let a = build(name, Size::Quick, 3).unwrap();
            assert_eq!(a.workload.len(), a.tags.len(), "{name}");
            assert!(!a.workload.is_empty(), "{name}");
            assert!(a
                .workload
                .requests
                .windows(2)
                .all(|w| w[0].arrival <= w[1].arrival));
            let b = build(name, Size::Quick, 3).unwrap();
            assert_eq!(a.workload, b.workload, "{name}");
            assert_eq!(a.tags, b.tags, "{name}");
        }
        assert_eq!(
            build("nope", Size::Quick, 1).unwrap_err().to_string(),
            "unknown workload 'nope'; known: shared_prefix, multi_turn, agent, low_sharing, heterogeneous, tenants, priority"
        );
    }

    #[test]
    fn load_scales_arrival_rates() {
        let a = build("low_sharing", Size::Quick, 1).unwrap();
        let last = a.workload.requests.last().unwrap().arrival;
        let b = a.clone().at_load(2.0);
        assert!((b.workload.requests.last().unwrap().arrival - last / 2.0).abs() < 1e-9);
        let c = a.clone().at_load(-1.0);
        assert_eq!(c.workload, a.workload);
    }

    #[test]
    fn tenants_scenario_has_an_abusive_tenant_only_when_asked() {
        let (w, tags) = tenants(200, 1, true);
        let abusive = tags
            .iter()
            .filter(|t| t.tenant.as_deref() == Some(ABUSIVE_TENANT))
            .count();
        assert_eq!(abusive, 33);
        let (w2, tags2) = tenants(200, 1, false);
        assert!(tags2
            .iter()
            .all(|t| t.tenant.as_deref() != Some(ABUSIVE_TENANT)));
        assert_eq!(w2.len() + abusive, w.len());
    }

    #[test]
    fn priority_mix_has_all_three_classes() {
        let (_, tags) = priorities(300, 2);
        for p in PRIORITIES {
            let n = tags.iter().filter(|t| t.priority == Some(p)).count();
            assert!(n > 30, "{p}: {n}");
        }
    }
}
