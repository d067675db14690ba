//! `switchyard bench decisions`: every routing policy against every scenario on the sim
//! crate's virtual-time fleet ([`switchyard_sim::fleet::run_with`]), seeds fixed, and what
//! each policy made of it.
//!
//! The contenders are every name in [`PolicySpec::NAMES`] (so policies added to core appear
//! here without a change) plus [`extra_baselines`]: policies that are not config names, such
//! as an engine's own router re-implemented for comparison. Each `decide` call is timed by a
//! wrapper ([`Timed`]); that wall-clock figure is the only number of a run that is not a pure
//! function of the seeds, and it is kept out of [`Outcome::deterministic_part`].

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use switchyard_core::{
    Decision, FleetView, NoCandidate, Policy, PolicySpec, PoolMember, RequestProfile,
};
use switchyard_sim::fleet::{run_admitted, run_with, Admission, FleetConfig, FleetError};
use switchyard_sim::report::{Outcome as SimOutcome, RunReport};

use crate::scenarios::{self, Scenario, Size, ABUSIVE_TENANT, PRIORITIES};
use crate::stats::{cdf_points, goodput, Goodput, Percentiles};

/// Builds a policy for a pool's members and a seed.
pub type BuildPolicy = Box<dyn Fn(&[PoolMember], u64) -> Box<dyn Policy> + Send + Sync>;

/// A named contender.
pub struct Contender {
    /// The name in the report.
    pub name: String,
    /// How to build it for a scenario's fleet.
    pub build: BuildPolicy,
}

impl std::fmt::Debug for Contender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contender")
            .field("name", &self.name)
            .finish()
    }
}

/// Baselines that are not config names, run beside the core policies: the SGLang router's
/// published cache-aware algorithm, rebuilt in `switchyard_sim::baselines` with its defaults
/// (0.3 match threshold; imbalance beyond 64 requests and 1.5x goes to the least loaded).
pub fn extra_baselines() -> Vec<Contender> {
    vec![Contender {
        name: "sglang_cache_aware".into(),
        build: Box::new(|_, _| {
            Box::new(switchyard_sim::baselines::SglangCacheAware::new(
                switchyard_sim::baselines::SglangConfig::default(),
            ))
        }),
    }]
}

/// Every config-nameable policy with default parameters, then the extra baselines.
pub fn contenders() -> Vec<Contender> {
    let mut out: Vec<Contender> = PolicySpec::NAMES
        .iter()
        .filter_map(|&name| {
            let spec = PolicySpec::from_name(name).ok()?;
            Some(Contender {
                name: name.to_owned(),
                build: Box::new(move |members: &[PoolMember], seed| spec.build(members, seed)),
            })
        })
        .collect();
    out.extend(extra_baselines());
    out
}

/// Times every `decide` call of the policy it wraps.
#[derive(Debug)]
pub struct Timed {
    inner: Box<dyn Policy>,
    nanos: Mutex<Vec<u64>>,
}

/// The fleet owns one handle; the harness keeps another to read the timings.
#[derive(Debug)]
struct TimedHandle(Arc<Timed>);

impl Policy for TimedHandle {
    fn name(&self) -> &'static str {
        self.0.inner.name()
    }

    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<Decision, NoCandidate> {
        let start = Instant::now();
        let d = self.0.inner.decide(request, fleet);
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if let Ok(mut v) = self.0.nanos.lock() {
            v.push(ns);
        }
        d
    }
}

/// How requests that find every backend full are held at the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Mode {
    /// As the scenario defines it: no backend caps, so nothing is held back.
    Off,
    /// Every backend capped at `max_in_flight` (`None`: [`admission::default_cap`]), and the
    /// requests that find all full wait in core's admission queue with default settings.
    Admission {
        /// The per-backend cap, when not the default.
        max_in_flight: Option<u32>,
        /// The gateway's `engine_queue_threshold`: a backend whose last scraped engine queue
        /// holds more than this many waiting requests counts as full.
        queue_threshold: Option<u32>,
        /// A backend whose requests not yet past their first token hold this many prompt
        /// tokens counts as full.
        prefill_tokens: Option<u64>,
        /// Of each backend's cap, requests kept for critical ones.
        critical_reserve: u32,
        /// Pass each request's level to its engine as `priority`, engines scheduling by it.
        engine_priority: bool,
        /// With `prefill_tokens`: each tenant present may hold only its share of the pool's
        /// prefill budget (the gateway's `tenant_prefill_share`, on by default there).
        tenant_share: bool,
    },
}

