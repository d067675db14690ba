use super::*;
use crate::profile;
use crate::workload::{
    multi_turn, shared_prefix, sharegpt_like, MultiTurnSpec, Prompt, ShareGptSpec, SharedPrefixSpec,
};

#[test]
fn ten_thousand_requests_through_round_robin_quickly_and_reproducibly() {
    let workload = sharegpt_like(
        &ShareGptSpec {
            requests: 10_000,
            rate: 40.0,
            ..ShareGptSpec::default()
        },
        42,
    );
    let config = FleetConfig::uniform(&profile::h100_llama3_8b(), 4, PolicySpec::RoundRobin, 7);
    let a = run(&config, &workload).unwrap();
    let s = &a.summary;
    assert_eq!(s.completed, 10_000);
    assert_eq!(s.requests_per_backend, [2500; 4]);
    assert!(s.ttft_p50.unwrap() < s.ttft_p99.unwrap());
    assert!(s.ttft_p50.unwrap() < 0.5, "{s:?}");
    assert!(s.output_tokens_per_s > 0.0);
    assert!(s.in_flight_imbalance_mean >= 1.0);
    assert!(s.in_flight_imbalance_max >= s.in_flight_imbalance_mean);
    let b = run(&config, &workload).unwrap();
    assert!(a == b, "same inputs, same report");
}

#[test]
fn same_seed_same_report_other_seed_another() {
    let spec = SharedPrefixSpec {
        requests: 400,
        rate: 30.0,
        ..SharedPrefixSpec::default()
    };
    let config =
        |seed| FleetConfig::uniform(&profile::a100_llama3_8b(), 3, PolicySpec::PowerOfTwo, seed);
    let w = shared_prefix(&spec, 1);
    let a = run(&config(1), &w).unwrap();
    assert_eq!(a, run(&config(1), &w).unwrap());
    assert_ne!(a.requests, run(&config(2), &w).unwrap().requests);
    assert_ne!(
        a.requests,
        run(&config(1), &shared_prefix(&spec, 2)).unwrap().requests
    );
    assert!(a.summary.prefix_cache_hit_rate > 0.5, "{:?}", a.summary);
    // The report serializes for the bench crate.
    let json = serde_json::to_string(&a).unwrap();
    assert!(json.contains("\"policy\":\"power_of_two\""));
}

#[test]
fn session_affinity_raises_the_prefix_hit_rate_of_multi_turn_chat() {
    let w = multi_turn(
        &MultiTurnSpec {
            sessions: 120,
            session_rate: 4.0,
            think_time_s: 3.0,
            ..MultiTurnSpec::default()
        },
        3,
    );
    let p = profile::h100_llama3_8b();
    let rr = run(&FleetConfig::uniform(&p, 4, PolicySpec::RoundRobin, 1), &w).unwrap();
    let ch = run(
        &FleetConfig::uniform(&p, 4, PolicySpec::from_name("consistent_hash").unwrap(), 1),
        &w,
    )
    .unwrap();
    let (rr, ch) = (&rr.summary, &ch.summary);
    assert!(
        ch.prefix_cache_hit_rate > rr.prefix_cache_hit_rate + 0.15,
        "affinity {} vs round robin {}",
        ch.prefix_cache_hit_rate,
        rr.prefix_cache_hit_rate
    );
    assert!(ch.ttft_p50.unwrap() < rr.ttft_p50.unwrap());
}

#[test]
fn heterogeneous_fleet_least_connections_favours_the_fast_backend() {
    let mut config = FleetConfig::uniform(
        &profile::h100_llama3_8b(),
        1,
        PolicySpec::LeastConnections,
        1,
    );
    let slow = profile::l4_llama3_8b();
    config.backends.push(BackendSpec {
        name: "l4-0".into(),
        weight: 1,
        engine: slow.engine_config(),
        max_in_flight: None,
        max_waiting: None,
    });
    let w = sharegpt_like(
        &ShareGptSpec {
            requests: 600,
            rate: 8.0,
            ..ShareGptSpec::default()
        },
        5,
    );
    let r = run(&config, &w).unwrap();
    let per = &r.summary.requests_per_backend;
    assert!(per[0] > 2 * per[1], "{per:?}");
    assert_eq!(r.backends[1].profile, "l4-llama3-8b");
    assert!(r.backends[0].busy_fraction > 0.0);
}

