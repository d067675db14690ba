//! Failover before the first byte: a request whose backend cannot serve it moves to the
//! decision's next fallback; the response says how many attempts it took.

use crate::support::conf::Conf;
use crate::support::*;
use http::StatusCode;
use serde_json::json;

async fn run(gw: &Gw, n: usize) -> Vec<Answer> {
    let c = client();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await);
    }
    out
}

fn attempts(a: &Answer) -> u32 {
    a.headers["x-switchyard-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_dead_backend_is_skipped_and_every_request_succeeds() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(Conf::over(&[closed_port(), up.url()]).pool("policy", "round_robin")).await;
    let answers = run(&gw, 6).await;
    assert!(answers
        .iter()
        .all(|a| a.status == 200 && a.backend() == "b1"));
    // Round robin starts at the dead backend and puts it first on every other request.
    assert_eq!(
        answers.iter().map(attempts).collect::<Vec<_>>(),
        [2, 1, 2, 1, 2, 1]
    );
}

#[tokio::test(start_paused = true)]
async fn retryable_statuses_and_hangs_fail_over() {
    // (reply, top-level timeouts, how often the bad backend is asked in 4 round-robin
    // requests: on each of its turns, except a 429, which also cools it down for a second).
    let cases = [
        (
            Reply::Json(StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"busy"}"#),
            None,
            2,
        ),
        (
            Reply::Json(StatusCode::TOO_MANY_REQUESTS, r#"{"error":"slow"}"#),
            None,
            1,
        ),
        (
            Reply::Json(StatusCode::BAD_GATEWAY, r#"{"error":"bad"}"#),
            None,
            2,
        ),
        (
            Reply::Hang,
            Some(serde_json::json!({"first_byte": "200ms"})),
            2,
        ),
    ];
    for (bad, timeouts, asked) in cases {
        let bad = Mock::start(bad).await;
        let good = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
        let mut conf = Conf::over(&[bad.url(), good.url()]).pool("policy", "round_robin");
        if let Some(t) = &timeouts {
            conf = conf.set("timeouts", t.clone());
        }
        let gw = Gw::with(conf).await;
        for a in run(&gw, 4).await {
            assert_eq!(a.status, 200, "{timeouts:?}");
            assert_eq!(a.body, OK_BODY.as_bytes());
        }
        assert_eq!(bad.count(), asked, "the bad backend was tried on its turns");
    }
}

#[tokio::test]
async fn when_every_backend_refuses_the_last_answer_passes_through() {
    const BUSY: &str = r#"{"error":{"message":"overloaded","code":"busy"}}"#;
    let a = Mock::start(Reply::Json(StatusCode::SERVICE_UNAVAILABLE, BUSY)).await;
    let b = Mock::start(Reply::Json(StatusCode::SERVICE_UNAVAILABLE, BUSY)).await;
    let gw = Gw::with(Conf::over(&[a.url(), b.url()])).await;
    let answer = &run(&gw, 1).await[0];
    assert_eq!(answer.status, 503);
    assert_eq!(answer.body, BUSY.as_bytes());
    assert_eq!(attempts(answer), 2);
    assert_eq!(a.count() + b.count(), 2);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let bad = Mock::start(Reply::Json(StatusCode::BAD_REQUEST, r#"{"error":"bad"}"#)).await;
    let good = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(Conf::over(&[bad.url(), good.url()]).pool("policy", "round_robin")).await;
    let answer = &run(&gw, 1).await[0];
    assert_eq!((answer.status.as_u16(), attempts(answer)), (400, 1));
    assert_eq!(good.count(), 0);
}

#[tokio::test]
async fn max_attempts_1_turns_failover_off() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(
        Conf::over(&[closed_port(), up.url()])
            .pool("policy", "round_robin")
            .set("retry", json!({"max_attempts": 1})),
    )
    .await;
    let answers = run(&gw, 2).await;
    assert_eq!(answers[0].status, 502);
    assert_eq!(answers[0].error_code(), "upstream_unreachable");
    assert_eq!(answers[1].status, 200);
}

/// An upstream that starts an SSE response, sends one event, then drops the connection with
/// the chunked body unfinished, as a replica that dies mid-generation does.
async fn dying_stream_upstream() -> String {
    let event = "data: {\"n\":1}\n\n";
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    raw_upstream(format!("{head}{:x}\r\n{event}\r\n", event.len())).await
}

#[tokio::test]
async fn a_stream_that_breaks_midway_ends_with_an_sse_error_event_not_a_truncation() {
    let gw = Gw::with(Conf::over(&[dying_stream_upstream().await])).await;
    let c = client();
    let body = r#"{"model":"m","stream":true,"messages":[]}"#;
    let a = post(&c, &gw.url("/v1/chat/completions"), body, &[]).await;
    assert_eq!(a.status, 200);
    let text = String::from_utf8(a.body.to_vec()).unwrap();
    let expected = format!(
        "data: {{\"n\":1}}\n\n{}",
        switchyard_gateway::body::STREAM_BROKEN_EVENT
    );
    assert_eq!(text, expected);
    // The error event is valid JSON in OpenAI's error shape.
    let event = text
        .split("\n\n")
        .nth(1)
        .unwrap()
        .strip_prefix("data: ")
        .unwrap();
    let parsed: serde_json::Value = serde_json::from_str(event).unwrap();
    assert_eq!(parsed["error"]["code"], "upstream_stream_broken");
    let metrics = String::from_utf8(get(&c, &gw.url("/metrics")).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("switchyard_stream_errors_total{backend=\"b0\",model=\"m\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_with_retry_after_cools_the_backend_down_for_that_long() {
    let limited = Mock::start(Reply::RateLimited("1")).await;
    let good = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(Conf::over(&[limited.url(), good.url()]).pool("policy", "round_robin")).await;
    let started = tokio::time::Instant::now();
    let first = &run(&gw, 1).await[0];
    assert_eq!((first.status.as_u16(), attempts(first)), (200, 2));
    // While it cools down, requests go straight to the other backend.
    for a in run(&gw, 5).await {
        assert_eq!((a.backend().as_str(), attempts(&a)), ("b1", 1));
    }
    if started.elapsed() < std::time::Duration::from_millis(900) {
        assert_eq!(
            limited.count(),
            1,
            "the cooling backend was asked again too soon"
        );
    }
    // After Retry-After has passed it is back in rotation.
    let c = client();
    while limited.count() < 2 {
        post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
}

#[tokio::test]
async fn the_retry_budget_caps_failover_during_an_outage() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    // Breaker and ejection off: this measures the budget alone (with them on, the dead
    // backend leaves rotation after five failures and few retries are needed at all).
    let gw = Gw::with(
        Conf::over(&[closed_port(), up.url()])
            .pool("policy", "round_robin")
            .pool("breaker", json!({"enabled": false}))
            .pool("outlier_detection", json!({"enabled": false}))
            .set(
                "retry",
                json!({"budget_ratio": 0.25, "min_per_second": 0, "backoff_base": 0}),
            ),
    )
    .await;
    let answers = run(&gw, 40).await;
    let ok = answers.iter().filter(|a| a.status == 200).count();
    let retried_ok = answers
        .iter()
        .filter(|a| a.status == 200 && attempts(a) == 2)
        .count();
    let failed = answers.iter().filter(|a| a.status == 502).count();
    // Half the requests start at the dead backend; the budget lets at most a quarter of all
    // requests retry, so some of that half must fail instead of piling onto the survivor.
    assert_eq!(ok + failed, 40);
    assert!(retried_ok <= 10, "budget exceeded: {retried_ok} retries");
    assert!(retried_ok >= 9, "budget under-used: {retried_ok} retries");
    assert_eq!(failed, 20 - retried_ok);
    let metrics =
        String::from_utf8(get(&client(), &gw.url("/metrics")).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains(&format!(
            "switchyard_retries_total{{granted=\"true\",model=\"m\"}} {retried_ok}"
        )),
        "{metrics}"
    );
}

/// A backoff that would outlast what is left of the total timeout is not slept: with both
/// backends answering 503, a 300 ms request whose backoff before a retry is drawn up to an
/// hour (a draw under 300 ms has odds of 1 in 12,000) gets the 503 at once, after one
/// attempt, instead of waiting to send a retry that has no time left.
#[tokio::test(start_paused = true)]
async fn a_retry_whose_backoff_outlasts_the_total_timeout_is_not_made() {
    let a = Mock::start(Reply::Json(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"error":"busy"}"#,
    ))
    .await;
    let b = Mock::start(Reply::Json(
        StatusCode::SERVICE_UNAVAILABLE,
        r#"{"error":"busy"}"#,
    ))
    .await;
    let gw = Gw::with(
        Conf::over(&[a.url(), b.url()])
            .pool("timeouts", json!({"total": "300ms"}))
            .set(
                "retry",
                json!({"backoff_base": "3600s", "backoff_max": "3600s"}),
            ),
    )
    .await;
    let started = tokio::time::Instant::now();
    let r = post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["x-switchyard-attempts"], "1");
    assert_eq!(a.count() + b.count(), 1);
    assert!(started.elapsed() < std::time::Duration::from_millis(1500));
}
