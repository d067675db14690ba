//! `switchyard bench replay`: plays a trace ([`crate::trace`]) in real time against an
//! OpenAI-compatible endpoint, open loop: request `i` is sent at its arrival time divided by
//! the time scale, whether or not earlier requests have finished. Every request is a streaming
//! `POST /v1/chat/completions` with the trace's session, tenant and priority as `x-session-id`,
//! `x-tenant` and `x-priority` headers; the replay measures time to first token (the first
//! body frame carrying non-empty `content` or `text`: engines send a role-only chunk first,
//! which is not a token), end-to-end time and errors (connection failures, non-2xx answers,
//! SSE error events, timeouts).

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::time::Instant;

use crate::stats::{goodput, Goodput, Percentiles};
use crate::trace::TraceRecord;

/// How to replay.
#[derive(Debug, Clone)]
pub struct ReplayConfig {
    /// Base URL of the endpoint, e.g. `http://127.0.0.1:8080` (a trailing `/v1` is fine).
    pub target: String,
    /// The `model` field sent.
    pub model: String,
    /// Trace seconds per wall second (2 replays twice as fast).
    pub time_scale: f64,
    /// A request taking longer than this is counted as an error.
    pub request_timeout: Duration,
    /// Bearer token to send, if any.
    pub api_key: Option<String>,
    /// Bearer token per tenant or priority label of the trace (`team-a` -> its key): a
    /// request sends its tenant's key, else its priority's, else `api_key`.
    pub keys: Vec<(String, String)>,
    /// TTFT SLO for goodput, s (wall time).
    pub slo_ttft_s: f64,
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Position in the trace.
    pub index: usize,
    /// How late it was sent against its schedule, s (the replay's own fidelity).
    pub send_lag_s: f64,
    /// Time to first token, s.
    pub ttft_s: Option<f64>,
    /// Time to the end of the answer, s.
    pub e2e_s: Option<f64>,
    /// HTTP status, if one came.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Its tenant, else its priority label, from the trace.
    pub group: Option<String>,
}

/// A replay's summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// The endpoint.
    pub target: String,
    /// Requests sent.
    pub requests: usize,
    /// Requests answered 2xx with a whole stream.
    pub ok: usize,
    /// Failed requests, by reason (`status 503`, `connect`, `timeout`, `stream error`...).
    pub errors: Vec<(String, usize)>,
    /// TTFT of ok requests, s.
    pub ttft: Option<Percentiles>,
    /// End-to-end time of ok requests, s.
    pub e2e: Option<Percentiles>,
    /// Goodput under `slo_ttft_s`.
    pub goodput: Goodput,
    /// Send lag percentiles, s: near zero means the schedule was kept (open loop held).
    pub send_lag: Option<Percentiles>,
    /// Wall time of the replay, s.
    pub wall_s: f64,
    /// Per tenant (or priority label), when the trace has them.
    pub groups: Vec<GroupSummary>,
}

/// TTFT and goodput of one tenant's or priority's requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupSummary {
    /// The tenant or priority label.
    pub group: String,
    /// Requests sent.
    pub requests: usize,
    /// Answered 2xx whole.
    pub ok: usize,
    /// TTFT of its ok requests, s.
    pub ttft: Option<Percentiles>,
    /// Share of its requests with TTFT within the SLO.
    pub goodput: f64,
}

/// A replay that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The target is not an `http://host:port` URL.
    #[error("target '{0}' is not an http:// URL (e.g. http://127.0.0.1:8080)")]
    BadTarget(String),
    /// The time scale is not a positive number.
    #[error("--time-scale must be a positive number, got {0}")]
    BadScale(f64),
}

fn endpoint(target: &str) -> Result<Uri, ReplayError> {
    let base = target.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    let uri: Uri = format!("{base}/v1/chat/completions")
        .parse()
        .map_err(|_| ReplayError::BadTarget(target.into()))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(ReplayError::BadTarget(target.into()));
    }
    Ok(uri)
}

