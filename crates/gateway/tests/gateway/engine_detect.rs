//! Engine detection against real sockets: simulated vLLM and llama.cpp replicas and a server
//! that answers none of the engines' endpoints, detected on start and when added through the
//! admin API, shown in `/admin/backends` and turned into each backend's cache model.

use crate::admin_support::*;
use crate::support::conf::{Conf, Pool};
use crate::support::*;
use http::StatusCode;
use serde_json::json;
use std::time::Duration;
use switchyard_core::CacheModel;
use switchyard_gateway::fleet::ViewBuf;
use switchyard_sim::http::{Replica, ReplicaConfig};

async fn replica(slots: Option<u32>) -> Replica {
    let mut cfg = ReplicaConfig::from_profile(&switchyard_sim::profile::h100_llama3_8b());
    cfg.model = "m".into();
    cfg.time_scale = 50.0;
    if let Some(n) = slots {
        cfg.engine = cfg.engine.in_slot_mode(n);
    }
    Replica::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// `/admin/backends`' `engine` of each named backend, polled (bounded at 10 s) until every
/// one is known.
async fn engines(gw: &FileGw, names: &[&str]) -> Vec<serde_json::Value> {
    let c = client();
    for _ in 0..200 {
        let list = admin(&c, "GET", &gw.admin_url("/admin/backends"), "")
            .await
            .json();
        let found: Vec<serde_json::Value> = names
            .iter()
            .map(|n| backend_in(&list, "m", n)["engine"].clone())
            .collect();
        if found.iter().all(|e| !e.is_null()) {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("engines of {names:?} not detected within 10 s");
}

fn cache_models(gw: &FileGw) -> Vec<CacheModel> {
    let snap = gw.gw.snapshot();
    let mut buf = ViewBuf::new();
    snap.pools["m"]
        .view(&mut buf, snap.now(), snap.config.scrape.max_age)
        .backends
        .iter()
        .map(|b| b.cache)
        .collect()
}

#[tokio::test]
async fn engines_are_detected_on_start_and_on_add_and_set_the_cache_model() {
    let vllm = replica(None).await;
    let llama = replica(Some(2)).await;
    // An http server that answers no probe: not nameable, so routed as a paged cache (a
    // hosted API is one reached over https, or one set as `engine: hosted`).
    let hosted = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let file = TempConfig::new(&admin_config(
        &[vllm.url(), llama.url(), hosted.url()],
        "policy: prefix_aware",
    ));
    let gw = FileGw::start(&file).await;
    let found = engines(&gw, &["b0", "b1", "b2"]).await;
    let kinds: Vec<&str> = found.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["vllm", "llamacpp", "other"]);
    assert!(found.iter().all(|e| e["source"] == "detected"));
    assert_eq!(found[1]["slots"], 2);
    let n_ctx = found[1]["ctx_tokens"].as_u64().unwrap() as u32;
    assert!(n_ctx >= 4096, "{n_ctx}");
    assert_eq!(
        cache_models(&gw),
        [
            CacheModel::Paged,
            CacheModel::Slots {
                slots: 2,
                ctx_tokens: n_ctx
            },
            CacheModel::Paged
        ]
    );
    // The probes never reached the hosted mock's inference path.
    assert_eq!(hosted.count(), 0);

    // A llama.cpp replica added at run time is detected too.
    let added = replica(Some(1)).await;
    let c = client();
    let body = format!(r#"{{"url": "{}", "name": "added"}}"#, added.url());
    let a = admin(&c, "POST", &gw.admin_url("/admin/backends?model=m"), &body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{:?}", a.body);
    let found = engines(&gw, &["added"]).await;
    assert_eq!(
        (found[0]["kind"].clone(), found[0]["slots"].clone()),
        ("llamacpp".into(), 1.into())
    );
}

#[tokio::test]
async fn config_overrides_the_engine_kind() {
    let vllm = replica(None).await;
    let llama = replica(Some(3)).await;
    let text = format!(
        "admin: {{token: {TOKEN}}}\nmodels:\n  m:\n    backends:\n      - {{url: \"{}\", name: b0, engine: hosted}}\n      - {{url: \"{}\", name: b1, engine: llamacpp}}\n      - {{url: \"{}\", name: b2, engine: sglang, metrics_url: none}}\n",
        vllm.url(),
        llama.url(),
        vllm.url()
    );
    let file = TempConfig::new(&text);
    let gw = FileGw::start(&file).await;
    let found = engines(&gw, &["b0", "b1", "b2"]).await;
    let kinds: Vec<&str> = found.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["hosted", "llamacpp", "sglang"]);
    assert!(found.iter().all(|e| e["source"] == "config"));
    // A configured llama.cpp still reads its slots from /props.
    for _ in 0..200 {
        if engines(&gw, &["b1"]).await[0]["slots"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(engines(&gw, &["b1"]).await[0]["slots"], 3);
    assert_eq!(cache_models(&gw)[0], CacheModel::Opaque);
}

#[test]
fn an_unknown_engine_name_is_refused_with_the_known_ones() {
    let e = switchyard_gateway::config::parse(
        "models:\n  m:\n    backends:\n      - {url: \"http://127.0.0.1:1\", engine: ollama}\n",
        "t.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("llamacpp") && e.contains("ollama"), "{e}");
}

/// The JSON body the mock upstream last received.
fn last_body(up: &Mock) -> serde_json::Value {
    serde_json::from_slice(&up.last().body).expect("a JSON body upstream")
}

/// A chat request about document `doc` (about 600 tokens) with question `q`.
fn about(doc: u32, q: u32) -> String {
    let text: String = (0..2400u32)
        .map(|i| char::from(b'a' + ((i * 31 + doc * 7919) % 26) as u8))
        .collect();
    format!(
        r#"{{"model":"m","messages":[{{"role":"system","content":"{text}"}},{{"role":"user","content":"question {q}"}}]}}"#
    )
}

#[tokio::test]
async fn with_a_slot_wait_a_llamacpp_request_names_the_slot_holding_its_document() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let pool = Pool::default()
        .set(
            "policy",
            json!({"name": "prefix_aware", "slot_wait": "10s"}),
        )
        .backend(json!({"url": up.url(), "name": "b0", "engine": "llamacpp"}));
    let gw = Gw::with(Conf::new().model("m", pool)).await;
    // The configured kind takes effect with the first probe.
    for _ in 0..200 {
        let snap = gw.gateway().snapshot();
        let mut buf = ViewBuf::new();
        let view = snap.pools["m"].view(&mut buf, snap.now(), snap.config.scrape.max_age);
        if matches!(view.backends[0].cache, CacheModel::Slots { .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let mut sent = Vec::new();
    for body in [about(1, 1), about(2, 2), about(1, 3), about(2, 4)] {
        assert_eq!(post(&c, &url, &body, &[]).await.status, 200);
        sent.push(last_body(&up)["id_slot"].clone());
    }
    // No slot held a document at first; then each goes back to the slot that holds it.
    assert!(sent[0].is_null() && sent[1].is_null(), "{sent:?}");
    assert!(sent[2].is_u64() && sent[3].is_u64(), "{sent:?}");
    assert_ne!(sent[2], sent[3]);
    // The body is otherwise the client's, and a client's own `id_slot` stands.
    assert_eq!(last_body(&up)["messages"][1]["content"], "question 4");
    let own = about(1, 5).replacen('{', r#"{"id_slot":7,"#, 1);
    assert_eq!(post(&c, &url, &own, &[]).await.status, 200);
    assert_eq!(last_body(&up)["id_slot"], 7);
}