/// TTFT of one group of requests (a tenant, a priority).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupRow {
    /// The tenant or priority.
    pub group: String,
    /// Requests it sent.
    pub requests: usize,
    /// Requests that completed.
    pub completed: usize,
    /// TTFT percentiles, s.
    pub ttft: Option<Percentiles>,
    /// Goodput under the scenario's SLO.
    pub goodput: Goodput,
    /// Tenants only: its TTFT p99 in this run over its TTFT p99 in the same run without the
    /// abusive tenant: how much the abuser hurts it (1.0 = not at all).
    pub service_gap: Option<f64>,
}

/// One policy on one scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    /// The scenario.
    pub workload: String,
    /// The policy, with ` +admission` when it ran behind the admission stage.
    pub policy: String,
    /// Whether and how the admission stage ran.
    pub mode: Mode,
    /// The per-backend cap in force with admission, else `None`.
    pub max_in_flight: Option<u32>,
    /// Requests offered.
    pub requests: usize,
    /// Requests completed.
    pub completed: usize,
    /// Requests no backend took (errors, rejections).
    pub rejected: usize,
    /// Requests still running when the run ended.
    pub unfinished: usize,
    /// TTFT percentiles, s.
    pub ttft: Option<Percentiles>,
    /// End-to-end latency percentiles, s.
    pub e2e: Option<Percentiles>,
    /// Output tokens per second over the run.
    pub output_tokens_per_s: f64,
    /// Prefix-cache hit rate (tokens), over all replicas.
    pub prefix_cache_hit_rate: f64,
    /// Goodput under the scenario's TTFT SLO.
    pub goodput: Goodput,
    /// Time-weighted mean of max/mean in-flight across backends (1.0 = even).
    pub load_ratio_mean: f64,
    /// Largest max/mean in-flight ratio seen.
    pub load_ratio_max: f64,
    /// Requests per backend, in fleet order.
    pub requests_per_backend: Vec<u64>,
    /// Per tenant, for scenarios with tenants.
    pub tenants: Vec<GroupRow>,
    /// Per priority, for scenarios with priorities.
    pub priorities: Vec<GroupRow>,
    /// TTFT CDF points (s, share) for the plot.
    pub ttft_cdf: Vec<(f64, f64)>,
    /// Mean wall time of one `decide` call, µs: machine-dependent, not part of the
    /// determinism check.
    pub decision_us_mean: f64,
    /// 99th percentile of the same, µs.
    pub decision_us_p99: f64,
}

impl Outcome {
    /// Everything but the wall-clock decision times: what must be equal for equal seeds.
    pub fn deterministic_part(&self) -> Outcome {
        Outcome {
            decision_us_mean: 0.0,
            decision_us_p99: 0.0,
            ..self.clone()
        }
    }
}

