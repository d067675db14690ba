//! A replica answering 429 with `Retry-After`: it is cooled down for that long, then used
//! again; and when every replica of a pool is cooling down, a request waits for one to come
//! back instead of failing at once.

use crate::support::conf::{Conf, Pool};
use crate::support::sim::*;
use crate::support::*;
use serde_json::json;
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_429_cools_the_replica_down_for_its_retry_after_then_it_serves_again() {
    let limited = replica(200.0, 31).await;
    let ok = replica(200.0, 32).await;
    faults(&limited, r#"{"rate_limit": 1.0, "retry_after_s": 1}"#).await;
    let gw = Gw::with(Conf::over(&[limited.url(), ok.url()]).pool("policy", "round_robin")).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    // The 429 comes after this instant, so its cooldown ends at least 1 s after it.
    let limited_at = Instant::now();
    let first = post(&c, &url, &chat(2, false), &[]).await;
    assert_eq!((first.status.as_u16(), attempts(&first)), (200, 2));
    // The replica would now serve, but it asked for a second: nothing goes there until then.
    faults(&limited, r#"{"rate_limit": 0.0}"#).await;
    let mut during = Vec::new();
    while limited_at.elapsed() < Duration::from_millis(800) {
        during.push(post(&c, &url, &chat(2, false), &[]).await);
        // Paused time: a request every 50 ms.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(during.len() >= 2);
    let seen: Vec<(String, u32)> = during.iter().map(|a| (a.backend(), attempts(a))).collect();
    assert!(seen.iter().all(|(b, n)| b == "b1" && *n == 1), "{seen:?}");
    // Once its Retry-After has passed it is back in rotation.
    let back = loop {
        let a = post(&c, &url, &chat(2, false), &[]).await;
        if a.backend() == "b0" {
            break limited_at.elapsed();
        }
        assert!(
            limited_at.elapsed() < Duration::from_secs(10),
            "never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        back >= Duration::from_millis(900),
        "used again after {back:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn when_every_replica_cools_down_a_request_waits_for_one_instead_of_failing() {
    let only = replica(200.0, 33).await;
    faults(&only, r#"{"rate_limit": 1.0, "retry_after_s": 1}"#).await;
    let gw = Gw::with(Conf::over(&[only.url()]).set("retry", json!({"cooldown_wait": "5s"}))).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let pending = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post(&c, &url, &chat(2, false), &[]).await }
    });
    // `/ready` turns 503 when the 429 has cooled the only replica down; the request is then
    // waiting. The replica recovers in the meantime.
    let mut ready = StatusCode::OK;
    for _ in 0..500 {
        ready = get(&c, &gw.url("/ready")).await.status;
        if ready != StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
    faults(&only, r#"{"rate_limit": 0.0}"#).await;
    let answer = pending.await.unwrap();
    assert_eq!((answer.status.as_u16(), attempts(&answer)), (200, 2));

    // With no wait configured, the same situation answers at once with the 429.
    faults(&only, r#"{"rate_limit": 1.0}"#).await;
    let gw = Gw::with(Conf::over(&[only.url()]).set("retry", json!({"cooldown_wait": 0}))).await;
    let a = post(&c, &gw.url("/v1/chat/completions"), &chat(2, false), &[]).await;
    assert_eq!((a.status.as_u16(), attempts(&a)), (429, 1));
}

/// The wait for a cooled-down replica is cut at the request's total timeout: a replica back
/// in 2 s is not waited for by a request with 300 ms in all, which gets the 429 at once
/// (before the cap it waited the 2 s, then had no time left for the attempt).
#[tokio::test(start_paused = true)]
async fn a_request_does_not_wait_for_a_cooldown_past_its_total_timeout() {
    let only = replica(200.0, 34).await;
    faults(&only, r#"{"rate_limit": 1.0, "retry_after_s": 2}"#).await;
    let gw = Gw::with(
        Conf::over(&[only.url()])
            .pool("timeouts", json!({"total": "300ms"}))
            .set("retry", json!({"cooldown_wait": "5s"})),
    )
    .await;
    let started = Instant::now();
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        &chat(2, false),
        &[],
    )
    .await;
    assert_eq!((a.status.as_u16(), attempts(&a)), (429, 1));
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "answered after {:?}",
        started.elapsed()
    );
}

use http::StatusCode;

/// A backend's own `rpm` (a hosted provider's limit) is kept by the gateway: past it the
/// backend cools down as if it had answered 429, without being asked; requests go to the
/// others, wait for it within `cooldown_wait`, or hear 429 `rate_limit_exceeded`.
#[tokio::test(start_paused = true)]
async fn a_backends_own_rpm_routes_around_it_and_answers_429_when_nothing_has_room() {
    let limited = replica(200.0, 41).await;
    let other = replica(200.0, 42).await;
    let pool = Pool::default()
        .backend(json!({"url": limited.url(), "name": "b0", "rpm": 1}))
        .backend(json!({"url": other.url(), "name": "b1"}))
        .set("policy", "round_robin");
    let gw = Gw::with(Conf::new().model("m", pool)).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let mut served = Vec::new();
    for _ in 0..4 {
        let a = post(&c, &url, &chat(2, false), &[]).await;
        assert_eq!((a.status.as_u16(), attempts(&a)), (200, 1), "{:?}", a.body);
        served.push(
            a.headers["x-switchyard-backend"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(
        served.iter().filter(|b| *b == "b0").count(),
        1,
        "one request a minute for b0: {served:?}"
    );

    // Alone and with no wait allowed, the limited backend's second request is answered 429.
    let pool = Pool::default().backend(json!({"url": limited.url(), "name": "b0", "rpm": 1}));
    let gw = Gw::with(
        Conf::new()
            .model("m", pool)
            .set("retry", json!({"cooldown_wait": 0})),
    )
    .await;
    let url = gw.url("/v1/chat/completions");
    assert_eq!(post(&c, &url, &chat(2, false), &[]).await.status, 200);
    let a = post(&c, &url, &chat(2, false), &[]).await;
    assert_eq!(
        (a.status.as_u16(), a.error_code().as_str()),
        (429, "rate_limit_exceeded"),
        "{:?}",
        a.body
    );
    let wait: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "retry after {wait} s");
    assert!(String::from_utf8_lossy(&a.body).contains("backend's rpm"));
    // A limit of 0 is refused at load.
    let e = switchyard_gateway::config::parse(
        "models:\n  m:\n    backends:\n      - {url: \"http://127.0.0.1:1\", tpm: 0}\n",
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("rpm or tpm 0"), "{e}");
}
