//! Timeouts per pool, overridable per backend: a hanging replica trips the first-byte (TTFT)
//! timeout and the request fails over; a stream that goes quiet trips the idle timeout and a
//! long one the total timeout, each ending in-band with its own error event.

use crate::support::conf::{Conf, Pool};
use crate::support::sim::*;
use crate::support::*;
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn a_hanging_replica_trips_the_ttft_timeout_and_the_request_fails_over() {
    let hung = replica(200.0, 21).await;
    let ok = replica(200.0, 22).await;
    faults(&hung, r#"{"hang": true}"#).await;
    // The pool allows 300 s; the hanging backend's own override is what fires.
    let pool = Pool::default()
        .set("policy", "round_robin")
        .backend(json!({"url": hung.url(), "name": "b0", "timeouts": {"first_byte": "200ms"}}))
        .backend(json!({"url": ok.url(), "name": "b1"}));
    let gw = Gw::with(Conf::new().model("m", pool)).await;
    let c = client();
    let first = post(&c, &gw.url("/v1/chat/completions"), &chat(4, true), &[]).await;
    assert_eq!(
        (first.status.as_u16(), first.backend().as_str()),
        (200, "b1")
    );
    assert_eq!(attempts(&first), 2, "tried the hanging replica first");
    let (pieces, error, done) = stream_pieces(&first.body);
    assert_eq!((pieces.len(), error, done), (4, None, true));
    let second = post(&c, &gw.url("/v1/chat/completions"), &chat(4, false), &[]).await;
    assert_eq!((second.status.as_u16(), attempts(&second)), (200, 1));
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_goes_quiet_ends_with_the_idle_timeout_event() {
    // Fifty times slower than the modelled GPU: hundreds of ms between tokens.
    let slow = replica(0.02, 23).await;
    let gw = Gw::with(Conf::over(&[slow.url()]).pool("timeouts", json!({"idle": "50ms"}))).await;
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        &chat(50, true),
        &[],
    )
    .await;
    assert_eq!(
        a.status, 200,
        "the role chunk came at once, so the stream had started"
    );
    let (_, error, done) = stream_pieces(&a.body);
    assert_eq!(error.as_deref(), Some("upstream_idle_timeout"));
    assert!(done);
    let text = String::from_utf8_lossy(&a.body);
    assert!(
        text.ends_with(switchyard_gateway::body::STREAM_IDLE_EVENT),
        "{text}"
    );
    // The upstream request was cancelled with the stream: the engine stops running it.
    let mut running = u32::MAX;
    for _ in 0..500 {
        running = slow.snapshot().await.unwrap().engine.num_running;
        if running == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(running, 0);
}

#[tokio::test(start_paused = true)]
async fn a_request_past_its_total_timeout_ends_with_the_total_timeout_event() {
    let r = replica(1.0, 24).await;
    let gw = Gw::with(Conf::over(&[r.url()]).pool("timeouts", json!({"total": "300ms"}))).await;
    let c = client();
    let a = post(&c, &gw.url("/v1/chat/completions"), &chat(2000, true), &[]).await;
    let (pieces, error, done) = stream_pieces(&a.body);
    assert!(!pieces.is_empty(), "tokens flowed before the deadline");
    assert_eq!(
        (error.as_deref(), done),
        (Some("upstream_total_timeout"), true)
    );
    // Without streaming, no header comes before the deadline: a clean 504.
    let a = post(&c, &gw.url("/v1/chat/completions"), &chat(2000, false), &[]).await;
    assert_eq!(
        (a.status.as_u16(), a.error_code().as_str()),
        (504, "upstream_timeout")
    );
}

/// A mock upstream that answers with the start of a JSON body, then goes silent with the
/// connection open, as a backend that stalls mid-answer does.
async fn stalling_json_mock() -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"id\":\"x\",";
                let _ = sock.write_all(head.as_bytes()).await;
                // Hold the socket open, silent, until the peer closes it.
                let _ = sock.read(&mut buf).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(start_paused = true)]
async fn a_non_streamed_body_that_stalls_is_cut_by_the_idle_timeout_mock() {
    use http_body_util::BodyExt;
    let gw = Gw::with(
        Conf::over(&[stalling_json_mock().await]).pool("timeouts", json!({"idle": "100ms"})),
    )
    .await;
    let req = http::Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(chat(
            4, false,
        ))))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // JSON cannot carry an error in-band: the body ends in an error (the connection is closed)
    // instead of hanging, and the failure is counted.
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        resp.into_body().collect(),
    )
    .await
    .expect("the body ended instead of hanging");
    assert!(read.is_err(), "a truncated body must not look complete");
    let m = metrics(&gw).await;
    assert_eq!(
        sample(
            &m,
            r#"switchyard_stream_errors_total{backend="b0",model="m"}"#
        ),
        1.0
    );
}