fn body(rec: &TraceRecord, model: &str) -> Bytes {
    let v = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": rec.prompt_text()}],
        "max_tokens": rec.max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    Bytes::from(v.to_string())
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Whether an SSE frame carries generated text: a `"content"` or `"text"` string that is not
/// empty (a chunk may be split across frames; then the token is seen one frame later).
fn has_token(d: &[u8]) -> bool {
    const KEYS: [&[u8]; 4] = [
        b"\"content\":\"",
        b"\"content\": \"",
        b"\"text\":\"",
        b"\"text\": \"",
    ];
    KEYS.iter().any(|k| {
        d.windows(k.len())
            .enumerate()
            .any(|(i, w)| w == *k && d.get(i + k.len()).is_some_and(|&c| c != b'"'))
    })
}

async fn send(
    client: HttpClient,
    uri: Uri,
    rec: TraceRecord,
    body: Bytes,
    api_key: Option<String>,
    timeout: Duration,
) -> (Option<f64>, Option<f64>, Option<u16>, Option<String>) {
    let start = Instant::now();
    let mut b = Request::post(uri).header(http::header::CONTENT_TYPE, "application/json");
    for (name, v) in [
        ("x-session-id", &rec.session),
        ("x-tenant", &rec.tenant),
        ("x-priority", &rec.priority),
    ] {
        if let Some(v) = v {
            b = b.header(name, v.as_str());
        }
    }
    if let Some(k) = &api_key {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {k}"));
    }
    let Ok(req) = b.body(Full::new(body)) else {
        return (None, None, None, Some("bad header value in trace".into()));
    };
    let work = async {
        let resp = match client.request(req).await {
            Ok(r) => r,
            Err(_) => return (None, None, None, Some("connect".to_owned())),
        };
        let status = resp.status().as_u16();
        let ok = resp.status().is_success();
        let mut body = resp.into_body();
        let mut ttft = None;
        let mut broken = false;
        loop {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Some(d) = f.data_ref() {
                        if ttft.is_none() && has_token(d) {
                            ttft = Some(start.elapsed().as_secs_f64());
                        }
                        if d.windows(9).any(|w| w == b"\"error\":{") {
                            broken = true;
                        }
                    }
                }
                Some(Err(_)) => return (ttft, None, Some(status), Some("body cut".to_owned())),
                None => break,
            }
        }
        let e2e = start.elapsed().as_secs_f64();
        match (ok, broken) {
            (false, _) => (None, None, Some(status), Some(format!("status {status}"))),
            (true, true) => (ttft, None, Some(status), Some("stream error".to_owned())),
            (true, false) => (ttft.or(Some(e2e)), Some(e2e), Some(status), None),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => (None, None, None, Some("timeout".into())),
    }
}

/// Replays `records` (sorted by `t`) against `cfg.target`; `on_done(done, total)` is called
/// as requests finish (for a progress line).
pub async fn replay(
    records: &[TraceRecord],
    cfg: &ReplayConfig,
    mut on_done: impl FnMut(usize, usize),
) -> Result<(ReplaySummary, Vec<Sample>), ReplayError> {
    if !(cfg.time_scale.is_finite() && cfg.time_scale > 0.0) {
        return Err(ReplayError::BadScale(cfg.time_scale));
    }
    let uri = endpoint(&cfg.target)?;
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(http);
    let start = Instant::now() + Duration::from_millis(20);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let t0 = records.first().map_or(0.0, |r| r.t);
    for (index, rec) in records.iter().enumerate() {
        let due = start + Duration::from_secs_f64(((rec.t - t0) / cfg.time_scale).max(0.0));
        let (client, uri, rec, tx) = (client.clone(), uri.clone(), rec.clone(), tx.clone());
        let payload = body(&rec, &cfg.model);
        let labelled = |label: &Option<String>| {
            let l = label.as_deref()?;
            cfg.keys
                .iter()
                .find(|(k, _)| k == l)
                .map(|(_, v)| v.clone())
        };
        let key = labelled(&rec.tenant)
            .or_else(|| labelled(&rec.priority))
            .or_else(|| cfg.api_key.clone());
        let group = rec.tenant.clone().or_else(|| rec.priority.clone());
        let timeout = cfg.request_timeout;
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let send_lag_s = due.elapsed().as_secs_f64();
            let (ttft_s, e2e_s, status, error) =
                send(client, uri, rec, payload, key, timeout).await;
            let _ = tx.send(Sample {
                index,
                send_lag_s,
                ttft_s,
                e2e_s,
                status,
                error,
                group,
            });
        });
    }
    drop(tx);
    let mut samples = Vec::with_capacity(records.len());
    while let Some(s) = rx.recv().await {
        samples.push(s);
        on_done(samples.len(), records.len());
    }
    samples.sort_by_key(|s| s.index);
    let wall_s = start.elapsed().as_secs_f64();
    Ok((
        summarize(&cfg.target, &samples, cfg.slo_ttft_s, wall_s),
        samples,
    ))
}

