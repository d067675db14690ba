//! Engine detection: on start, and for every backend added later (a reload, the admin API),
//! the gateway asks each backend which engine it runs and keeps the answer in its
//! [`EngineCell`](crate::engine_kind::EngineCell), which `/admin/backends` shows and routing
//! turns into a cache model.
//!
//! Probes, in order, each a `GET` under the backend's URL, the first that answers in its
//! engine's shape deciding:
//!
//! | probe | engine | what identifies it |
//! |---|---|---|
//! | `/props` | llama.cpp | `total_slots` (and `default_generation_settings.n_ctx`) |
//! | `/get_server_info` | SGLang | `max_total_num_tokens`, or `tp_size` with `model_path` |
//! | `/info` | TGI | `model_id` with `max_total_tokens`, `max_input_tokens` or `router` |
//! | `/version` | vLLM | `version` |
//! | the metrics URL | any | metric names starting `vllm:`, `sglang:`, `llamacpp:` or `tgi_` |
//!
//! A backend that answers every probe, but none in an engine's shape, is a hosted API (or an
//! OpenAI-compatible server whose cache is not ours to predict). A backend that cannot be
//! reached, or answers 5xx (a llama.cpp still loading its model answers 503), is tried again
//! with exponential backoff up to [`super::MAX_BACKOFF`]. A backend whose config sets `engine:`
//! is not probed, except a llama.cpp one, for its slots; nor is one whose `metrics_url` is
//! `none`, nor any when `scrape: {enabled: false}`: those keep their configured kind, or are
//! routed as before (a paged cache) without one.

use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{fetch, Fetched};
use crate::clock;
use crate::engine_kind::{EngineInfo, EngineKind, KindSource};
use crate::fleet::Backend;
use crate::forward::UpstreamClient;
use crate::gateway::Snapshot;

/// Time between two passes over the backends still to detect.
const PASS_INTERVAL: Duration = Duration::from_secs(1);

/// The probe paths, in order.
const PROBES: [&str; 4] = ["/props", "/get_server_info", "/info", "/version"];

/// What one probe's `200 OK` body says of the engine, if it is in an engine's shape.
pub fn classify(path: &str, body: &[u8]) -> Option<EngineInfo> {
    let detected = |kind| EngineInfo {
        source: KindSource::Detected,
        ..EngineInfo::configured(kind)
    };
    if !matches!(path, "/props" | "/get_server_info" | "/info" | "/version") {
        return metric_family(&String::from_utf8_lossy(body)).map(detected);
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    let has = |k: &str| obj.contains_key(k);
    match path {
        "/props" => {
            let slots = obj.get("total_slots")?.as_u64()?;
            let ctx = obj
                .get("default_generation_settings")
                .and_then(|s| s.get("n_ctx"))
                .and_then(Value::as_u64);
            Some(EngineInfo {
                slots: u32::try_from(slots).ok(),
                ctx_tokens: ctx.and_then(|c| u32::try_from(c).ok()),
                ..detected(EngineKind::Llamacpp)
            })
        }
        "/get_server_info" => (has("max_total_num_tokens")
            || (has("tp_size") && has("model_path")))
        .then(|| detected(EngineKind::Sglang)),
        "/info" => (has("model_id")
            && (has("max_total_tokens") || has("max_input_tokens") || has("router")))
        .then(|| detected(EngineKind::Tgi)),
        _ => obj
            .get("version")
            .is_some_and(Value::is_string)
            .then(|| detected(EngineKind::Vllm)),
    }
}

/// The engine whose metric names a Prometheus page carries, if any.
pub fn metric_family(page: &str) -> Option<EngineKind> {
    page.lines()
        .map(str::trim_start)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            [
                ("vllm:", EngineKind::Vllm),
                ("sglang:", EngineKind::Sglang),
                ("llamacpp:", EngineKind::Llamacpp),
                ("tgi_", EngineKind::Tgi),
            ]
            .into_iter()
            .find(|(prefix, _)| l.starts_with(prefix))
            .map(|(_, k)| k)
        })
}

