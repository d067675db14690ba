//! `switchyard top`: the demo's live backend table for any running gateway, read from its
//! admin API (`GET /admin/backends`) once a second until Ctrl-C; `--once` prints one frame.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::time::Duration;

use crate::table::{table, Live, Row};

/// `switchyard top ...`
#[derive(Debug, Args)]
pub struct TopArgs {
    /// The gateway's admin API base url (its `admin.listen`, or the main listener).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    admin: String,
    /// The admin token (`admin.token`).
    #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print one frame (plain table, no cursor movement) and exit.
    #[arg(long)]
    once: bool,
}

/// Runs `switchyard top`.
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(top(args))
}

async fn top(args: TopArgs) -> anyhow::Result<()> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    if args.once {
        let rows = fetch(&client, &args).await?;
        print!("{}", strip_ansi(&table(&rows, 0)));
        return Ok(());
    }
    let mut live = Live::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => live.draw(&fetch(&client, &args).await?),
        }
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Every backend of every model, as table rows.
async fn fetch(client: &HttpClient, args: &TopArgs) -> anyhow::Result<Vec<Row>> {
    let url = format!("{}/admin/backends", args.admin.trim_end_matches('/'));
    let mut req = http::Request::get(&url);
    if let Some(t) = &args.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = client
        .request(req.body(Full::new(Bytes::new()))?)
        .await
        .with_context(|| format!("cannot reach the admin API at {url}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "the admin API answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let v: Value = serde_json::from_slice(&body).context("the admin API's answer is not JSON")?;
    Ok(rows(&v))
}

/// Table rows from `GET /admin/backends`.
fn rows(v: &Value) -> Vec<Row> {
    let models = v["models"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let several = models.len() > 1;
    let mut rows = Vec::new();
    for m in models {
        for b in m["backends"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let name = b["name"].as_str().unwrap_or("?");
            let num = |v: &Value| v.as_f64().unwrap_or(0.0);
            rows.push(Row {
                name: if several {
                    format!("{}/{name}", m["model"].as_str().unwrap_or("?"))
                } else {
                    name.to_owned()
                },
                requests: b["requests_finished"].as_u64().unwrap_or(0),
                in_flight: b["in_flight"].as_u64().unwrap_or(0) as u32,
                running: b["load"]["running"].as_u64().unwrap_or(0) as u32,
                waiting: b["load"]["waiting"].as_u64().unwrap_or(0) as u32,
                ttft_ms: b["mean_ttfb_s"].as_f64().map(|s| s * 1e3),
                hit_rate: None,
                kv: num(&b["load"]["kv_usage"]),
                gpu_util: num(&b["gpu"]["utilization"]) * 100.0,
            });
        }
    }
    rows
}

/// `s` without ANSI escape sequences (for `--once`, which may go to a file).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