/// A harness error.
#[derive(Debug, thiserror::Error)]
pub enum DecisionsError {
    /// The fleet refused the run.
    #[error("{workload} / {policy}: {source}")]
    Fleet {
        /// The scenario.
        workload: String,
        /// The policy.
        policy: String,
        /// Why.
        source: FleetError,
    },
    /// An unknown scenario name.
    #[error(transparent)]
    Scenario(#[from] scenarios::UnknownScenario),
}

fn fleet_config(sc: &Scenario, seed: u64) -> FleetConfig {
    FleetConfig {
        backends: sc.backends.clone(),
        policy: PolicySpec::default(),
        metrics_interval_s: 0.5,
        seed,
        model: "llama-3-8b".into(),
    }
}

fn members(sc: &Scenario) -> Vec<PoolMember> {
    sc.backends
        .iter()
        .map(|b| PoolMember {
            name: b.name.clone(),
            weight: b.weight.max(1),
            ..Default::default()
        })
        .collect()
}

/// Runs one contender on one scenario; returns the fleet's report and the decide timings (ns).
fn play(
    sc: &Scenario,
    c: &Contender,
    seed: u64,
    mode: Mode,
) -> Result<(RunReport, Vec<u64>), DecisionsError> {
    let timed = Arc::new(Timed {
        inner: (c.build)(&members(sc), seed),
        nanos: Mutex::new(Vec::with_capacity(sc.workload.len())),
    });
    let policy = Box::new(TimedHandle(timed.clone()));
    let report = match mode {
        Mode::Off => run_with(&fleet_config(sc, seed), &sc.workload, policy),
        Mode::Admission {
            max_in_flight,
            queue_threshold,
            prefill_tokens,
            critical_reserve,
            engine_priority,
            tenant_share,
        } => {
            let (config, gate): (FleetConfig, Admission) = admission::setup(
                sc,
                fleet_config(sc, seed),
                max_in_flight,
                (
                    queue_threshold,
                    prefill_tokens,
                    critical_reserve,
                    engine_priority,
                    tenant_share,
                ),
            );
            run_admitted(&config, &sc.workload, policy, &gate)
        }
    }
    .map_err(|source| DecisionsError::Fleet {
        workload: sc.name.into(),
        policy: c.name.clone(),
        source,
    })?;
    let nanos = timed.nanos.lock().map(|v| v.clone()).unwrap_or_default();
    Ok((report, nanos))
}

fn group_row(
    group: String,
    idx: &[usize],
    report: &RunReport,
    slo: f64,
    duration: f64,
) -> GroupRow {
    let recs: Vec<_> = idx.iter().filter_map(|&i| report.requests.get(i)).collect();
    let ttfts: Vec<Option<f64>> = recs
        .iter()
        .map(|r| {
            (r.outcome == SimOutcome::Completed)
                .then_some(r.ttft)
                .flatten()
        })
        .collect();
    let flat: Vec<f64> = ttfts.iter().flatten().copied().collect();
    GroupRow {
        group,
        requests: recs.len(),
        completed: recs
            .iter()
            .filter(|r| r.outcome == SimOutcome::Completed)
            .count(),
        ttft: Percentiles::of(&flat),
        goodput: goodput(&ttfts, slo, duration),
        service_gap: None,
    }
}

/// Groups request indices by a key, keys in first-seen order unless `order` is given.
fn groups(keys: &[Option<String>], order: Option<&[&str]>) -> Vec<(String, Vec<usize>)> {
    let mut out: Vec<(String, Vec<usize>)> = order
        .map(|o| o.iter().map(|k| ((*k).to_owned(), Vec::new())).collect())
        .unwrap_or_default();
    for (i, k) in keys.iter().enumerate() {
        let Some(k) = k else { continue };
        match out.iter_mut().find(|(g, _)| g == k) {
            Some((_, v)) => v.push(i),
            None => out.push((k.clone(), vec![i])),
        }
    }
    out.sort_by(|a, b| {
        if order.is_some() {
            std::cmp::Ordering::Equal
        } else {
            a.0.cmp(&b.0)
        }
    });
    out
}

/// Plays contender `c` on scenario `sc` and computes its row.
pub fn evaluate(
    sc: &Scenario,
    c: &Contender,
    seed: u64,
    mode: Mode,
) -> Result<Outcome, DecisionsError> {
    let (report, nanos) = play(sc, c, seed, mode)?;
    let s = &report.summary;
    let ttfts: Vec<Option<f64>> = report
        .requests
        .iter()
        .map(|r| {
            (r.outcome == SimOutcome::Completed)
                .then_some(r.ttft)
                .flatten()
        })
        .collect();
    let flat: Vec<f64> = ttfts.iter().flatten().copied().collect();
    let e2e: Vec<f64> = report
        .requests
        .iter()
        .filter(|r| r.outcome == SimOutcome::Completed)
        .filter_map(|r| r.e2e)
        .collect();
    let ns: Vec<f64> = nanos.iter().map(|&n| n as f64 / 1000.0).collect();
    let dec = Percentiles::of(&ns);
    let tenant_keys: Vec<Option<String>> = sc.tags.iter().map(|t| t.tenant.clone()).collect();
    let prio_keys: Vec<Option<String>> = sc
        .tags
        .iter()
        .map(|t| t.priority.map(str::to_owned))
        .collect();
    let mut tenants: Vec<GroupRow> = groups(&tenant_keys, None)
        .into_iter()
        .map(|(g, idx)| group_row(g, &idx, &report, sc.slo_ttft_s, s.duration_s))
        .collect();
    if !tenants.is_empty() && sc.name == "tenants" {
        service_gaps(sc, c, seed, mode, &mut tenants)?;
    }
    let priorities = groups(&prio_keys, Some(&PRIORITIES))
        .into_iter()
        .filter(|(_, idx)| !idx.is_empty())
        .map(|(g, idx)| group_row(g, &idx, &report, sc.slo_ttft_s, s.duration_s))
        .collect();
    let (policy, max_in_flight) = match mode {
        Mode::Off => (c.name.clone(), None),
        Mode::Admission { max_in_flight, .. } => (
            format!("{} +admission", c.name),
            Some(max_in_flight.unwrap_or_else(|| admission::default_cap(sc))),
        ),
    };
    Ok(Outcome {
        workload: sc.name.into(),
        policy,
        mode,
        max_in_flight,
        requests: s.requests,
        completed: s.completed,
        rejected: s.rejected,
        unfinished: s.requests - s.completed - s.rejected,
        ttft: Percentiles::of(&flat),
        e2e: Percentiles::of(&e2e),
        output_tokens_per_s: s.output_tokens_per_s,
        prefix_cache_hit_rate: s.prefix_cache_hit_rate,
        goodput: goodput(&ttfts, sc.slo_ttft_s, s.duration_s),
        load_ratio_mean: s.in_flight_imbalance_mean,
        load_ratio_max: s.in_flight_imbalance_max,
        requests_per_backend: s.requests_per_backend.clone(),
        tenants,
        priorities,
        ttft_cdf: cdf_points(&flat, 80),
        decision_us_mean: dec.map_or(0.0, |d| d.mean),
        decision_us_p99: dec.map_or(0.0, |d| d.p99),
    })
}

/// Fills each steady tenant's service gap: its TTFT p99 here over its TTFT p99 in the same
/// scenario without the abusive tenant (same policy, same seed, same admission mode).
fn service_gaps(
    sc: &Scenario,
    c: &Contender,
    seed: u64,
    mode: Mode,
    rows: &mut [GroupRow],
) -> Result<(), DecisionsError> {
    // The steady tenants' requests do not depend on the abuser's: drop the abuser's.
    let (requests, tags) = sc
        .workload
        .requests
        .iter()
        .zip(&sc.tags)
        .filter(|(_, t)| t.tenant.as_deref() != Some(ABUSIVE_TENANT))
        .map(|(r, t)| (r.clone(), t.clone()))
        .unzip();
    let calm = Scenario {
        workload: switchyard_sim::Workload { requests },
        tags,
        ..sc.clone()
    };
    let (report, _) = play(&calm, c, seed, mode)?;
    let keys: Vec<Option<String>> = calm.tags.iter().map(|t| t.tenant.clone()).collect();
    for (g, idx) in groups(&keys, None) {
        let base = group_row(g.clone(), &idx, &report, sc.slo_ttft_s, 1.0);
        if let Some(row) = rows.iter_mut().find(|r| r.group == g) {
            row.service_gap = match (row.ttft, base.ttft) {
                (Some(a), Some(b)) => crate::stats::ratio(a.p99, b.p99),
                _ => None,
            };
        }
    }
    Ok(())
}

/// Runs every contender on every named scenario in every mode, calling `on_step(label)`
/// before each run.
pub fn run_all(
    names: &[&str],
    size: Size,
    seed: u64,
    load: f64,
    contenders: &[Contender],
    modes: &[Mode],
    mut on_step: impl FnMut(&str),
) -> Result<Vec<Outcome>, DecisionsError> {
    let mut out = Vec::new();
    for name in names {
        let sc = scenarios::build(name, size, seed)?.at_load(load);
        for c in contenders {
            for &mode in modes {
                let tail = if mode == Mode::Off { "" } else { " +admission" };
                on_step(&format!("{name} / {}{tail}", c.name));
                out.push(evaluate(&sc, c, seed, mode)?);
            }
        }
    }
    Ok(out)
}

#[path = "decisions_admission.rs"]
pub mod admission;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_core_policy_is_a_contender() {
        let names: Vec<String> = contenders().into_iter().map(|c| c.name).collect();
        for n in PolicySpec::NAMES {
            assert!(names.iter().any(|c| c == n), "{n} missing");
        }
    }