/// How a detection attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Known (possibly still incomplete, as a llama.cpp without `/props`).
    Known(EngineInfo),
    /// Unreachable or not ready: try again later.
    Retry,
}

/// Probes one backend. `configured` is its `engine:` setting.
async fn detect(
    client: &UpstreamClient,
    backend: &Backend,
    configured: Option<EngineKind>,
    timeout: Duration,
) -> Outcome {
    let mut paths: Vec<(Option<http::Uri>, &str)> = match configured {
        Some(EngineKind::Llamacpp) => vec![(backend.uri("/props").ok(), "/props")],
        Some(k) => return Outcome::Known(EngineInfo::configured(k)),
        None => PROBES.iter().map(|p| (backend.uri(p).ok(), *p)).collect(),
    };
    if configured.is_none() {
        paths.push((backend.config.metrics_uri.clone(), "metrics"));
    }
    let mut not_ready = false;
    for (uri, path) in paths {
        let Some(uri) = uri else { continue };
        match fetch(client, &uri, backend.authorization.as_ref(), timeout).await {
            Fetched::Unreachable => return Outcome::Retry,
            Fetched::Status(s) => not_ready |= s.is_server_error(),
            Fetched::Ok(body) => {
                if let Some(mut info) = classify(path, &body) {
                    if configured.is_some() {
                        info.source = KindSource::Config;
                    }
                    return Outcome::Known(info);
                }
            }
        }
    }
    match configured {
        // The kind is known; its slots are not yet.
        Some(k) => Outcome::Known(EngineInfo::configured(k)),
        None if not_ready => Outcome::Retry,
        // Nothing answered: a hosted API when it is reached over TLS, else a self-hosted
        // server detection cannot name, which keeps today's paged-cache routing.
        None => Outcome::Known(EngineInfo {
            source: KindSource::Detected,
            ..EngineInfo::configured(if backend.config.scheme == http::uri::Scheme::HTTPS {
                EngineKind::Hosted
            } else {
                EngineKind::Other
            })
        }),
    }
}

/// Failures of one backend, for backoff.
#[derive(Debug, Default, Clone, Copy)]
struct Backoff {
    failures: u32,
    next_try: Duration,
}

