//! The circuit breaker against a replica that fails every request: it opens after the
//! configured failures, half-opens after its timeout and lets probes through, and closes
//! after enough of them succeed, with its state exported as a metric throughout. No client
//! sees a failure while it happens: each failed attempt fails over.

use crate::support::conf::Conf;
use crate::support::sim::*;
use crate::support::*;
use serde_json::json;

const STATE: &str = r#"switchyard_backend_breaker_state{backend="b0",model="m"}"#;

fn transitions(m: &str, to: &str) -> f64 {
    sample(
        m,
        &format!(r#"switchyard_backend_transitions_total{{backend="b0",model="m",to="{to}"}}"#),
    )
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_half_opens_with_probes_and_closes() {
    let bad = replica(200.0, 41).await;
    let good = replica(200.0, 42).await;
    faults(&bad, r#"{"error_rate": 1.0}"#).await;
    // Outlier ejection off so the breaker alone takes the replica out.
    let gw = Gw::with(
        Conf::over(&[bad.url(), good.url()])
            .pool("policy", "round_robin")
            .pool(
                "breaker",
                json!({"failures": 3, "window": "10s", "open_for": "300ms", "probes": 1, "successes": 2}),
            )
            .pool("outlier_detection", json!({"enabled": false})),
    )
    .await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let send = || async { post(&c, &url, &chat(2, false), &[]).await };

    // Three failed attempts open it; every client still gets its answer from b1.
    for _ in 0..6 {
        let a = send().await;
        assert_eq!((a.status.as_u16(), a.backend().as_str()), (200, "b1"));
    }
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, STATE), 1.0, "open");
    assert_eq!(transitions(&m, "open"), 1.0);
    // While open, requests go to b1 without trying b0 first.
    let a = send().await;
    assert_eq!((a.backend().as_str(), attempts(&a)), ("b1", 1));

    // After open_for it half-opens; the probe fails (still broken) and it opens again.
    let mut probed = false;
    for _ in 0..500 {
        let a = send().await;
        assert_eq!(a.status, 200);
        if attempts(&a) == 2 {
            probed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(probed, "a probe went to b0 once the breaker half-opened");
    let m = metrics(&gw).await;
    assert_eq!((sample(&m, STATE), transitions(&m, "open")), (1.0, 2.0));
    assert!(transitions(&m, "half_open") >= 1.0);

    // The replica recovers: the next probes succeed and close the breaker.
    faults(&bad, r#"{"error_rate": 0.0}"#).await;
    let mut served_by_b0 = 0;
    for _ in 0..500 {
        let a = send().await;
        assert_eq!(a.status, 200);
        if a.backend() == "b0" {
            served_by_b0 += 1;
        }
        if sample(&metrics(&gw).await, STATE) == 0.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let m = metrics(&gw).await;
    assert_eq!(sample(&m, STATE), 0.0, "closed");
    assert_eq!(transitions(&m, "closed"), 1.0);
    assert!(served_by_b0 >= 2, "closed after two successful probes");
}
