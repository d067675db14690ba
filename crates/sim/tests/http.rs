//! The simulator's HTTP face over real loopback sockets: OpenAI/vLLM shapes, streaming at the
//! simulated pace, `/metrics` names, and every fault mode.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use support::*;
use switchyard_sim::http::Faults;
use switchyard_sim::profile;

#[tokio::test]
async fn streams_at_the_simulated_pace_with_usage_on_the_final_chunk() {
    let (slow, fast) = (
        start(1.0, Faults::default()).await,
        start(10.0, Faults::default()).await,
    );
    let c = client();
    let n = 20;
    let (events, end) = stream(
        &c,
        format!("{}/v1/chat/completions", slow.url()),
        &chat(n, true),
    )
    .await;
    end.unwrap();
    let payloads: Vec<&str> = events.iter().map(|(_, e)| e.as_str()).collect();
    assert_eq!(payloads.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "m"));
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], n);
    let finish = &chunks[chunks.len() - 2]["choices"][0];
    assert_eq!(finish["finish_reason"], "length");
    // Token chunks: one per token, four characters each.
    let token_times: Vec<Instant> = events
        .iter()
        .zip(&chunks)
        .filter(|(_, c)| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
        .map(|((t, _), _)| *t)
        .collect();
    assert_eq!(token_times.len(), n as usize);
    // The model: n - 1 decode steps between the first and the last token.
    let step = profile::h100_llama3_8b()
        .engine_config()
        .step_time
        .seconds(1, 100);
    let model = step * f64::from(n - 1);
    let gap = (token_times[n as usize - 1] - token_times[0]).as_secs_f64();
    assert!(
        gap >= 0.8 * model,
        "tokens came faster than modelled: {gap} < {model}"
    );
    assert!(
        gap < 4.0 * model + 0.3,
        "tokens came far slower than modelled: {gap} vs {model}"
    );
    // Ten times the time scale: ten times faster (with room for scheduling noise).
    let (events, end) = stream(
        &c,
        format!("{}/v1/chat/completions", fast.url()),
        &chat(n, true),
    )
    .await;
    end.unwrap();
    let fast_gap = (events[events.len() - 3].0 - events[1].0).as_secs_f64();
    assert!(
        fast_gap < gap,
        "time_scale 10 was not faster: {fast_gap} vs {gap}"
    );
}

