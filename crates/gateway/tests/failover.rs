//! Failover before the first byte: a request whose backend cannot serve it moves to the
//! decision's next fallback; the response says how many attempts it took.

mod support;

use http::StatusCode;
use support::*;

fn closed_port() -> String {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    format!("http://{addr}")
}

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
    let gw = Gw::start(&config(
        &[closed_port(), up.url()],
        "policy: round_robin",
        "",
    ))
    .await;
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

#[tokio::test]
async fn retryable_statuses_and_hangs_fail_over() {
    for (bad, extra) in [
        (
            Reply::Json(StatusCode::SERVICE_UNAVAILABLE, r#"{"error":"busy"}"#),
            "",
        ),
        (
            Reply::Json(StatusCode::TOO_MANY_REQUESTS, r#"{"error":"slow"}"#),
            "",
        ),
        (
            Reply::Json(StatusCode::BAD_GATEWAY, r#"{"error":"bad"}"#),
            "",
        ),
        (Reply::Hang, "timeouts: {first_byte: 200ms}"),
    ] {
        let bad = Mock::start(bad).await;
        let good = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
        let gw = Gw::start(&config(
            &[bad.url(), good.url()],
            "policy: round_robin",
            extra,
        ))
        .await;
        for a in run(&gw, 4).await {
            assert_eq!(a.status, 200, "{extra}");
            assert_eq!(a.body, OK_BODY.as_bytes());
        }
        assert_eq!(bad.count(), 2, "the bad backend was tried on its turns");
    }
}

#[tokio::test]
async fn when_every_backend_refuses_the_last_answer_passes_through() {
    const BUSY: &str = r#"{"error":{"message":"overloaded","code":"busy"}}"#;
    let a = Mock::start(Reply::Json(StatusCode::SERVICE_UNAVAILABLE, BUSY)).await;
    let b = Mock::start(Reply::Json(StatusCode::SERVICE_UNAVAILABLE, BUSY)).await;
    let gw = Gw::start(&config(&[a.url(), b.url()], "", "")).await;
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
    let gw = Gw::start(&config(&[bad.url(), good.url()], "policy: round_robin", "")).await;
    let answer = &run(&gw, 1).await[0];
    assert_eq!((answer.status.as_u16(), attempts(answer)), (400, 1));
    assert_eq!(good.count(), 0);
}

#[tokio::test]
async fn max_attempts_1_turns_failover_off() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::start(&config(
        &[closed_port(), up.url()],
        "policy: round_robin",
        "retry: {max_attempts: 1}",
    ))
    .await;
    let answers = run(&gw, 2).await;
    assert_eq!(answers[0].status, 502);
    assert_eq!(answers[0].error_code(), "upstream_unreachable");
    assert_eq!(answers[1].status, 200);
}
