//! Decision log: sampling keeps every error, a full channel drops and counts, files rotate.

use super::*;
use std::time::{Duration, Instant};

fn rec(id: u32, status: u16) -> Record {
    Record {
        id: format!("r{id}"),
        at_ms: 1,
        model: "m".into(),
        route: "m".into(),
        policy: "round_robin",
        backend: Some("b0".into()),
        reason: None,
        scores: vec![],
        attempts: smallvec::smallvec![Attempt {
            backend: "b0".into(),
            outcome: "ok",
            status: Some(status),
        }],
        status,
        prompt_tokens: None,
        completion_tokens: None,
        ttft_ms: None,
        duration_ms: 1.0,
        cost: None,
    }
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-declog-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir.join("decisions.jsonl")
}

fn counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new("dropped", "test").unwrap()
}

fn file_config(path: &Path, sample: f64, max_bytes: u64, keep: u32) -> DecisionLogConfig {
    DecisionLogConfig {
        sample,
        sink: Some(Sink::File {
            path: path.to_owned(),
            max_bytes,
            keep,
        }),
        ring: 4,
    }
}

/// Reads the file until it holds `n` lines (the writer is a thread), at most 10 s.
fn lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        let got: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("every line parses"))
            .collect();
        if got.len() >= n || Instant::now() > until {
            return got;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn sample_zero_keeps_every_error_and_no_success() {
    let path = tmp("errors");
    let log = DecisionLog::start(&file_config(&path, 0.0, 1 << 20, 2), counter(), 7);
    for i in 0..10 {
        let sampled = log.sampled();
        assert!(!sampled);
        log.record(rec(i, if i % 2 == 0 { 200 } else { 502 }), sampled);
    }
    let got = lines(&path, 5);
    let ids: Vec<&str> = got.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["r1", "r3", "r5", "r7", "r9"]);
    assert_eq!(got[0]["attempts"][0]["status"], 502);
}

#[test]
fn sample_one_writes_every_request_and_sampling_is_a_share() {
    let path = tmp("all");
    let log = DecisionLog::start(&file_config(&path, 1.0, 1 << 20, 2), counter(), 7);
    for i in 0..20 {
        log.record(rec(i, 200), log.sampled());
    }
    assert_eq!(lines(&path, 20).len(), 20);
    let tenth = DecisionLog::start(&file_config(&tmp("tenth"), 0.1, 1 << 20, 2), counter(), 9);
    let picked = (0..10_000).filter(|_| tenth.sampled()).count();
    assert!((500..1500).contains(&picked), "{picked} of 10000 at 0.1");
}

#[test]
fn a_full_channel_drops_and_counts_without_blocking() {
    // Stdout sink with capacity 1: the writer cannot keep up with 10,000 sends in a row.
    let config = DecisionLogConfig {
        sample: 1.0,
        sink: Some(Sink::Stdout),
        ring: 10,
    };
    let dropped = counter();
    let log = DecisionLog::with_capacity(&config, dropped.clone(), 1, 1);
    for i in 0..10_000 {
        log.record(rec(i, 500), true);
    }
    assert!(dropped.get() > 0, "nothing dropped");
    // The ring still holds the newest ones.
    let last: Vec<String> = log.last(3).iter().map(|r| r.id.clone()).collect();
    assert_eq!(last, ["r9997", "r9998", "r9999"]);
}

#[test]
fn the_file_rotates_by_size_and_keeps_at_most_keep() {
    let path = tmp("rotate");
    let log = DecisionLog::start(&file_config(&path, 1.0, 1024, 2), counter(), 3);
    let line_len = serde_json::to_vec(&rec(100, 200)).unwrap().len() + 1;
    let total = 1024 / line_len * 4;
    for i in 100..100 + total as u32 {
        log.record(rec(i, 200), true);
    }
    log.close();
    let p2 = PathBuf::from(format!("{}.2", path.display()));
    assert!(p2.exists(), "no second rotated file");
    assert!(!PathBuf::from(format!("{}.3", path.display())).exists());
    for p in [
        path.clone(),
        PathBuf::from(format!("{}.1", path.display())),
        p2,
    ] {
        let len = fs::metadata(&p).unwrap().len();
        assert!(len <= 1024, "{} is {len} bytes", p.display());
    }
    // The live file ends with the newest record.
    let live = lines(&path, 1);
    assert_eq!(live.last().unwrap()["id"], format!("r{}", 100 + total - 1));
}

#[test]
fn the_ring_serves_the_last_n_oldest_first() {
    let log = DecisionLog::start(&DecisionLogConfig::default(), counter(), 1);
    assert!(!log.sampled(), "no sink: nothing is sampled");
    for i in 0..5 {
        log.record(rec(i, 200), false);
    }
    let ids: Vec<String> = log.last(3).iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, ["r2", "r3", "r4"]);
    assert_eq!(log.last(100).len(), 5);
}

#[test]
fn a_records_reason_is_kept_as_parts_and_written_as_its_text() {
    use switchyard_core::{Detail, Reason};
    let mut r = rec(1, 200);
    r.reason = Some(Reason::new(
        "least_tokens",
        Detail::new("{} tokens in flight, {} queued", &[1200, 3]),
    ));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(
        json["reason"],
        "least_tokens: 1200 tokens in flight, 3 queued"
    );
    assert_eq!(json["policy"], "round_robin");
    assert_eq!(json["attempts"][0]["outcome"], "ok");
    assert!(serde_json::to_value(rec(2, 200)).unwrap()["reason"].is_null());
}
