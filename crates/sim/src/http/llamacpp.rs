//! The llama.cpp face of a replica in slot mode ([`crate::slots`]): `GET /props` with the
//! server's slots and per-slot context, and `GET /metrics` with `llama-server`'s metric names,
//! so a gateway detects and scrapes it as it would a real `llama-server -np N --metrics`.
//!
//! As llama.cpp counts them, `llamacpp:prompt_tokens_total` excludes the prompt tokens reused
//! from a slot, which `llamacpp:prompt_tokens_cached_total` counts.

use http::{header, Response, StatusCode};
use http_body_util::{Either, Full};
use std::fmt::Write;

use super::driver::Snapshot;
use super::openai::json_response;
use super::server::{Shared, SimBody};
use crate::slots::SlotMode;

/// `GET /props`: what `llama-server` reports of itself that a router reads.
pub fn props(shared: &Shared, mode: SlotMode) -> Response<SimBody> {
    let body = serde_json::json!({
        "default_generation_settings": {"n_ctx": shared.max_model_len, "params": {}},
        "total_slots": mode.slots,
        "model_alias": shared.model,
        "model_path": format!("{}.gguf", shared.model),
        "build_info": concat!("switchyard-sim ", env!("CARGO_PKG_VERSION")),
        "endpoint_slots": false,
        "endpoint_props": false,
        "endpoint_metrics": true,
    });
    json_response(StatusCode::OK, body.to_string())
}

/// `llama-server`'s `/metrics` text for a snapshot.
pub fn render(s: &Snapshot) -> String {
    let m = &s.engine;
    let processed = m.prompt_tokens_total.saturating_sub(m.prefix_cache_hits);
    let mut out = String::with_capacity(2048);
    let lines: [(&str, &str, &str, f64); 6] = [
        (
            "prompt_tokens_total",
            "counter",
            "Number of prompt tokens processed, excluding cached tokens",
            processed as f64,
        ),
        (
            "prompt_tokens_cached_total",
            "counter",
            "Number of prompt tokens reused from the cache",
            m.prefix_cache_hits as f64,
        ),
        (
            "tokens_predicted_total",
            "counter",
            "Number of generation tokens processed.",
            m.generation_tokens_total as f64,
        ),
        (
            "n_decode_total",
            "counter",
            "Total number of llama_decode() calls",
            m.steps_total as f64,
        ),
        (
            "requests_processing",
            "gauge",
            "Number of requests processing.",
            f64::from(m.num_running),
        ),
        (
            "requests_deferred",
            "gauge",
            "Number of requests deferred.",
            f64::from(m.num_waiting),
        ),
    ];
    for (name, kind, help, v) in lines {
        let _ = writeln!(out, "# HELP llamacpp:{name} {help}");
        let _ = writeln!(out, "# TYPE llamacpp:{name} {kind}");
        let _ = writeln!(out, "llamacpp:{name} {v}");
    }
    out
}

/// [`render`] as a response.
pub fn metrics_response(s: &Snapshot) -> Response<SimBody> {
    let mut r = Response::new(Either::Left(Full::new(bytes::Bytes::from(render(s)))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