/// The summary of a replay's samples.
pub fn summarize(target: &str, samples: &[Sample], slo: f64, wall_s: f64) -> ReplaySummary {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
    let mut errors: Vec<(String, usize)> = Vec::new();
    for e in samples.iter().filter_map(|s| s.error.as_ref()) {
        match errors.iter_mut().find(|(k, _)| k == e) {
            Some((_, n)) => *n += 1,
            None => errors.push((e.clone(), 1)),
        }
    }
    errors.sort();
    let ttfts: Vec<Option<f64>> = samples
        .iter()
        .map(|s| s.error.is_none().then_some(s.ttft_s).flatten())
        .collect();
    let lags: Vec<f64> = samples.iter().map(|s| s.send_lag_s).collect();
    ReplaySummary {
        target: target.to_owned(),
        requests: samples.len(),
        ok: ok.len(),
        errors,
        ttft: Percentiles::of(&ok.iter().filter_map(|s| s.ttft_s).collect::<Vec<_>>()),
        e2e: Percentiles::of(&ok.iter().filter_map(|s| s.e2e_s).collect::<Vec<_>>()),
        goodput: goodput(&ttfts, slo, wall_s),
        send_lag: Percentiles::of(&lags),
        wall_s,
        groups: groups(samples, slo),
    }
}

/// Per-group figures, groups sorted by name; empty when no sample has a group.
fn groups(samples: &[Sample], slo: f64) -> Vec<GroupSummary> {
    let mut names: Vec<&str> = samples.iter().filter_map(|s| s.group.as_deref()).collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|g| {
            let of: Vec<&Sample> = samples
                .iter()
                .filter(|s| s.group.as_deref() == Some(g))
                .collect();
            let ok: Vec<f64> = of
                .iter()
                .filter(|s| s.error.is_none())
                .filter_map(|s| s.ttft_s)
                .collect();
            let good = ok.iter().filter(|t| **t <= slo).count();
            GroupSummary {
                group: g.to_owned(),
                requests: of.len(),
                ok: ok.len(),
                ttft: Percentiles::of(&ok),
                goodput: if of.is_empty() {
                    0.0
                } else {
                    good as f64 / of.len() as f64
                },
            }
        })
        .collect()
}

/// One replay command: the same trace against one or more targets, one after another.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayRun {
    /// Date, machine, command.
    pub meta: crate::output::RunMeta,
    /// The trace file.
    pub trace: String,
    /// Requests in it.
    pub requests: usize,
    /// Trace seconds per wall second.
    pub time_scale: f64,
    /// (label, summary) per target, in the order they ran.
    pub targets: Vec<(String, ReplaySummary)>,
}

