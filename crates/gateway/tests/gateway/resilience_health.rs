//! Active health checks against replicas that crash and recover: a dead replica is taken
//! out of rotation (and `/ready` turns 503 when none is left), brought back once its checks
//! pass again, and then ramps up its share over the slow-start window instead of taking a
//! full share at once.

use crate::support::conf::Conf;
use crate::support::sim::*;
use crate::support::*;
use serde_json::json;
use std::time::Duration;
use switchyard_sim::http::Faults;
use tokio::time::Instant;

fn healthy(m: &str, b: &str) -> f64 {
    sample(
        m,
        &format!(r#"switchyard_backend_healthy{{backend="{b}",model="m"}}"#),
    )
}

async fn ready(gw: &Gw) -> http::StatusCode {
    get(&client(), &gw.url("/ready")).await.status
}

#[tokio::test(start_paused = true)]
async fn health_checks_take_a_crashed_replica_out_and_bring_it_back_with_slow_start() {
    let a = replica(200.0, 51).await;
    let b = replica(200.0, 52).await;
    let gw = Gw::with(
        Conf::over(&[a.url(), b.url()])
            .pool("policy", "round_robin")
            .pool(
                "health_check",
                json!({"interval": "20ms", "timeout": "200ms", "unhealthy_threshold": 2, "healthy_threshold": 2}),
            )
            .pool("slow_start", "2s")
            .pool("breaker", json!({"enabled": false}))
            .pool("outlier_detection", json!({"enabled": false})),
    )
    .await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    until_metrics(&gw, "both up", |m| {
        healthy(m, "b0") == 1.0 && healthy(m, "b1") == 1.0
    })
    .await;

    // a crashes: marked down after two failed checks, then gets no traffic at all.
    a.set_faults(Faults {
        crash: true,
        ..Faults::default()
    })
    .unwrap();
    until_metrics(&gw, "b0 down", |m| healthy(m, "b0") == 0.0).await;
    for _ in 0..10 {
        let r = post(&c, &url, &chat(1, false), &[]).await;
        assert_eq!(
            (r.status.as_u16(), r.backend().as_str(), attempts(&r)),
            (200, "b1", 1)
        );
    }
    assert_eq!(ready(&gw).await, 200);

    // a recovers (restarted on the same port): up again after two passed checks. Record who
    // serves each request from then on.
    a.set_faults(Faults::default()).unwrap();
    until_metrics(&gw, "b0 up", |m| healthy(m, "b0") == 1.0).await;
    let up_at = Instant::now();
    let mut served = Vec::new();
    while up_at.elapsed() < Duration::from_millis(2800) {
        let r = post(&c, &url, &chat(1, false), &[]).await;
        assert_eq!(r.status, 200);
        served.push((up_at.elapsed(), r.backend() == "b0"));
        // Paused time: one request every 20 ms, however busy the machine is.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let share = |from: u64, to: u64| {
        let window: Vec<bool> = served
            .iter()
            .filter(|(t, _)| *t >= Duration::from_millis(from) && *t < Duration::from_millis(to))
            .map(|(_, b0)| *b0)
            .collect();
        assert!(window.len() >= 8, "too few requests in {from}..{to} ms");
        window.iter().filter(|b0| **b0).count() as f64 / window.len() as f64
    };
    let early = share(0, 400);
    let late = share(2200, 2800);
    // Round robin gives each 50%; ramping from 10% of that over 2 s (at most 20% of it in
    // the first 400 ms), the returning replica takes well under half early on, and its full
    // half once the window has passed. On tokio's paused clock the requests are paced at
    // 20 ms, so 20 land in the first window and 30 in the last, whatever the machine's load.
    assert!(early < 0.3, "early share of the returning replica: {early}");
    assert!(
        (0.45..=0.55).contains(&late),
        "share after the ramp: {late}"
    );

    // Both crash: nothing is up, so the gateway is not ready; b recovers, it is again.
    a.set_faults(Faults {
        crash: true,
        ..Faults::default()
    })
    .unwrap();
    b.set_faults(Faults {
        crash: true,
        ..Faults::default()
    })
    .unwrap();
    until_metrics(&gw, "both down", |m| {
        healthy(m, "b0") + healthy(m, "b1") == 0.0
    })
    .await;
    assert_eq!(ready(&gw).await, 503);
    b.set_faults(Faults::default()).unwrap();
    until_metrics(&gw, "b1 up", |m| healthy(m, "b1") == 1.0).await;
    assert_eq!(ready(&gw).await, 200);
}
