//! The decision log over real sockets: `/admin/decisions?last=N` serves the last records in
//! the dashboard's shape behind the admin token, and at sample 0 the file gets every failed
//! request and no successful one.

use crate::admin_support::*;
use crate::support::*;
use http::StatusCode;
use std::time::{Duration, Instant};

const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;

fn log_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchyard-decisions-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("decisions.jsonl")
}

/// Sends `n` chat requests with ids `{prefix}-0..`, each answered `want`.
async fn chats(c: &Client, gw: &FileGw, prefix: &str, n: usize, want: StatusCode) {
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let a = post(
            c,
            &gw.url("/v1/chat/completions"),
            CHAT,
            &[("x-request-id", &id)],
        )
        .await;
        assert_eq!(a.status, want);
    }
}

fn top(path: &std::path::Path) -> String {
    format!(
        "admin: {{token: {TOKEN}}}\ndecision_log: {{sample: 0, path: \"{}\"}}",
        path.display()
    )
}

#[tokio::test]
async fn admin_decisions_serves_the_last_n_newest_last_behind_the_token() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let path = log_path("shape");
    let file = TempConfig::new(&config(&[up.url()], "", &top(&path)));
    let gw = FileGw::start(&file).await;
    let c = client();
    chats(&c, &gw, "req", 3, StatusCode::OK).await;
    let url = gw.admin_url("/admin/decisions?last=2");
    let refused = send(
        &c,
        http::Request::get(&url).body(Default::default()).unwrap(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let a = admin(&c, "GET", &url, "").await;
    assert_eq!(a.status, StatusCode::OK);
    let list = a.json()["decisions"].as_array().unwrap().clone();
    let ids: Vec<&str> = list.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["req-1", "req-2"]);
    let d = &list[1];
    assert_eq!(d["model"], "m");
    assert_eq!(d["route"], "m");
    assert_eq!(d["backend"], "b0");
    assert_eq!(d["status"], 200);
    assert_eq!(d["attempts"][0]["backend"], "b0");
    assert_eq!(d["attempts"][0]["outcome"], "ok");
    assert_eq!(d["attempts"][0]["status"], 200);
    assert_eq!(d["prompt_tokens"], 1);
    assert_eq!(d["completion_tokens"], 1);
    assert!(d["at_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(d["duration_ms"].as_f64().is_some());
    assert!(d["ttft_ms"].as_f64().is_some());
    assert!(d["policy"].is_string());
    assert!(d["scores"].is_array());
    assert!(d.get("cost").is_some());
    let bad = admin(&c, "GET", &gw.admin_url("/admin/decisions?last=x"), "").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn at_sample_zero_every_failed_request_is_written() {
    let up = Mock::start(Reply::Json(
        StatusCode::BAD_REQUEST,
        r#"{"error":{"message":"no"}}"#,
    ))
    .await;
    let path = log_path("errors");
    let file = TempConfig::new(&config(&[up.url()], "", &top(&path)));
    let gw = FileGw::start(&file).await;
    let c = client();
    chats(&c, &gw, "bad", 4, StatusCode::BAD_REQUEST).await;
    // The writer is a background thread: wait (bounded) for its lines.
    let until = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line parses"))
            .collect();
        if lines.len() >= 4 || Instant::now() > until {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ids: Vec<&str> = lines.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bad-0", "bad-1", "bad-2", "bad-3"]);
    assert_eq!(lines[0]["status"], 400);
}

#[tokio::test]
async fn a_failed_over_request_s_record_names_each_backend_tried_and_how_it_ended() {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let path = log_path("failover");
    // `b0` refuses connections; round robin sends one of the first two requests to it first.
    let file = TempConfig::new(&config(
        &[closed_port(), up.url()],
        "policy: round_robin",
        &top(&path),
    ));
    let gw = FileGw::start(&file).await;
    let c = client();
    chats(&c, &gw, "fo", 2, StatusCode::OK).await;
    let a = admin(&c, "GET", &gw.admin_url("/admin/decisions?last=2"), "").await;
    let list = a.json()["decisions"].as_array().unwrap().clone();
    let failed_over = list
        .iter()
        .find(|d| d["attempts"].as_array().unwrap().len() == 2)
        .unwrap_or_else(|| panic!("one request tried b0 first: {list:?}"));
    let attempts = &failed_over["attempts"];
    assert_eq!(attempts[0]["backend"], "b0");
    assert_eq!(attempts[0]["outcome"], "upstream_unreachable");
    assert!(attempts[0]["status"].is_null());
    assert_eq!(attempts[1]["backend"], "b1");
    assert_eq!(attempts[1]["outcome"], "ok");
    assert_eq!(attempts[1]["status"], 200);
    assert_eq!(failed_over["backend"], "b1");
}

#[tokio::test]
async fn when_every_backend_answers_503_the_record_lists_the_one_passed_over_then_the_one_relayed()
{
    let a = Mock::start(Reply::Json(StatusCode::SERVICE_UNAVAILABLE, OK_BODY)).await;
    let b = Mock::start(Reply::Json(StatusCode::SERVICE_UNAVAILABLE, OK_BODY)).await;
    let path = log_path("held");
    let file = TempConfig::new(&config(
        &[a.url(), b.url()],
        "policy: round_robin",
        &top(&path),
    ));
    let gw = FileGw::start(&file).await;
    let c = client();
    chats(&c, &gw, "held", 1, StatusCode::SERVICE_UNAVAILABLE).await;
    let list = admin(&c, "GET", &gw.admin_url("/admin/decisions?last=1"), "")
        .await
        .json()["decisions"]
        .clone();
    let d = &list[0];
    let attempts = d["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{d}");
    assert_eq!(attempts[0]["outcome"], "status");
    assert_eq!(attempts[0]["status"], 503);
    assert_eq!(attempts[1]["outcome"], "error");
    assert_eq!(attempts[1]["status"], 503);
    assert_ne!(attempts[0]["backend"], attempts[1]["backend"]);
    assert_eq!(
        d["backend"], attempts[1]["backend"],
        "the record names the backend relayed"
    );
}
