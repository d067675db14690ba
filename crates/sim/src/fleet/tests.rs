use super::*;
use crate::profile;
use crate::workload::{
    multi_turn, shared_prefix, sharegpt_like, MultiTurnSpec, Prompt, ShareGptSpec, SharedPrefixSpec,
};
use switchyard_core::PolicySpec;

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
    let config = FleetConfig::uniform(&profile::h100_llama3_8b(), 4, PolicySpec::default(), 7);
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
    let config = |seed| {
        FleetConfig::uniform(
            &profile::a100_llama3_8b(),
            3,
            PolicySpec::from_name("power_of_two").unwrap(),
            seed,
        )
    };
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
    let rr = run(&FleetConfig::uniform(&p, 4, PolicySpec::default(), 1), &w).unwrap();
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
        PolicySpec::from_name("least_connections").unwrap(),
        1,
    );
    let slow = profile::l4_llama3_8b();
    config.backends.push(BackendSpec {
        name: "l4-0".into(),
        weight: 1,
        engine: slow.engine_config(),
        max_in_flight: None,
        max_waiting: None,
        max_prefill_tokens: None,
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
        PolicySpec::from_name("least_connections").unwrap(),
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
    let mut c = FleetConfig::uniform(&profile::h100_llama3_8b(), 0, PolicySpec::default(), 1);
    assert_eq!(run(&c, &w), Err(FleetError::NoBackends));
    c = FleetConfig::uniform(&profile::h100_llama3_8b(), 1, PolicySpec::default(), 1);
    c.metrics_interval_s = 0.0;
    assert_eq!(run(&c, &w), Err(FleetError::BadInterval));
    c.metrics_interval_s = 1.0;
    c.backends[0].engine.num_gpu_blocks = 1;
    assert!(matches!(run(&c, &w), Err(FleetError::Engine { .. })));
    let empty = FleetConfig::uniform(&profile::h100_llama3_8b(), 1, PolicySpec::default(), 1);
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
    let mut config = FleetConfig::uniform(&profile::l4_llama3_8b(), 2, PolicySpec::default(), 1);
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

/// Every view a policy was shown, with its time.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(f64, Vec<BackendView>)>>>;

/// A policy that routes round robin and keeps every view it was shown.
#[derive(Debug, Default)]
struct ViewRecorder {
    inner: switchyard_core::routing::RoundRobin,
    seen: Seen,
}

impl Policy for ViewRecorder {
    fn name(&self) -> &'static str {
        "view_recorder"
    }

    fn decide(
        &self,
        request: &RequestProfile,
        fleet: &FleetView<'_>,
    ) -> Result<switchyard_core::Decision, switchyard_core::NoCandidate> {
        self.seen
            .lock()
            .unwrap()
            .push((fleet.now.as_secs_f64(), fleet.backends.to_vec()));
        self.inner.decide(request, fleet)
    }
}

#[test]
fn policies_see_tokens_in_flight_the_prefill_queue_latency_and_gpu_gauges() {
    use crate::workload::{Segment, WorkloadRequest};
    let req = |arrival: f64, seed: u64| WorkloadRequest {
        arrival,
        session: None,
        prompt: Prompt::Segments(vec![Segment { seed, tokens: 1000 }]),
        max_output_tokens: 500,
        output_seed: seed,
    };
    // A -> 0 at 0; B -> 1 while A prefills; C -> 0 while A decodes; D -> 1 when all is done.
    let w = Workload::new(vec![req(0.0, 1), req(1e-4, 2), req(1.0, 3), req(60.0, 4)]);
    let config = FleetConfig::uniform(&profile::h100_llama3_8b(), 2, PolicySpec::default(), 1);
    let probe = ViewRecorder::default();
    let seen = probe.seen.clone();
    let r = run_with(&config, &w, Box::new(probe)).unwrap();
    assert_eq!(r.summary.completed, 4);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 4);
    let first = &seen[0].1;
    assert!(first
        .iter()
        .all(|b| b.in_flight_tokens == 0 && b.latency.ttft_s.is_none()));
    // B's view: A is in flight on 0 and has not produced its first token.
    let b0 = &seen[1].1[0];
    assert_eq!(
        (b0.in_flight, b0.in_flight_tokens, b0.prefill_tokens),
        (1, 1500, 1000)
    );
    // C's view: A is past its first token; its TTFT was measured, its decode still runs.
    let c0 = &seen[2].1[0];
    assert_eq!((c0.in_flight_tokens, c0.prefill_tokens), (1500, 0));
    let ttft = f64::from(c0.latency.ttft_s.unwrap());
    assert!((ttft - r.requests[0].ttft.unwrap()).abs() < 1e-3, "{ttft}");
    assert_eq!(c0.latency.latency_s, None);
    // D's view: everything finished; end-to-end and per-token averages exist.
    for b in &seen[3].1 {
        assert_eq!(
            (b.in_flight, b.in_flight_tokens, b.prefill_tokens),
            (0, 0, 0)
        );
        assert!(b.latency.latency_s.unwrap() > b.latency.ttft_s.unwrap());
        let tpot = b.latency.tpot_s.unwrap();
        assert!(tpot > 0.0 && tpot < 0.1, "{tpot}");
        let gpu = b.gpu.unwrap();
        assert!(gpu.age <= Duration::from_secs_f64(0.5) && gpu.temperature_c > 20.0);
        assert!(gpu.memory_used > 0.5 && gpu.memory_used <= 1.0);
        let engine = b.engine.unwrap();
        assert_eq!(
            u64::from(engine.kv_capacity_tokens.unwrap()),
            config.backends[0].engine.capacity_tokens()
        );
    }
}