#[test]
fn capped_backends_queue_at_the_gateway_and_too_long_requests_are_rejected() {
    let mut config = FleetConfig::uniform(
        &profile::h100_llama3_8b(),
        2,
        PolicySpec::LeastConnections,
        1,
    );
    for b in &mut config.backends {
        b.max_in_flight = Some(4);
    }
    let mut w = sharegpt_like(
        &ShareGptSpec {
            requests: 200,
            rate: 200.0,
            ..ShareGptSpec::default()
        },
        8,
    );
    w.requests[10].prompt = Prompt::Text("x".repeat(40_000));
    let r = run(&config, &w).unwrap();
    assert_eq!(r.requests[10].outcome, Outcome::Rejected);
    assert_eq!(r.summary.completed, 199);
    assert!(r
        .requests
        .iter()
        .any(|q| q.dispatched.is_some_and(|d| d > q.arrival)));
}

#[test]
fn bad_fleets_are_refused() {
    let w = Workload::default();
    let mut c = FleetConfig::uniform(&profile::h100_llama3_8b(), 0, PolicySpec::RoundRobin, 1);
    assert_eq!(run(&c, &w), Err(FleetError::NoBackends));
    c = FleetConfig::uniform(&profile::h100_llama3_8b(), 1, PolicySpec::RoundRobin, 1);
    c.metrics_interval_s = 0.0;
    assert_eq!(run(&c, &w), Err(FleetError::BadInterval));
    c.metrics_interval_s = 1.0;
    c.backends[0].engine.num_gpu_blocks = 1;
    assert!(matches!(run(&c, &w), Err(FleetError::Engine { .. })));
    let empty = FleetConfig::uniform(&profile::h100_llama3_8b(), 1, PolicySpec::RoundRobin, 1);
    assert_eq!(run(&empty, &w).unwrap().summary.completed, 0);
    let mut unsorted = sharegpt_like(&ShareGptSpec::default(), 1);
    unsorted.requests.swap(3, 4);
    assert_eq!(run(&empty, &unsorted), Err(FleetError::BadArrival(4)));
}

/// A policy that records what engine reports it is shown, then defers to round robin.
#[derive(Debug, Default)]
struct Probe {
    inner: switchyard_core::routing::RoundRobin,
    ages: std::sync::Mutex<Vec<Duration>>,
    saw_load: std::sync::atomic::AtomicBool,
}

/// The handle the fleet owns; the test keeps another to read what the probe saw.
#[derive(Debug)]
struct ProbeHandle(std::sync::Arc<Probe>);

impl Policy for ProbeHandle {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<switchyard_core::Decision, switchyard_core::NoCandidate> {
        for b in fleet.backends {
            let e = b.engine.expect("the fleet fills engine reports");
            self.0.ages.lock().unwrap().push(e.age);
            if e.running > 0 || e.kv_usage > 0.0 {
                self.0
                    .saw_load
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.0.inner.decide(request, fleet)
    }
}

#[test]
fn policies_see_engine_reports_no_older_than_the_scrape_interval() {
    let workload = sharegpt_like(
        &ShareGptSpec {
            requests: 300,
            rate: 40.0,
            ..ShareGptSpec::default()
        },
        3,
    );
    let mut config = FleetConfig::uniform(&profile::l4_llama3_8b(), 2, PolicySpec::RoundRobin, 1);
    config.metrics_interval_s = 0.25;
    let probe = std::sync::Arc::new(Probe::default());
    let report = run_with(&config, &workload, Box::new(ProbeHandle(probe.clone()))).unwrap();
    assert_eq!(report.summary.completed, 300);
    let ages = probe.ages.lock().unwrap();
    assert_eq!(ages.len(), 600, "two backends per decision");
    let max = ages.iter().max().unwrap();
    assert!(
        *max <= Duration::from_secs_f64(0.25 + 1e-9),
        "report older than the interval: {max:?}"
    );
    assert!(
        ages.iter().any(|a| *a > Duration::from_millis(50)),
        "reports are lagged, not live"
    );
    assert!(
        probe.saw_load.load(std::sync::atomic::Ordering::Relaxed),
        "reports carry load"
    );
}
