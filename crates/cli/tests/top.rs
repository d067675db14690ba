//! `switchyard serve --log-format json` writes one JSON object per log line, carrying the
//! request id (and, with `tracing:` on, the trace id); `switchyard top --once` attaches to that running gateway through its admin
//! API and prints the backend table.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `cond` every 20 ms until it holds; fails after 10 s.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn post_chat(addr: &str, request_id: &str) -> String {
    let body = r#"{"model":"alpha","messages":[{"role":"user","content":"hi"}]}"#;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\nx-request-id: {request_id}\r\ntraceparent: 00-{TRACE_ID}-00f067aa0ba902b7-01\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

const TOKEN: &str = "top-test-token";
/// The trace the test's client continues.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[test]
fn json_logs_carry_the_request_and_trace_ids_and_top_once_prints_the_table() {
    let path = std::env::temp_dir().join(format!("switchyard-top-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        format!("listen: 127.0.0.1:0\nadmin: {{token: {TOKEN}}}\ntracing: {{otlp_endpoint: \"http://127.0.0.1:9\"}}\nmodels:\n  alpha:\n    backends:\n      - {{url: \"http://127.0.0.1:9\", name: b0}}\n      - {{url: \"http://127.0.0.1:9\", name: b1}}\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&path)
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let reader = {
        let log = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                log.lock().unwrap().push(v);
            }
        })
    };
    let message = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap_or("").to_owned();
    eventually("the listening line", || {
        log.lock()
            .unwrap()
            .iter()
            .any(|v| message(v).contains("switchyard listening"))
    });
    let addr = {
        let lines = log.lock().unwrap();
        let line = lines
            .iter()
            .map(message)
            .find(|m| m.contains("switchyard listening"))
            .unwrap();
        let at = line.find("http://").unwrap() + 7;
        line[at..].split(['/', ' ']).next().unwrap().to_owned()
    };

    let answer = post_chat(&addr, "top-req-42");
    assert!(answer.starts_with("HTTP/1.1 5"), "{answer}");
    eventually("a log line with the request id", || {
        log.lock().unwrap().iter().any(|v| {
            v["fields"]["request_id"]
                .as_str()
                .is_some_and(|id| id.contains("top-req-42"))
        })
    });
    // Lines written while the request is routed carry its span: request and trace ids.
    eventually("a log line with the trace id", || {
        log.lock().unwrap().iter().any(|v| {
            v["spans"].as_array().is_some_and(|spans| {
                spans.iter().any(|s| {
                    s["trace_id"] == TRACE_ID
                        && s["request_id"]
                            .as_str()
                            .is_some_and(|id| id.contains("top-req-42"))
                })
            })
        })
    });

    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["top", "--once", "--admin"])
        .arg(format!("http://{addr}"))
        .args(["--token", TOKEN])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("backend") && lines[0].contains("in-flight"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("b0") && lines[2].starts_with("b1"),
        "{table}"
    );
    assert!(!table.contains('\x1b'), "--once prints no escape codes");

    // A wrong token: top says so and fails.
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["top", "--once", "--admin"])
        .arg(format!("http://{addr}"))
        .args(["--token", "wrong"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));

    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap();
    let _ = std::fs::remove_file(&path);
}
