//! A replica in llama.cpp-like slot mode over real loopback sockets: it answers `/props` and
//! `llamacpp:` metrics as `llama-server` does, and keeps one prompt per slot.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::time::Duration;
use switchyard_sim::http::{Replica, ReplicaConfig};
use switchyard_sim::profile;

type C = Client<HttpConnector, Full<Bytes>>;

async fn call(c: &C, method: &str, url: String, body: String) -> (StatusCode, Bytes) {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let fut = async {
        let resp = c.request(req).await.expect("replica answered");
        let status = resp.status();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("answered within 10 s")
}

/// The value of an unlabelled sample on a metrics page.
fn sample(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{page}"))
}

/// A document of about 400 tokens, named by `seed`.
fn document(seed: u32) -> String {
    (0..400)
        .map(|i| format!("w{}x ", (i * 7 + seed * 131) % 997))
        .collect()
}

#[tokio::test]
async fn slot_mode_answers_like_llama_server_and_keeps_one_prompt_per_slot() {
    let mut cfg = ReplicaConfig::from_profile(&profile::h100_llama3_8b());
    cfg.engine = cfg.engine.in_slot_mode(1);
    cfg.model = "m".into();
    cfg.time_scale = 50.0;
    let r = Replica::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c: C = Client::builder(TokioExecutor::new()).build_http();

    let (status, body) = call(&c, "GET", format!("{}/props", r.url()), String::new()).await;
    assert_eq!(status, StatusCode::OK);
    let props: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(props["total_slots"], 1);
    assert!(
        props["default_generation_settings"]["n_ctx"]
            .as_u64()
            .unwrap()
            >= 4096
    );

    let ask = |doc: u32, q: u32| {
        json!({"model": "m", "max_tokens": 2, "messages": [
            {"role": "system", "content": document(doc)},
            {"role": "user", "content": format!("question {q}?")},
        ]})
        .to_string()
    };
    let mut cached = Vec::new();
    for (doc, q) in [(1, 1), (1, 2), (2, 3), (1, 4)] {
        let before = call(&c, "GET", format!("{}/metrics", r.url()), String::new()).await;
        let page = String::from_utf8_lossy(&before.1).into_owned();
        let (status, _) = call(
            &c,
            "POST",
            format!("{}/v1/chat/completions", r.url()),
            ask(doc, q),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let after = call(&c, "GET", format!("{}/metrics", r.url()), String::new()).await;
        let page2 = String::from_utf8_lossy(&after.1).into_owned();
        let name = "llamacpp:prompt_tokens_cached_total";
        cached.push(sample(&page2, name) - sample(&page, name));
    }
    // The same document again reuses the slot; after another document took the only slot,
    // it is computed again (but for the few template tokens every prompt starts with).
    assert_eq!(cached[0], 0.0);
    assert!(cached[1] > 300.0, "{cached:?}");
    assert!(cached[2] < 10.0 && cached[3] < 10.0, "{cached:?}");

    let (_, page) = call(&c, "GET", format!("{}/metrics", r.url()), String::new()).await;
    let page = String::from_utf8_lossy(&page).into_owned();
    assert_eq!(sample(&page, "llamacpp:requests_processing"), 0.0);
    assert_eq!(sample(&page, "llamacpp:requests_deferred"), 0.0);
    assert!(sample(&page, "llamacpp:prompt_tokens_total") > 1000.0);
    assert!(
        !page.contains("vllm:"),
        "a llama.cpp server has no vLLM metrics"
    );
}

#[tokio::test]
async fn a_vllm_replica_has_no_props() {
    let mut cfg = ReplicaConfig::from_profile(&profile::h100_llama3_8b());
    cfg.model = "m".into();
    let r = Replica::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c: C = Client::builder(TokioExecutor::new()).build_http();
    let (status, _) = call(&c, "GET", format!("{}/props", r.url()), String::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