/// Detects every backend of the current config that is not yet known, one pass a second,
/// until the task is aborted (with its [`super::Scraper`]).
pub(super) async fn run(mut snapshots: watch::Receiver<Arc<Snapshot>>) {
    // Keyed by the backend's live state, which a reload keeps for a kept backend.
    let mut backoff: HashMap<usize, Backoff> = HashMap::new();
    loop {
        let snap = snapshots.borrow_and_update().clone();
        let next_pass = tokio::time::Instant::now() + PASS_INTERVAL;
        let timeout = snap.config.scrape.timeout;
        let now = clock::now();
        let mut pass = JoinSet::new();
        let mut seen = Vec::new();
        for pool in snap.pools.values() {
            for (i, b) in pool.backends.iter().enumerate() {
                let key = Arc::as_ptr(&b.state) as usize;
                seen.push(key);
                let probe = b.config.probe && snap.config.scrape.enabled;
                let known = b.state.engine.get();
                // Not to be polled: only its configured kind, once.
                let settled = !probe && (b.config.engine.is_none() || known.is_some());
                if settled
                    || known.is_some_and(|e| e.complete())
                    || backoff.get(&key).is_some_and(|s| s.next_try > now)
                {
                    continue;
                }
                let (snap, name) = (snap.clone(), pool.name.clone());
                pass.spawn(async move {
                    let Some(b) = snap.pools.get(&name).and_then(|p| p.backends.get(i)) else {
                        return (key, false);
                    };
                    let configured = b.config.engine;
                    let outcome = if probe {
                        detect(&snap.client, b, configured, timeout).await
                    } else {
                        configured.map_or(Outcome::Retry, |k| {
                            Outcome::Known(EngineInfo::configured(k))
                        })
                    };
                    match outcome {
                        Outcome::Known(info) => {
                            if b.state.engine.get() != Some(info) {
                                tracing::info!(backend = %b.name(), engine = info.kind.name(), slots = ?info.slots, "engine detected");
                            }
                            b.state.engine.set(info);
                            (key, info.complete())
                        }
                        Outcome::Retry => (key, false),
                    }
                });
            }
        }
        backoff.retain(|k, _| seen.contains(k));
        drop(snap);
        while let Some(joined) = pass.join_next().await {
            let Ok((key, done)) = joined else { continue };
            if done {
                backoff.remove(&key);
            } else {
                let b = backoff.entry(key).or_default();
                b.failures = b.failures.saturating_add(1);
                let wait = PASS_INTERVAL
                    .saturating_mul(1 << b.failures.min(16))
                    .min(super::MAX_BACKOFF);
                b.next_try = clock::now() + wait;
            }
        }
        if !super::until_due_or_changed(next_pass, &mut snapshots).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn llamacpp_props_give_slots_and_context() {
        let props = r#"{"default_generation_settings":{"n_ctx":4096,"params":{}},
            "total_slots":2,"model_alias":"smollm2","build_info":"b1"}"#;
        let info = classify("/props", &b(props)).unwrap();
        assert_eq!(info.kind, EngineKind::Llamacpp);
        assert_eq!((info.slots, info.ctx_tokens), (Some(2), Some(4096)));
        assert_eq!(info.source, KindSource::Detected);
        // Without n_ctx the slots still count; without total_slots it is not llama.cpp.
        let info = classify("/props", &b(r#"{"total_slots":4}"#)).unwrap();
        assert_eq!((info.slots, info.ctx_tokens), (Some(4), None));
        assert!(classify("/props", &b(r#"{"slots":4}"#)).is_none());
    }

    #[test]
    fn sglang_tgi_and_vllm_answers_are_told_apart() {
        let sglang = r#"{"model_path":"m","tp_size":1,"max_total_num_tokens":100000}"#;
        assert_eq!(
            classify("/get_server_info", &b(sglang)).unwrap().kind,
            EngineKind::Sglang
        );
        let tgi = r#"{"model_id":"m","max_total_tokens":4096,"router":"text-generation-router"}"#;
        assert_eq!(classify("/info", &b(tgi)).unwrap().kind, EngineKind::Tgi);
        assert_eq!(
            classify("/version", &b(r#"{"version":"0.11.0"}"#))
                .unwrap()
                .kind,
            EngineKind::Vllm
        );
        // Other JSON on those paths (a hosted API's 200 page, an error object) decides nothing.
        for path in PROBES {
            for body in [
                r#"{"error":"not found"}"#,
                "[]",
                "<html>",
                "",
                r#"{"version":3}"#,
            ] {
                assert!(classify(path, &b(body)).is_none(), "{path} {body}");
            }
        }
    }

    #[test]
    fn metric_names_name_the_engine() {
        let page =
            "# HELP vllm:num_requests_running x\nvllm:num_requests_running{model_name=\"m\"} 1\n";
        assert_eq!(metric_family(page), Some(EngineKind::Vllm));
        assert_eq!(
            metric_family("llamacpp:requests_processing 0\n"),
            Some(EngineKind::Llamacpp)
        );
        assert_eq!(
            metric_family("sglang:num_running_reqs 0\n"),
            Some(EngineKind::Sglang)
        );
        assert_eq!(metric_family("tgi_queue_size 0\n"), Some(EngineKind::Tgi));
        assert_eq!(
            metric_family("# only vllm: in a comment\nprocess_cpu 1\n"),
            None
        );
        let info = classify("metrics", &b("sglang:token_usage 0.1\n")).unwrap();
        assert_eq!(info.kind, EngineKind::Sglang);
    }
}
