//! A replica that drops the connection mid-stream: the client gets what was generated, one
//! SSE error event, `[DONE]` and a clean end, never a retry (which could repeat tokens).
//! A replica that fails before the first byte is failed over instead, invisibly.

use crate::support::conf::Conf;
use crate::support::sim::*;
use crate::support::*;

#[tokio::test(start_paused = true)]
async fn a_replica_dying_mid_stream_gives_an_error_event_and_a_clean_end_without_repeats() {
    let a = replica(200.0, 1).await;
    let b = replica(200.0, 2).await;
    faults(&a, r#"{"drop_after_tokens": 3}"#).await;
    let gw = Gw::with(Conf::over(&[a.url(), b.url()]).pool("policy", "round_robin")).await;
    let c = client();
    // Round robin: the first request goes to the dying replica, the second to the healthy one.
    let broken = post(&c, &gw.url("/v1/chat/completions"), &chat(16, true), &[]).await;
    assert_eq!(
        (broken.status.as_u16(), broken.backend().as_str()),
        (200, "b0")
    );
    assert_eq!(attempts(&broken), 1, "a started stream is never retried");
    let (pieces, error, done) = stream_pieces(&broken.body);
    assert_eq!(pieces.len(), 3, "the three tokens sent, once each");
    assert_eq!(error.as_deref(), Some("upstream_stream_broken"));
    assert!(done, "the stream ends with [DONE]");
    let text = String::from_utf8_lossy(&broken.body);
    assert!(
        text.ends_with(switchyard_gateway::body::STREAM_BROKEN_EVENT),
        "{text}"
    );

    let whole = post(&c, &gw.url("/v1/chat/completions"), &chat(16, true), &[]).await;
    let (pieces, error, done) = stream_pieces(&whole.body);
    assert_eq!((pieces.len(), error, done), (16, None, true));

    let m = metrics(&gw).await;
    assert_eq!(
        sample(
            &m,
            r#"switchyard_stream_errors_total{backend="b0",model="m"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&m, r#"switchyard_retries_total{granted="true",model="m"}"#),
        0.0
    );
}

#[tokio::test(start_paused = true)]
async fn failures_before_the_first_byte_succeed_on_another_replica() {
    let a = replica(200.0, 3).await;
    let b = replica(200.0, 4).await;
    let gw = Gw::with(Conf::over(&[a.url(), b.url()]).pool("policy", "round_robin")).await;
    let c = client();
    // Crashed (connection refused), then answering 500 on every request: both fail before
    // any byte reaches the client, so the other replica serves every request.
    use switchyard_sim::http::Faults;
    let phases = [
        Faults {
            crash: true,
            ..Faults::default()
        },
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    ];
    for phase in phases {
        a.set_faults(phase.clone()).unwrap();
        for _ in 0..4 {
            let r = post(&c, &gw.url("/v1/chat/completions"), &chat(8, true), &[]).await;
            assert_eq!(
                (r.status.as_u16(), r.backend().as_str()),
                (200, "b1"),
                "{phase:?}"
            );
            let (pieces, error, done) = stream_pieces(&r.body);
            assert_eq!((pieces.len(), error, done), (8, None, true));
            assert!(attempts(&r) <= 2);
        }
    }
}

/// A mock upstream that sends SSE response headers, then closes the connection before any
/// event: the response had started upstream, but no byte of it had reached the client.
async fn headers_then_gone_mock() -> String {
    raw_upstream(
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_owned(),
    )
    .await
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_dies_before_its_first_event_fails_over_invisibly_mock() {
    let b = replica(200.0, 5).await;
    let gw = Gw::with(
        Conf::over(&[headers_then_gone_mock().await, b.url()]).pool("policy", "round_robin"),
    )
    .await;
    let r = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        &chat(6, true),
        &[],
    )
    .await;
    assert_eq!(
        (r.status.as_u16(), r.backend().as_str(), attempts(&r)),
        (200, "b1", 2)
    );
    let (pieces, error, done) = stream_pieces(&r.body);
    assert_eq!((pieces.len(), error, done), (6, None, true));
}
