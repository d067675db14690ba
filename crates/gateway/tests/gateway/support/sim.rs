//! Simulated vLLM replicas (`switchyard-sim`) for the resilience tests: real sockets, real
//! engines at a fast time scale, and fault injection through `POST /admin/faults`.

use super::*;
use switchyard_sim::http::{Faults, Replica, ReplicaConfig};

/// A replica serving model `m`, `time_scale` times faster than the modelled H100.
pub async fn replica(time_scale: f64, seed: u64) -> Replica {
    let mut cfg = ReplicaConfig::from_profile(&switchyard_sim::profile::h100_llama3_8b());
    cfg.model = "m".into();
    cfg.time_scale = time_scale;
    cfg.seed = seed;
    cfg.faults = Faults::default();
    Replica::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Sets faults the way an operator would: `POST /admin/faults` with a JSON patch.
pub async fn faults(r: &Replica, patch: &str) {
    let a = post(&client(), &format!("{}/admin/faults", r.url()), patch, &[]).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
}

/// A chat request for `max_tokens` tokens, streamed or not.
pub fn chat(max_tokens: u32, stream: bool) -> String {
    format!(
        r#"{{"model":"m","max_tokens":{max_tokens},"stream":{stream},"messages":[{{"role":"user","content":"hello"}}]}}"#
    )
}

/// The gateway's metrics text.
pub async fn metrics(gw: &Gw) -> String {
    String::from_utf8(get(&client(), &gw.url("/metrics")).await.body.to_vec()).unwrap()
}

/// The value of one metric sample (exact name and labels as rendered), 0 when absent.
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// `x-switchyard-attempts` of an answer.
pub fn attempts(a: &Answer) -> u32 {
    a.headers["x-switchyard-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Waits (polling, bounded at 10 s) until `cond` holds on the gateway's metrics.
pub async fn until_metrics(gw: &Gw, what: &str, mut cond: impl FnMut(&str) -> bool) -> String {
    for _ in 0..500 {
        let m = metrics(gw).await;
        if cond(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("metrics never showed: {what}");
}

/// The content pieces of an SSE chat stream, and the error event's code if it ended with one.
pub fn stream_pieces(body: &[u8]) -> (Vec<String>, Option<String>, bool) {
    let text = String::from_utf8_lossy(body);
    let mut pieces = Vec::new();
    let mut error = None;
    let mut done = false;
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        let data = event.strip_prefix("data: ").expect("an SSE data event");
        if data == "[DONE]" {
            done = true;
            continue;
        }
        assert!(!done, "nothing may follow [DONE]: {text}");
        let v: serde_json::Value = serde_json::from_str(data).expect("each event is JSON");
        if let Some(code) = v["error"]["code"].as_str() {
            error = Some(code.to_owned());
        } else if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            // The role chunk and the closing chunk carry empty content; tokens do not.
            if !c.is_empty() {
                pieces.push(c.to_owned());
            }
        }
    }
    (pieces, error, done)
}
