//! Connection workers (`Server::workers`, `switchyard serve --workers`): client connections
//! served on threads of their own, each with a single-threaded runtime, over real sockets.

use crate::support::conf::Conf;
use crate::support::*;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::sync::Notify;

const STREAM: [&str; 3] = [
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"b\"}}]}\n\n",
    "data: [DONE]\n\n",
];

#[tokio::test]
async fn workers_answer_every_connection_and_keep_upstream_connections_per_worker() {
    let up = Mock::start(Reply::Json(http::StatusCode::OK, OK_BODY)).await;
    // Engine scrapes would open connections too; this test counts the requests' ones.
    let gw = Gw::with_workers(
        Conf::one(json!({"url": up.url(), "metrics_url": "none"})),
        2,
    )
    .await;
    let url = gw.url("/v1/chat/completions");
    // Six client connections, one after another: each goes to the next worker in turn, and
    // each worker reuses the upstream connection it opened first.
    for _ in 0..6 {
        let c = client();
        for _ in 0..3 {
            let a = post(&c, &url, CHAT, &[]).await;
            assert_eq!(a.status, 200);
            assert_eq!(a.body, OK_BODY.as_bytes());
        }
    }
    assert_eq!(up.count(), 18);
    assert_eq!(
        up.connections.load(Ordering::SeqCst),
        2,
        "one upstream connection per worker"
    );
}

#[tokio::test]
async fn workers_relay_streams_and_serve_many_connections_at_once() {
    let up = Mock::start(Reply::Sse {
        chunks: STREAM.to_vec(),
        gate: None,
    })
    .await;
    let gw = Gw::with_workers(Conf::over(&[up.url()]), 2).await;
    let url = gw.url("/v1/chat/completions");
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut all = Vec::new();
    for _ in 0..8 {
        let url = url.clone();
        all.push(tokio::spawn(async move {
            let c = client();
            post(&c, &url, body, &[]).await
        }));
    }
    for a in all {
        let a = a.await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body_text(), STREAM.concat());
    }
}

#[tokio::test]
async fn workers_drain_in_flight_requests_on_shutdown() {
    let hold = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(hold.clone())).await;
    let mut gw = Gw::with_workers(Conf::over(&[up.url()]).set("drain_timeout", "10s"), 2).await;
    let url = gw.url("/v1/chat/completions");
    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { post(&client(), &url, CHAT, &[]).await })
        })
        .collect();
    eventually(|| up.count() == 2).await;
    let addr = gw.addr;
    let stopping = tokio::spawn(async move { gw.shutdown().await });
    assert_refused_soon(addr).await;
    hold.notify_waiters();
    for a in in_flight {
        let a = a.await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.body, OK_BODY.as_bytes());
    }
    assert_eq!(stopping.await.unwrap(), switchyard_gateway::Drained::Clean);
}
