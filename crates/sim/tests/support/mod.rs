//! Shared by the simulator's HTTP tests: a client, a replica on a free port, and readers for
//! whole and streamed answers.

#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use switchyard_sim::http::{Faults, Replica, ReplicaConfig};
use switchyard_sim::profile;

pub type C = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> C {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A replica's config: model `m` on the modelled H100, `time_scale` times faster.
pub fn config(time_scale: f64, faults: Faults) -> ReplicaConfig {
    let mut cfg = ReplicaConfig::from_profile(&profile::h100_llama3_8b());
    cfg.model = "m".into();
    cfg.time_scale = time_scale;
    cfg.faults = faults;
    cfg
}

pub async fn start(time_scale: f64, faults: Faults) -> Replica {
    start_with(config(time_scale, faults)).await
}

pub async fn start_with(cfg: ReplicaConfig) -> Replica {
    Replica::start(cfg, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }
}

pub async fn call(c: &C, method: &str, url: String, body: &str) -> Answer {
    let req = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let fut = async {
        let resp = c.request(req).await.expect("replica answered");
        let (parts, body) = resp.into_parts();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: body.collect().await.unwrap().to_bytes(),
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .expect("answered within 10 s")
}

/// SSE `data:` payloads with the time each arrived; `Err` if the body broke off.
pub async fn stream(
    c: &C,
    url: String,
    body: &str,
) -> (Vec<(Instant, String)>, Result<(), String>) {
    let mut body = open_stream(c, url, body).await;
    let (mut events, mut buf) = (Vec::new(), String::new());
    let end = loop {
        match next_data(&mut body).await {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(d)) => {
                let now = Instant::now();
                buf.push_str(std::str::from_utf8(&d).unwrap());
                while let Some(i) = buf.find("\n\n") {
                    let ev: String = buf.drain(..i + 2).collect();
                    events.push((now, ev.trim().trim_start_matches("data: ").to_owned()));
                }
            }
        }
    };
    (events, end)
}

pub fn chat(max_tokens: u32, stream: bool) -> String {
    json!({
        "model": "m",
        "messages": [{"role": "system", "content": "You are a switchyard operator. ".repeat(8)},
                     {"role": "user", "content": "Which track?"}],
        "max_tokens": max_tokens,
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
    .to_string()
}

/// Posts `body` and returns the streamed answer's body once its headers arrived.
pub async fn open_stream(c: &C, url: String, body: &str) -> Incoming {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    resp.into_body()
}

/// The next data frame: `None` at the end, `Err` if the body broke off; panics after 10 s of
/// silence.
pub async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, String>> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), body.frame()).await {
            Err(_) => panic!("stream stalled"),
            Ok(None) => return None,
            Ok(Some(Err(e))) => return Some(Err(e.to_string())),
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    return Some(Ok(d));
                }
            }
        }
    }
}

/// Polls `cond` every 10 ms for at most 5 s; true if it held in time.
pub async fn eventually(mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if cond().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The JSON payloads of the whole SSE events in `bytes` (`[DONE]` as the string), and the
/// bytes after the last whole event.
pub fn events(bytes: &[u8]) -> (Vec<Value>, &[u8]) {
    let text = std::str::from_utf8(bytes).unwrap_or("");
    let whole = text.rfind("\n\n").map_or(0, |i| i + 2);
    let evs = text[..whole]
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").expect("a data event");
            serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()))
        })
        .collect();
    (evs, &bytes[whole..])
}

/// The content of each token chunk among `events`, in order.
pub fn pieces(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|v| {
            let c = &v["choices"][0];
            c["delta"]["content"].as_str().or(c["text"].as_str())
        })
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}
