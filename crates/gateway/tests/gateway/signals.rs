//! Live signals reach the policy's fleet view: engine and GPU reports scraped from real
//! `switchyard sim` replicas over loopback, tokens in flight and latency averages from real
//! requests, and the debug header that shows a decision.

use crate::support::conf::{Conf, Pool};
use crate::support::{client, eventually, get, post, Gw, Mock, Reply, CHAT};
use serde_json::json;
use std::sync::Arc;
use switchyard_gateway::fleet::ViewBuf;
use switchyard_sim::http::{Replica, ReplicaConfig};
use switchyard_sim::profile;
use tokio::sync::Notify;

/// Boots a gateway on port 0; the test keeps its handle to read its fleet view (dropping it
/// stops the gateway).
async fn boot(conf: Conf) -> (Gw, String) {
    let gw = Gw::with(conf).await;
    let base = gw.url("");
    (gw, base)
}

fn view_of(gw: &Gw) -> Vec<switchyard_core::BackendView> {
    let snap = gw.gateway().snapshot();
    let pool = &snap.pools["m"];
    let mut buf = ViewBuf::new();
    pool.view(&mut buf, snap.now(), snap.config.scrape.max_age)
        .backends
        .to_vec()
}

async fn sim_replica() -> Replica {
    let mut cfg = ReplicaConfig::from_profile(&profile::h100_llama3_8b());
    cfg.model = "m".into();
    cfg.time_scale = 50.0;
    Replica::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn scraped_vllm_and_dcgm_metrics_of_a_sim_replica_reach_the_fleet_view() {
    let replica = sim_replica().await;
    let engine = profile::h100_llama3_8b().engine_config();
    let scrape = json!({"interval": "50ms", "max_age": "5s"});
    let (gw, _) = boot(Conf::over(&[replica.url()]).set("scrape", scrape)).await;
    eventually(|| {
        let v = view_of(&gw);
        v[0].engine.is_some() && v[0].gpu.is_some()
    })
    .await;
    let v = view_of(&gw)[0];
    let e = v.engine.unwrap();
    assert_eq!(
        e.kv_capacity_tokens,
        Some(engine.num_gpu_blocks * engine.block_size),
        "vllm:cache_config_info blocks x block size"
    );
    assert_eq!((e.running, e.waiting), (0, 0));
    let g = v.gpu.unwrap();
    assert!(g.memory_used > 0.0 && g.memory_used <= 1.0, "{g:?}");
}

#[tokio::test]
async fn a_backend_without_metrics_is_seen_without_reports() {
    // The mock answers /metrics with 404, as a server without metrics does.
    let mock = Mock::start(Reply::Json(http::StatusCode::OK, crate::support::OK_BODY)).await;
    let scrape = json!({"interval": "20ms"});
    let (gw, _) = boot(Conf::over(&[mock.url()]).set("scrape", scrape)).await;
    eventually(|| mock.scrapes() >= 1).await;
    let v = view_of(&gw)[0];
    assert_eq!((v.engine, v.gpu), (None, None));
}

#[tokio::test]
async fn metrics_url_none_turns_scraping_off() {
    let off = Mock::start(Reply::Json(http::StatusCode::OK, crate::support::OK_BODY)).await;
    let on = Mock::start(Reply::Json(http::StatusCode::OK, crate::support::OK_BODY)).await;
    let pool = Pool::default()
        .backend(json!({"url": off.url(), "metrics_url": "none"}))
        .backend(json!({"url": on.url()}));
    let conf = Conf::new()
        .model("m", pool)
        .set("scrape", json!({"interval": "10ms"}));
    let (_gw, _) = boot(conf).await;
    // The scraper visits backends in the same round: once the other one was scraped twice,
    // the first would have been too.
    eventually(|| on.scrapes() >= 2).await;
    assert_eq!(off.scrapes(), 0);
}

#[tokio::test]
async fn tokens_in_flight_count_prompt_plus_max_tokens_until_the_response_ends() {
    let release = Arc::new(Notify::new());
    let mock = Mock::start(Reply::HoldUntil(release.clone())).await;
    let conf = Conf::one(json!({"url": mock.url(), "metrics_url": "none"}));
    let (gw, base) = boot(conf).await;
    let body = r#"{"model":"m","max_tokens":100,"messages":[{"role":"user","content":"0123456789abcdef"}]}"#;
    let c = client();
    let url = format!("{base}/v1/chat/completions");
    let pending = tokio::spawn(async move { post(&c, &url, body, &[]).await });
    eventually(|| view_of(&gw)[0].in_flight == 1).await;
    let profile = switchyard_core::RequestProfile::parse(
        switchyard_core::EndpointKind::ChatCompletions,
        body.as_bytes(),
        Default::default(),
    )
    .unwrap();
    let v = view_of(&gw)[0];
    let prompt = u64::from(profile.estimated_input_tokens);
    assert_eq!(v.in_flight_tokens, prompt + 100);
    assert_eq!(
        v.prefill_tokens, prompt,
        "no first byte yet: the prompt waits for prefill"
    );
    release.notify_one();
    let answer = pending.await.unwrap();
    assert_eq!(answer.status, 200);
    eventually(|| view_of(&gw)[0].in_flight_tokens == 0).await;
    assert_eq!(view_of(&gw)[0].prefill_tokens, 0);
    let latency = view_of(&gw)[0].latency;
    assert!(
        latency.ttft_s.is_some() && latency.latency_s.is_some(),
        "{latency:?}"
    );
}

#[tokio::test]
async fn streamed_answers_feed_time_per_output_token() {
    let replica = sim_replica().await;
    let (gw, base) = boot(Conf::over(&[replica.url()])).await;
    let body =
        r#"{"model":"m","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let a = post(&client(), &format!("{base}/v1/chat/completions"), body, &[]).await;
    assert_eq!(a.status, 200);
    eventually(|| view_of(&gw)[0].latency.tpot_s.is_some()).await;
    let l = view_of(&gw)[0].latency;
    assert!(l.tpot_s.unwrap() > 0.0 && l.tpot_s < l.latency_s, "{l:?}");
}

#[tokio::test]
async fn debug_headers_show_the_policy_and_its_reason() {
    let mock = Mock::start(Reply::Json(http::StatusCode::OK, crate::support::OK_BODY)).await;
    let (_gw, base) = boot(Conf::over(&[mock.url()]).set("debug_headers", true)).await;
    let a = post(&client(), &format!("{base}/v1/chat/completions"), CHAT, &[]).await;
    let route = a.headers["x-switchyard-route"].to_str().unwrap();
    assert!(
        route.starts_with("round_robin; round_robin: next in rotation"),
        "{route}"
    );

    let (_gw, base) = boot(Conf::over(&[mock.url()])).await;
    let a = post(&client(), &format!("{base}/v1/chat/completions"), CHAT, &[]).await;
    assert!(
        a.headers.get("x-switchyard-route").is_none(),
        "off by default"
    );
}

#[tokio::test]
async fn prefill_tokens_clear_at_the_first_byte_while_the_stream_goes_on() {
    let gate = Arc::new(Notify::new());
    let mock = Mock::start(Reply::Sse {
        chunks: vec!["data: {\"choices\":[]}\n\n", "data: [DONE]\n\n"],
        gate: Some(gate.clone()),
    })
    .await;
    let (gw, base) = boot(Conf::over(&[mock.url()]).no_scrape()).await;
    let body = r#"{"model":"m","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"0123456789abcdef"}]}"#;
    let url = format!("{base}/v1/chat/completions");
    let pending = tokio::spawn(async move { post(&client(), &url, body, &[]).await });
    // The first chunk has passed the relay; the rest waits on the gate.
    eventually(|| {
        let v = view_of(&gw)[0];
        v.in_flight == 1 && v.latency.ttft_s.is_some()
    })
    .await;
    let v = view_of(&gw)[0];
    assert_eq!(v.prefill_tokens, 0, "past its first byte");
    assert!(v.in_flight_tokens > 10, "still holding its KV: {v:?}");
    gate.notify_one();
    assert_eq!(pending.await.unwrap().status, 200);
}

#[tokio::test]
async fn a_simulated_replica_s_first_byte_is_its_first_token() {
    // Real time and a slow prefill (2 ms per prompt token): ~0.3 s to the first token.
    let mut cfg = ReplicaConfig::from_profile(&profile::h100_llama3_8b());
    cfg.model = "m".into();
    cfg.engine.step_time = switchyard_sim::StepTime {
        base_s: 1e-3,
        per_token_s: 2e-3,
        per_context_token_s: 0.0,
    };
    let replica = Replica::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (gw, base) = boot(Conf::over(&[replica.url()]).no_scrape()).await;
    let body = format!(
        r#"{{"model":"m","max_tokens":4,"stream":true,"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(600)
    );
    let a = post(
        &client(),
        &format!("{base}/v1/chat/completions"),
        &body,
        &[],
    )
    .await;
    assert_eq!(a.status, 200);
    let ttft = replica.snapshot().await.unwrap().ttft.mean().unwrap();
    assert!(ttft > 0.3, "simulated TTFT {ttft}");
    // Time scale 1: the replica cannot send its first token before `ttft` has passed, so
    // every first-byte signal of the gateway is at least that.
    let m = get(&client(), &format!("{base}/metrics")).await;
    let ttfb = crate::support::sim::sample(
        std::str::from_utf8(&m.body).unwrap(),
        r#"switchyard_time_to_first_byte_seconds_sum{backend="b0",model="m"}"#,
    );
    assert!(ttfb >= ttft, "time to first byte {ttfb} s < TTFT {ttft} s");
    // (The view keeps an f32.)
    let seen = f64::from(view_of(&gw)[0].latency.ttft_s.unwrap());
    assert!(
        seen >= ttft * 0.999,
        "the policy's TTFT {seen} s < TTFT {ttft} s"
    );
}
