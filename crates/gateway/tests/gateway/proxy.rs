//! The proxy path over real loopback sockets: byte-for-byte passthrough, incremental
//! streaming, response headers, every error case, metrics and graceful shutdown.

use crate::support::conf::Conf;
use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

fn ok() -> Reply {
    Reply::Json(StatusCode::OK, OK_BODY)
}

#[tokio::test]
async fn unknown_body_fields_and_headers_reach_the_upstream_byte_for_byte() {
    let up = Mock::start(ok()).await;
    let gw = Gw::with(Conf::over(&[up.url()])).await;
    let body = r#"{ "model":"m",  "messages":[{"role":"user","content":"h\u00e9"}], "x_vendor":{"deep":[1,2.50,null]}, "temperature":0.7 }"#;
    let a = post(
        &client(),
        &gw.url("/v1/chat/completions"),
        body,
        &[("x-custom-thing", "42"), ("openai-organization", "org-1")],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, OK_BODY.as_bytes());
    let seen = up.last();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body, body.as_bytes());
    assert_eq!(seen.headers["x-custom-thing"], "42");
    assert_eq!(seen.headers["openai-organization"], "org-1");
    assert_eq!(a.headers["x-switchyard-backend"], "b0");
}

#[tokio::test]
async fn model_is_rewritten_for_a_backend_that_expects_another_name_and_key_replaced() {
    let up = Mock::start(ok()).await;
    std::env::set_var("SWITCHYARD_TEST_KEY", "sk-upstream");
    let gw = Gw::with(Conf::one(json!({
        "url": format!("{}/v1", up.url()),
        "model": "meta/llama-3",
        "api_key": "${SWITCHYARD_TEST_KEY}",
    })))
    .await;
    let body = r#"{"model" : "m","extra":{"model":"m"}}"#;
    let a = post(
        &client(),
        &gw.url("/v1/completions"),
        body,
        &[("authorization", "Bearer client-key")],
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = up.last();
    assert_eq!(seen.path, "/v1/completions");
    assert_eq!(
        seen.body,
        r#"{"model" : "meta/llama-3","extra":{"model":"m"}}"#.as_bytes()
    );
    assert_eq!(seen.headers["authorization"], "Bearer sk-upstream");
}

#[tokio::test]
async fn streaming_is_relayed_chunk_by_chunk_as_it_arrives() {
    let gate = Arc::new(Notify::new());
    let up = Mock::start(Reply::Sse {
        chunks: vec!["data: {\"n\":1}\n\n", "data: {\"n\":2}\n\ndata: [DONE]\n\n"],
        gate: Some(gate.clone()),
    })
    .await;
    let gw = Gw::with(Conf::over(&[up.url()])).await;
    let req = Request::post(gw.url("/v1/chat/completions"))
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true,"messages":[]}"#,
        )))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    // The upstream sends its second chunk only after the gate opens, and the gate opens only
    // after the client has the first: a buffering proxy would hang here.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk arrived before the upstream sent the second")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "data: {\"n\":1}\n\n");
    gate.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "data: {\"n\":2}\n\ndata: [DONE]\n\n");
}

#[tokio::test]
async fn request_id_is_kept_or_made_and_models_health_ready_metrics_answer() {
    let up = Mock::start(ok()).await;
    let gw = Gw::with(Conf::over(&[up.url()])).await;
    let c = client();
    let a = post(
        &c,
        &gw.url("/v1/chat/completions"),
        CHAT,
        &[("x-request-id", "abc-123")],
    )
    .await;
    assert_eq!(a.headers["x-request-id"], "abc-123");
    assert_eq!(up.last().headers["x-request-id"], "abc-123");
    let b = post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    let made = b.headers["x-request-id"].to_str().unwrap().to_owned();
    assert!(made.starts_with("sy-"), "{made}");
    assert_ne!(
        made,
        post(&c, &gw.url("/v1/chat/completions"), CHAT, &[])
            .await
            .headers["x-request-id"]
    );

    let models = get(&c, &gw.url("/v1/models")).await.json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["id"], "m");
    assert_eq!(get(&c, &gw.url("/health")).await.status, 200);
    assert_eq!(get(&c, &gw.url("/ready")).await.status, 200);
    let metrics = String::from_utf8(get(&c, &gw.url("/metrics")).await.body.to_vec()).unwrap();
    for name in [
        "switchyard_requests_total{backend=\"b0\",model=\"m\",status=\"200\"} 3",
        "switchyard_request_duration_seconds_bucket",
        "switchyard_time_to_first_byte_seconds_bucket",
        "switchyard_backend_in_flight{backend=\"b0\",model=\"m\"} 0",
        "switchyard_overhead_seconds_count 3",
    ] {
        assert!(metrics.contains(name), "missing {name} in\n{metrics}");
    }
}