    #[test]
    fn groups_keep_the_given_order_and_skip_untagged_requests() {
        let keys = vec![
            Some("batch".to_owned()),
            None,
            Some("critical".to_owned()),
            Some("batch".to_owned()),
        ];
        let g = groups(&keys, Some(&PRIORITIES));
        assert_eq!(g[0], ("critical".into(), vec![2]));
        assert_eq!(g[1], ("standard".into(), vec![]));
        assert_eq!(g[2], ("batch".into(), vec![0, 3]));
        let t = groups(&[Some("b".into()), Some("a".into())], None);
        assert_eq!(t[0].0, "a");
    }

    #[test]
    fn a_quick_run_is_the_same_twice_except_decision_time() {
        let c: Vec<Contender> = contenders()
            .into_iter()
            .filter(|c| c.name == "round_robin" || c.name == "consistent_hash")
            .collect();
        let a = run_all(
            &["tenants", "priority"],
            Size::Quick,
            5,
            1.0,
            &c,
            &[Mode::Off],
            |_| {},
        )
        .unwrap();
        let b = run_all(
            &["tenants", "priority"],
            Size::Quick,
            5,
            1.0,
            &c,
            &[Mode::Off],
            |_| {},
        )
        .unwrap();
        assert_eq!(a.len(), 4);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.deterministic_part(), y.deterministic_part());
        }
        let t = &a[0];
        assert_eq!(t.tenants.len(), 6);
        assert!(t.tenants.iter().any(|r| r.service_gap.is_some()));
        assert_eq!(a[2].priorities.len(), 3);
        assert!(a
            .iter()
            .all(|o| o.completed + o.rejected + o.unfinished == o.requests));
        assert!(a.iter().all(|o| o.decision_us_mean > 0.0));
    }
}