#[test]
fn a_tenant_held_to_its_prefill_share_leaves_room_for_another() {
    // Two L4s, each full at 2,048 prompt tokens awaiting a first token. Tenant 1 is present
    // from the start; tenant 0 then sends eight 1,500-token prompts at once; tenant 1's probe
    // follows.
    let mut config = FleetConfig::uniform(
        &profile::l4_llama3_8b(),
        2,
        PolicySpec::from_name("prefix_aware").unwrap(),
        1,
    );
    for b in &mut config.backends {
        b.max_in_flight = Some(64);
        b.max_prefill_tokens = Some(2048);
    }
    let req = |arrival: f64, words: usize, seed: u64| WorkloadRequest {
        arrival,
        session: None,
        prompt: Prompt::Text(
            (0..words)
                .map(|i| format!("w{seed}x{i}"))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        max_output_tokens: 50,
        output_seed: seed,
    };
    let mut requests = vec![req(0.0, 20, 100)];
    requests.extend((0..8).map(|i| req(0.01 + 0.001 * i as f64, 1500, i)));
    requests.push(req(0.3, 20, 200));
    let w = Workload { requests };
    let class = |t| Class {
        priority: switchyard_core::admission::Priority::Normal,
        tenant: switchyard_core::admission::TenantId(t),
    };
    let mut classes = vec![class(1)];
    classes.extend((0..8).map(|_| class(0)));
    classes.push(class(1));
    let probe_ttft = |budget: Option<u64>| {
        let adm = Admission {
            settings: switchyard_core::admission::QueueSettings::default(),
            tenant_weights: vec![1.0, 1.0],
            classes: classes.clone(),
            critical_reserve: 0,
            engine_priority: false,
            tenant_prefill_budget: budget,
        };
        let r = run_admitted(&config, &w, build_policy(&config).unwrap(), &adm).unwrap();
        assert_eq!(
            r.summary.completed, 10,
            "every request is served either way"
        );
        r.requests[9].ttft.unwrap()
    };
    let shared = probe_ttft(Some(2 * 2048));
    let unshared = probe_ttft(None);
    assert!(
        shared * 4.0 < unshared,
        "probe TTFT {shared:.3} s with shares, {unshared:.3} s without"
    );
}
