//! A client that disconnects frees the backend at once: the gateway's in-flight count drops
//! and the upstream request is cancelled, so the simulated engine stops generating for it.

use crate::support::conf::Conf;
use crate::support::sim::*;
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use std::time::Duration;

const IN_FLIGHT: &str = r#"switchyard_backend_in_flight{backend="b0",model="m"}"#;

/// Polls `cond` every 10 ms for at most `bound`; true if it held in time.
async fn within(bound: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + bound;
    while tokio::time::Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test(start_paused = true)]
async fn a_client_leaving_mid_stream_frees_the_gateway_slot_and_the_engine() {
    // Real time: 2000 tokens would take many seconds.
    let r = replica(1.0, 61).await;
    let gw = Gw::with(Conf::over(&[r.url()])).await;
    let c = client();
    let req = Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat(2000, true))))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    for _ in 0..3 {
        body.frame().await.unwrap().unwrap();
    }
    assert_eq!(sample(&metrics(&gw).await, IN_FLIGHT), 1.0);
    assert_eq!(r.snapshot().await.unwrap().engine.num_running, 1);
    drop(body);
    // Generous bound: the point is "promptly", not a latency figure.
    let freed = within(Duration::from_secs(3), async || {
        sample(&metrics(&gw).await, IN_FLIGHT) == 0.0
            && r.snapshot().await.unwrap().engine.num_running == 0
    })
    .await;
    assert!(freed, "the slot and the engine's sequence were not freed");
}

#[tokio::test(start_paused = true)]
async fn a_client_leaving_before_the_first_byte_frees_the_slot() {
    let r = replica(200.0, 62).await;
    faults(&r, r#"{"hang": true}"#).await;
    let gw = Gw::with(Conf::over(&[r.url()])).await;
    let url = gw.url("/v1/chat/completions");
    let pending = tokio::spawn(async move { post(&client(), &url, &chat(4, false), &[]).await });
    let seen = within(Duration::from_secs(3), async || {
        sample(&metrics(&gw).await, IN_FLIGHT) == 1.0
    })
    .await;
    assert!(seen, "the request reached the hanging replica");
    pending.abort();
    let freed = within(Duration::from_secs(3), async || {
        sample(&metrics(&gw).await, IN_FLIGHT) == 0.0
    })
    .await;
    assert!(freed, "the slot was not freed");
}