#[tokio::test]
async fn every_gateway_error_has_its_status_and_stable_code() {
    let up = Mock::start(ok()).await;
    let gw = Gw::with(Conf::over(&[up.url()]).set("max_body_bytes", "1KiB")).await;
    let c = client();
    let chat = gw.url("/v1/chat/completions");
    let cases: Vec<(&str, u16, &str)> = vec![
        ("{not json", 400, "invalid_json"),
        ("", 400, "invalid_json"),
        ("[1,2]", 400, "invalid_json"),
        (r#"{"messages":[]}"#, 400, "missing_model"),
        (r#"{"model":42}"#, 400, "invalid_model"),
        (r#"{"model":"nope"}"#, 404, "model_not_found"),
    ];
    for (body, status, code) in cases {
        let a = post(&c, &chat, body, &[]).await;
        assert_eq!(
            (a.status.as_u16(), a.error_code().as_str()),
            (status, code),
            "body {body:?}"
        );
        assert!(a.json()["error"]["message"].as_str().unwrap().len() > 10);
        assert!(a.json()["error"]["type"].is_string());
    }
    let big = format!(r#"{{"model":"m","prompt":"{}"}}"#, "x".repeat(2000));
    let a = post(&c, &gw.url("/v1/completions"), &big, &[]).await;
    assert_eq!(
        (a.status.as_u16(), a.error_code().as_str()),
        (413, "body_too_large")
    );
    let a = get(&c, &gw.url("/v1/nothing")).await;
    assert_eq!(
        (a.status.as_u16(), a.error_code().as_str()),
        (404, "unknown_endpoint")
    );
    let a = get(&c, &chat).await;
    assert_eq!(
        (a.status.as_u16(), a.error_code().as_str()),
        (405, "method_not_allowed")
    );
    assert_eq!(up.count(), 0, "no bad request reached the upstream");
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let up = Mock::start(ok()).await;
    let gw = Gw::with(Conf::over(&[up.url()]).set("max_body_bytes", 100)).await;
    // A streamed body has no content-length; the limit must hold while reading.
    let (mut tx, body) =
        http_body_util::channel::Channel::<Bytes, std::convert::Infallible>::new(4);
    tokio::spawn(async move {
        for _ in 0..10 {
            if tx.send_data(Bytes::from(vec![b' '; 50])).await.is_err() {
                break;
            }
        }
    });
    let req = Request::post(gw.url("/v1/embeddings")).body(body).unwrap();
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn unreachable_upstream_is_502_and_slow_one_is_504() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gw = Gw::with(Conf::over(&[format!("http://{closed}")])).await;
    let a = post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(
        (a.status.as_u16(), a.error_code().as_str()),
        (502, "upstream_unreachable")
    );

    let hang = Mock::start(Reply::Hang).await;
    let gw =
        Gw::with(Conf::over(&[hang.url()]).set("timeouts", json!({"first_byte": "200ms"}))).await;
    let a = post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(
        (a.status.as_u16(), a.error_code().as_str()),
        (504, "upstream_timeout")
    );
}

#[tokio::test]
async fn upstream_error_responses_pass_through_as_they_are() {
    const LIMITED: &str =
        r#"{"error":{"message":"slow down","type":"rate_limit","code":"rate_limited"}}"#;
    let up = Mock::start(Reply::Json(StatusCode::TOO_MANY_REQUESTS, LIMITED)).await;
    // No waiting for the cooldown to end: this is about what passes through when it fails.
    let gw = Gw::with(Conf::over(&[up.url()]).set("retry", json!({"cooldown_wait": 0}))).await;
    let a = post(&client(), &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(a.status, 429);
    assert_eq!(a.body, LIMITED.as_bytes());
}

#[tokio::test]
async fn full_pool_is_503_with_retry_after() {
    let hold = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(hold.clone())).await;
    let gw = Gw::with(Conf::one(json!({"url": up.url(), "max_concurrency": 1}))).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let first = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post(&c, &url, CHAT, &[]).await.status }
    });
    eventually(|| up.count() == 1).await;
    assert_eq!(get(&c, &gw.url("/ready")).await.status, 503);
    let a = post(&c, &url, CHAT, &[]).await;
    assert_eq!(
        (a.status.as_u16(), a.error_code().as_str()),
        (503, "no_backend_available")
    );
    assert_eq!(a.headers["retry-after"], "1");
    hold.notify_waiters();
    assert_eq!(first.await.unwrap(), 200);
}

#[tokio::test]
async fn client_disconnect_frees_the_backend_slot() {
    let gate = Arc::new(Notify::new());
    let up = Mock::start(Reply::Sse {
        chunks: vec!["data: 1\n\n", "data: 2\n\n"],
        gate: Some(gate),
    })
    .await;
    let gw = Gw::with(Conf::one(json!({"url": up.url(), "max_concurrency": 1}))).await;
    {
        let c = client();
        let req = Request::post(gw.url("/v1/chat/completions"))
            .body(Full::new(Bytes::from_static(
                br#"{"model":"m","stream":true}"#,
            )))
            .unwrap();
        let mut body = c.request(req).await.unwrap().into_body();
        body.frame().await.unwrap().unwrap();
        // The client goes away mid-stream: body and client dropped here.
    }
    // With max_concurrency 1, a new request is only dispatched once the slot is free again.
    let c = client();
    for _ in 0..500 {
        let req = Request::post(gw.url("/v1/chat/completions"))
            .body(Full::new(Bytes::from_static(br#"{"model":"m"}"#)))
            .unwrap();
        let resp = c.request(req).await.unwrap();
        if resp.status() == StatusCode::OK {
            assert_eq!(up.count(), 2);
            return;
        }
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("in-flight slot not released after the client disconnected");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drains_in_flight_requests() {
    let hold = Arc::new(Notify::new());
    let up = Mock::start(Reply::HoldUntil(hold.clone())).await;
    let mut gw = Gw::with(Conf::over(&[up.url()]).set("drain_timeout", "10s")).await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let in_flight = tokio::spawn({
        let (c, url) = (c.clone(), url.clone());
        async move { post(&c, &url, CHAT, &[]).await }
    });
    eventually(|| up.count() == 1).await;
    let addr = gw.addr;
    let stopping = tokio::spawn(async move { gw.shutdown().await });
    // The listener closes: new connections are refused.
    assert_refused_soon(addr).await;
    hold.notify_waiters();
    let a = in_flight.await.unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.body, OK_BODY.as_bytes());
    assert_eq!(stopping.await.unwrap(), switchyard_gateway::Drained::Clean);
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_kept_alive() {
    let up = Mock::start(ok()).await;
    // Engine scrapes would share the pool too; this test counts the requests' connections.
    let gw = Gw::with(Conf::one(json!({"url": up.url(), "metrics_url": "none"}))).await;
    let c = client();
    for _ in 0..20 {
        assert_eq!(
            post(&c, &gw.url("/v1/chat/completions"), CHAT, &[])
                .await
                .status,
            200
        );
    }
    assert_eq!(up.count(), 20);
    let conns = up.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        conns, 1,
        "20 sequential requests should share one upstream connection"
    );
}

#[tokio::test]
async fn each_endpoint_reaches_its_own_path_under_the_backend_base_path() {
    let up = Mock::start(ok()).await;
    let gw = Gw::with(Conf::one(json!({"url": format!("{}/prefix", up.url())}))).await;
    let c = client();
    for (path, body) in [
        ("/v1/chat/completions", CHAT),
        ("/v1/completions", r#"{"model":"m","prompt":"hi"}"#),
        ("/v1/embeddings", r#"{"model":"m","input":"hi"}"#),
        ("/v1/chat/completions", CHAT),
    ] {
        let a = post(&c, &gw.url(path), body, &[]).await;
        assert_eq!(a.status, 200, "{path}");
        assert_eq!(up.last().path, format!("/prefix{path}"));
    }
}