#[tokio::test]
async fn openai_shapes_models_tokenize_embeddings_and_completions() {
    let r = start(50.0, Faults::default()).await;
    let c = client();
    let a = call(
        &c,
        "POST",
        format!("{}/v1/chat/completions", r.url()),
        &chat(8, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let j = a.json();
    assert_eq!(j["object"], "chat.completion");
    assert_eq!(
        j["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .len(),
        32
    );
    assert_eq!(j["usage"]["completion_tokens"], 8);
    // The same prompt again hits the prefix cache.
    let j = call(
        &c,
        "POST",
        format!("{}/v1/chat/completions", r.url()),
        &chat(8, false),
    )
    .await
    .json();
    assert!(
        j["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{j}"
    );

    let j = call(
        &c,
        "POST",
        format!("{}/v1/completions", r.url()),
        r#"{"model":"m","prompt":"Once upon","max_tokens":3}"#,
    )
    .await
    .json();
    assert_eq!(
        (
            j["object"].as_str(),
            j["choices"][0]["text"].as_str().map(str::len)
        ),
        (Some("text_completion"), Some(12))
    );

    let j = call(&c, "GET", format!("{}/v1/models", r.url()), "")
        .await
        .json();
    assert_eq!(j["data"][0]["id"], "m");
    assert_eq!(j["data"][0]["owned_by"], "vllm");
    assert_eq!(j["data"][0]["max_model_len"], 8192);
    assert!(call(&c, "GET", format!("{}/version", r.url()), "")
        .await
        .json()["version"]
        .is_string());
    assert_eq!(
        call(&c, "GET", format!("{}/health", r.url()), "")
            .await
            .status,
        StatusCode::OK
    );

    let j = call(
        &c,
        "POST",
        format!("{}/tokenize", r.url()),
        r#"{"prompt":"rail yards!"}"#,
    )
    .await
    .json();
    assert_eq!(j["count"], 3);
    let back = call(
        &c,
        "POST",
        format!("{}/detokenize", r.url()),
        &json!({"tokens": j["tokens"]}).to_string(),
    )
    .await
    .json();
    assert_eq!(back["prompt"], "rail yards!");

    let e = call(
        &c,
        "POST",
        format!("{}/v1/embeddings", r.url()),
        r#"{"model":"m","input":["a","b"]}"#,
    )
    .await
    .json();
    assert_eq!(e["data"].as_array().unwrap().len(), 2);
    assert_eq!(e["data"][0]["embedding"].as_array().unwrap().len(), 256);
    let again = call(
        &c,
        "POST",
        format!("{}/v1/embeddings", r.url()),
        r#"{"input":"a"}"#,
    )
    .await
    .json();
    assert_eq!(again["data"][0]["embedding"], e["data"][0]["embedding"]);
}

#[tokio::test]
async fn bad_input_gets_vllm_error_shape_never_a_panic() {
    let r = start(50.0, Faults::default()).await;
    let c = client();
    let url = format!("{}/v1/chat/completions", r.url());
    for (body, status) in [
        ("{not json", 400),
        ("[1,2]", 400),
        (r#"{"messages":[]}"#, 400),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}"#,
            400,
        ),
        (
            r#"{"messages":[{"role":"user","content":"x"}],"max_tokens":9000}"#,
            400,
        ),
        (r#"{"messages":[{"role":"user","content":"x"}],"n":2}"#, 400),
        (
            r#"{"model":"other","messages":[{"role":"user","content":"x"}]}"#,
            404,
        ),
    ] {
        let a = call(&c, "POST", url.clone(), body).await;
        assert_eq!(a.status.as_u16(), status, "{body}");
        let j = a.json();
        assert_eq!(j["object"], "error", "{body}");
        assert_eq!(j["code"], status, "{body}");
        assert!(j["message"].is_string() && j["param"].is_null(), "{body}");
    }
    let j = call(&c, "POST", url.clone(), "{").await.json();
    assert_eq!(j["type"], "BadRequestError");
    assert_eq!(
        call(&c, "GET", url, "").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        call(&c, "GET", format!("{}/nope", r.url()), "")
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let a = call(
        &c,
        "POST",
        format!("{}/admin/faults", r.url()),
        r#"{"error_rate": 3}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn metrics_expose_every_vllm_and_dcgm_name() {
    let r = start(50.0, Faults::default()).await;
    let c = client();
    for _ in 0..2 {
        call(
            &c,
            "POST",
            format!("{}/v1/chat/completions", r.url()),
            &chat(4, false),
        )
        .await;
    }
    let a = call(&c, "GET", format!("{}/metrics", r.url()), "").await;
    let text = std::str::from_utf8(&a.body).unwrap();
    for name in [
        "vllm:num_requests_running{model_name=\"m\"} ",
        "vllm:num_requests_waiting{model_name=\"m\"} ",
        "vllm:kv_cache_usage_perc{model_name=\"m\"} ",
        "# TYPE vllm:prefix_cache_queries counter",
        "vllm:prefix_cache_queries_total{model_name=\"m\"} ",
        "# TYPE vllm:prefix_cache_hits counter",
        "vllm:prefix_cache_hits_total{model_name=\"m\"} ",
        "vllm:cache_config_info{block_size=\"16\",",
        "vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 2",
        "vllm:time_to_first_token_seconds_count{model_name=\"m\"} 2",
        "vllm:e2e_request_latency_seconds_count{model_name=\"m\"} 2",
        "vllm:generation_tokens_total{model_name=\"m\"} 8",
        "DCGM_FI_DEV_GPU_UTIL{",
        "DCGM_FI_DEV_FB_USED{",
        "DCGM_FI_DEV_FB_FREE{",
        "DCGM_FI_DEV_GPU_TEMP{",
    ] {
        assert!(text.contains(name), "missing {name} in\n{text}");
    }
    let hits: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("vllm:prefix_cache_hits_total{model_name=\"m\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(hits > 0.0, "the repeated prompt hit the prefix cache");
    let snap = r.snapshot().await.unwrap();
    assert_eq!(snap.requests_received, 2);
    assert!(snap.ttft.mean().unwrap() > 0.0);
}

#[tokio::test]
async fn error_rate_and_rate_limit_faults() {
    let r = start(
        50.0,
        Faults {
            error_rate: 1.0,
            ..Faults::default()
        },
    )
    .await;
    let c = client();
    let url = format!("{}/v1/chat/completions", r.url());
    let a = call(&c, "POST", url.clone(), &chat(2, false)).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.json()["object"], "error");
    // Switched at run time over HTTP; GET reads it back.
    let a = call(
        &c,
        "POST",
        format!("{}/admin/faults", r.url()),
        r#"{"error_rate":0,"rate_limit":1,"retry_after_s":3}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let f = call(&c, "GET", format!("{}/admin/faults", r.url()), "")
        .await
        .json();
    assert_eq!(
        (f["rate_limit"].as_f64(), f["error_rate"].as_f64()),
        (Some(1.0), Some(0.0))
    );
    let a = call(&c, "POST", url.clone(), &chat(2, false)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers["retry-after"], "3");
    r.set_faults(Faults {
        added_latency_ms: 150,
        ..Faults::default()
    })
    .unwrap();
    let t = Instant::now();
    assert_eq!(
        call(&c, "POST", url, &chat(1, false)).await.status,
        StatusCode::OK
    );
    assert!(t.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn hang_accepts_and_never_answers() {
    let r = start(
        50.0,
        Faults {
            hang: true,
            ..Faults::default()
        },
    )
    .await;
    let c = client();
    let req = Request::post(format!("{}/v1/chat/completions", r.url()))
        .body(Full::new(Bytes::from(chat(2, false))))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_millis(300), c.request(req)).await;
    assert!(res.is_err(), "a hung replica answered");
    // The admin endpoint still answers, and lifts the hang.
    call(
        &c,
        "POST",
        format!("{}/admin/faults", r.url()),
        r#"{"hang":false}"#,
    )
    .await;
    assert_eq!(
        call(&c, "GET", format!("{}/health", r.url()), "")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn drop_after_tokens_cuts_the_stream_without_done() {
    let r = start(
        50.0,
        Faults {
            drop_after_tokens: Some(3),
            ..Faults::default()
        },
    )
    .await;
    let (events, end) = stream(
        &client(),
        format!("{}/v1/chat/completions", r.url()),
        &chat(20, true),
    )
    .await;
    assert!(end.is_err(), "the stream ended cleanly");
    assert!(events.iter().all(|(_, e)| e != "[DONE]"));
    let tokens = events
        .iter()
        .filter(|(_, e)| e.contains("\"content\":\"") && !e.contains("\"content\":\"\""))
        .count();
    assert!((1..=3).contains(&tokens), "{tokens} tokens before the cut");
}

async fn refused(addr: std::net::SocketAddr) -> bool {
    matches!(tokio::net::TcpStream::connect(addr).await, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
}

async fn eventually_refused(addr: std::net::SocketAddr, want: bool) {
    for _ in 0..200 {
        if refused(addr).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("connection refused != {want} within 2 s");
}

#[tokio::test]
async fn crash_refuses_connections_then_restores_on_the_same_port() {
    let r = start(50.0, Faults::default()).await;
    let c = client();
    let addr = r.addr();
    // In process: immediate.
    r.set_faults(Faults {
        crash: true,
        ..Faults::default()
    })
    .unwrap();
    eventually_refused(addr, true).await;
    r.set_faults(Faults::default()).unwrap();
    eventually_refused(addr, false).await;
    assert_eq!(
        call(&client(), "GET", format!("{}/health", r.url()), "")
            .await
            .status,
        StatusCode::OK
    );
    // Over HTTP, with a time to come back by itself.
    let a = call(
        &c,
        "POST",
        format!("{}/admin/faults", r.url()),
        r#"{"crash":true,"crash_for_s":0.3}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    eventually_refused(addr, true).await;
    eventually_refused(addr, false).await;
    let a = call(
        &client(),
        "POST",
        format!("{}/v1/chat/completions", r.url()),
        &chat(2, false),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(!r.faults().crash);
}

#[tokio::test]
async fn not_ready_health_is_503_then_200() {
    let r = start(
        50.0,
        Faults {
            not_ready_for_s: 0.3,
            ..Faults::default()
        },
    )
    .await;
    let c = client();
    let a = call(&c, "GET", format!("{}/health", r.url()), "").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.json()["code"], 503);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        call(&c, "GET", format!("{}/health", r.url()), "")
            .await
            .status,
        StatusCode::OK
    );
}
