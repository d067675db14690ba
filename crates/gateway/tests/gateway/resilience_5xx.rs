//! A replica answering 20% of requests with 500, behind two healthy ones: every request of a
//! run succeeds, and the retries that made that happen stay within the retry budget.

use crate::support::conf::Conf;
use crate::support::sim::*;
use crate::support::*;
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn twenty_percent_5xx_loses_no_request_and_retries_stay_in_budget() {
    let flaky = replica(200.0, 11).await;
    let b = replica(200.0, 12).await;
    let c2 = replica(200.0, 13).await;
    faults(&flaky, r#"{"error_rate": 0.2}"#).await;
    // No floor on the budget, so the share is what bounds the retries; the breaker and
    // outlier detection stay on, as in production.
    let gw = Gw::with(
        Conf::over(&[flaky.url(), b.url(), c2.url()])
            .pool("policy", "round_robin")
            .set("retry", json!({"budget_ratio": 0.2, "min_per_second": 0})),
    )
    .await;
    const REQUESTS: usize = 90;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let mut tasks = Vec::new();
    for w in 0..3 {
        let (c, url) = (c.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..REQUESTS / 3 {
                let stream = (w + i) % 2 == 0;
                out.push(post(&c, &url, &chat(4, stream), &[]).await);
            }
            out
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    let failed: Vec<_> = answers.iter().filter(|a| a.status != 200).collect();
    assert!(failed.is_empty(), "{} requests failed", failed.len());
    let retried = answers.iter().filter(|a| attempts(a) > 1).count();

    let m = metrics(&gw).await;
    let granted = sample(&m, r#"switchyard_retries_total{granted="true",model="m"}"#);
    let denied = sample(&m, r#"switchyard_retries_total{granted="false",model="m"}"#);
    let errors = sample(
        &m,
        r#"switchyard_requests_total{backend="b0",model="m",status="500"}"#,
    );
    eprintln!("retries granted: {granted} for {REQUESTS} requests");
    assert!(granted >= 1.0, "the fault fired and was retried: {m}");
    assert_eq!(denied, 0.0);
    assert_eq!(
        granted as usize, retried,
        "each retry shows in its attempts header"
    );
    assert!(
        granted <= 0.2 * REQUESTS as f64,
        "{granted} retries for {REQUESTS} requests"
    );
    // A 500 that was retried is not the client's answer.
    assert_eq!(errors, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_replica_failing_every_request_is_ejected_but_never_the_last_one() {
    let bad = replica(200.0, 14).await;
    let also_bad = replica(200.0, 15).await;
    faults(&bad, r#"{"error_rate": 1.0}"#).await;
    // Breaker off: passive outlier detection alone.
    let gw = Gw::with(
        Conf::over(&[bad.url(), also_bad.url()])
            .pool("policy", "round_robin")
            .pool("breaker", json!({"enabled": false}))
            .pool(
                "outlier_detection",
                json!({"consecutive_failures": 3, "base_ejection": "10s"}),
            ),
    )
    .await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    for _ in 0..8 {
        let a = post(&c, &url, &chat(2, false), &[]).await;
        assert_eq!((a.status.as_u16(), a.backend().as_str()), (200, "b1"));
    }
    let m = metrics(&gw).await;
    assert_eq!(
        sample(&m, r#"switchyard_backend_ejected{backend="b0",model="m"}"#),
        1.0
    );
    // Ejected: b1 serves alone, with no failed first attempt.
    let a = post(&c, &url, &chat(2, false), &[]).await;
    assert_eq!((a.backend().as_str(), attempts(&a)), ("b1", 1));
    // Now b1 fails too; it is the last one in, so it stays in and its 500 reaches the client
    // (the alternative, ejecting the whole pool, would answer nothing at all).
    faults(&also_bad, r#"{"error_rate": 1.0}"#).await;
    for _ in 0..6 {
        let a = post(&c, &url, &chat(2, false), &[]).await;
        assert_eq!((a.status.as_u16(), a.backend().as_str()), (500, "b1"));
    }
    let m = metrics(&gw).await;
    assert_eq!(
        sample(&m, r#"switchyard_backend_ejected{backend="b1",model="m"}"#),
        0.0
    );
}