impl ReplayRun {
    /// The Markdown report: one row per target.
    pub fn markdown(&self) -> String {
        use std::fmt::Write;
        let ms = |p: Option<Percentiles>, f: fn(&Percentiles) -> f64| {
            p.map_or("-".into(), |p| format!("{:.1}", f(&p) * 1000.0))
        };
        let mut s = String::from("# Trace replay (real time, open loop, streaming)\n\n");
        s.push_str(&self.meta.markdown());
        let _ = writeln!(
            s,
            "- trace: `{}` ({} requests), time scale {}\n",
            self.trace, self.requests, self.time_scale
        );
        s.push_str("| target | url | ok | errors | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | e2e p50 ms | e2e p99 ms | goodput | send lag p99 ms |\n|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for (label, r) in &self.targets {
            let errors: Vec<String> = r.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ =
                writeln!(
                s,
                "| {label} | {} | {}/{} | {} | {} | {} | {} | {} | {} | {:.1}% (TTFT<={}s) | {} |",
                r.target,
                r.ok,
                r.requests,
                if errors.is_empty() { "0".into() } else { errors.join(", ") },
                ms(r.ttft, |p| p.p50),
                ms(r.ttft, |p| p.p90),
                ms(r.ttft, |p| p.p99),
                ms(r.e2e, |p| p.p50),
                ms(r.e2e, |p| p.p99),
                r.goodput.share * 100.0,
                r.goodput.slo_s,
                ms(r.send_lag, |p| p.p99),
            );
        }
        if self.targets.iter().any(|(_, r)| !r.groups.is_empty()) {
            s.push_str("\nPer tenant or priority:\n\n| target | group | ok | TTFT p50 ms | TTFT p90 ms | TTFT p99 ms | goodput |\n|---|---|---:|---:|---:|---:|---:|\n");
            for (label, r) in &self.targets {
                for g in &r.groups {
                    let _ = writeln!(
                        s,
                        "| {label} | {} | {}/{} | {} | {} | {} | {:.1}% |",
                        g.group,
                        g.ok,
                        g.requests,
                        ms(g.ttft, |p| p.p50),
                        ms(g.ttft, |p| p.p90),
                        ms(g.ttft, |p| p.p99),
                        g.goodput * 100.0
                    );
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_only_first_chunk_is_not_a_token() {
        assert!(!has_token(
            br#"data: {"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(!has_token(
            br#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#
        ));
        assert!(has_token(
            br#"data: {"choices":[{"delta":{"content":"Hi"}}]}"#
        ));
        assert!(has_token(br#"data: {"choices":[{"text": "Hi"}]}"#));
        assert!(!has_token(br#"data: {"choices":[{"delta":{"content":"#));
    }

    #[test]
    fn targets_accept_a_base_url_with_or_without_v1() {
        let a = endpoint("http://127.0.0.1:8080").unwrap();
        assert_eq!(a.to_string(), "http://127.0.0.1:8080/v1/chat/completions");
        let b = endpoint("http://127.0.0.1:8080/v1/").unwrap();
        assert_eq!(a, b);
        assert!(endpoint("https://x:1").is_err());
        assert!(endpoint("127.0.0.1:8080").is_err());
    }

    #[test]
    fn summary_counts_errors_by_reason_and_goodput_over_all() {
        let s = |i, ttft: Option<f64>, err: Option<&str>| Sample {
            index: i,
            send_lag_s: 0.001,
            ttft_s: ttft,
            e2e_s: ttft.map(|t| t + 1.0),
            status: Some(200),
            error: err.map(str::to_owned),
            group: Some(if i % 2 == 0 { "a" } else { "b" }.to_owned()),
        };
        let v = vec![
            s(0, Some(0.1), None),
            s(1, Some(3.0), None),
            s(2, None, Some("status 503")),
            s(3, None, Some("status 503")),
        ];
        let sum = summarize("t", &v, 1.0, 2.0);
        assert_eq!((sum.requests, sum.ok), (4, 2));
        assert_eq!(sum.errors, vec![("status 503".to_owned(), 2)]);
        assert_eq!(sum.goodput.good, 1);
        // Per group: a has 0 (ok, 0.1 s) and 2 (503); b has 1 (ok, 3 s) and 3 (503).
        let g: Vec<(&str, usize, usize, f64)> = sum
            .groups
            .iter()
            .map(|g| (g.group.as_str(), g.requests, g.ok, g.goodput))
            .collect();
        assert_eq!(g, [("a", 2, 1, 0.5), ("b", 2, 1, 0.0)]);
        assert_eq!(sum.ttft.unwrap().p50, 0.1);
    }
}
