//! The metrics contract: every family the gateway exports follows Prometheus naming
//! conventions, and every metric the shipped Grafana dashboard and alert rules query exists
//! in a real gateway's `/metrics`.

use crate::support::conf::Conf;
use crate::support::*;
use http::StatusCode;
use std::collections::BTreeMap;

/// The repository file `rel`, read from the workspace root.
fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `# TYPE` lines of a metrics page: family name to its type.
fn families(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect()
}

/// Every `switchyard_*` identifier in `text`, with histogram sample suffixes taken off.
fn referenced(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("switchyard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        out.push(base.to_owned());
        rest = &tail[end..];
    }
    out.sort();
    out.dedup();
    out
}

/// A gateway with admission on, after one answered request: its `/metrics` page.
async fn scraped() -> String {
    let up = Mock::start(Reply::Json(StatusCode::OK, OK_BODY)).await;
    let gw = Gw::with(Conf::over(&[up.url()]).set("admission", serde_json::json!({}))).await;
    let c = client();
    let a = post(&c, &gw.url("/v1/chat/completions"), CHAT, &[]).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    String::from_utf8(get(&c, &gw.url("/metrics")).await.body.to_vec()).unwrap()
}

#[tokio::test]
async fn exported_metric_names_follow_prometheus_conventions() {
    let page = scraped().await;
    let fams = families(&page);
    assert!(fams.len() >= 10, "too few families: {fams:?}");
    for (name, kind) in &fams {
        let snake = name.starts_with("switchyard_")
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !name.contains("__");
        assert!(snake, "{name} is not snake_case under switchyard_");
        match kind.as_str() {
            "counter" => assert!(name.ends_with("_total"), "counter {name} lacks _total"),
            "histogram" => assert!(
                name.ends_with("_seconds") || name.ends_with("_bytes"),
                "histogram {name} lacks a base-unit suffix"
            ),
            "gauge" => assert!(!name.ends_with("_total"), "gauge {name} ends in _total"),
            other => panic!("{name} has unexpected type {other}"),
        }
    }
    // Labels: snake_case, none reserved (`__` prefix), `le` only on buckets.
    for line in page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let Some((series, _)) = line.split_once('{') else {
            continue;
        };
        let labels = line[series.len() + 1..].rsplit_once('}').unwrap().0;
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let key = pair.split_once('=').unwrap().0;
            assert!(!key.starts_with("__"), "reserved label {key} in {line}");
            assert!(
                key.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "label {key} is not snake_case in {line}"
            );
            if key == "le" {
                assert!(series.ends_with("_bucket"), "le outside a bucket: {line}");
            }
            assert_ne!(key, "quantile", "summaries are not used: {line}");
        }
    }
}

#[tokio::test]
async fn ttft_buckets_span_ten_milliseconds_to_a_minute() {
    let page = scraped().await;
    let les: Vec<f64> = page
        .lines()
        .filter(|l| l.starts_with("switchyard_time_to_first_byte_seconds_bucket{"))
        .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
        .collect();
    assert!(les.contains(&0.01), "no 10 ms bucket: {les:?}");
    assert!(les.contains(&60.0), "no 60 s bucket: {les:?}");
    let between = les
        .iter()
        .filter(|&&le| (0.01..=60.0).contains(&le))
        .count();
    assert!(between >= 10, "too coarse between 10 ms and 60 s: {les:?}");
}

#[tokio::test]
async fn grafana_and_alert_rules_query_only_exported_metrics() {
    let page = scraped().await;
    let fams = families(&page);
    let grafana = repo_file("deploy/grafana/switchyard.json");
    let dash: serde_json::Value = serde_json::from_str(&grafana).expect("valid JSON");
    assert_eq!(dash["title"], "Switchyard");
    let panels = dash["panels"].as_array().expect("a panels array");
    assert!(panels
        .iter()
        .all(|p| p["targets"].as_array().is_some_and(|t| !t.is_empty())));

    let alerts = repo_file("deploy/prometheus/alerts.yml");
    let rules: serde_json::Value = serde_norway::from_str(&alerts).expect("valid YAML");
    let rules = rules["groups"][0]["rules"]
        .as_array()
        .expect("rules")
        .clone();
    let names: Vec<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
    for want in [
        "BackendDown",
        "BreakerOpen",
        "ErrorRatio",
        "TtftSloBurn",
        "QueueGrowth",
    ] {
        assert!(names.iter().any(|n| n.ends_with(want)), "no {want} alert");
    }
    assert!(rules.iter().all(|r| r["expr"].as_str().is_some()));

    for (file, text) in [("grafana", &grafana), ("alerts", &alerts)] {
        let used = referenced(text);
        assert!(!used.is_empty());
        for name in used {
            assert!(
                fams.contains_key(&name),
                "{file} queries {name}, not exported"
            );
        }
    }
}
