//! Smoke runs of every `switchyard bench` command through the real binary: tiny sizes, no
//! peers, no wrk, nothing installed. They check the commands run end to end and write their
//! result files; the numbers themselves are benchmarks, not assertions.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "switchyard-bench-smoke-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn json(dir: &Path, prefix: &str) -> serde_json::Value {
    let f = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with(prefix) && n.ends_with(".json")
        })
        .unwrap_or_else(|| panic!("no {prefix}*.json in {}", dir.display()));
    serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap()
}

#[test]
fn decisions_quick_writes_tables_plots_and_checks_determinism() {
    let dir = tmp("decisions");
    let out = bin()
        .args([
            "bench",
            "decisions",
            "--quick",
            "--workloads",
            "tenants,priority",
        ])
        .args([
            "--policies",
            "round_robin,least_connections",
            "--check-determinism",
            "--seed",
            "3",
        ])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    ok(&out);
    let v = json(&dir, "decisions-");
    assert_eq!(v["determinism_checked"], true);
    assert_eq!(v["outcomes"].as_array().unwrap().len(), 4);
    assert_eq!(v["meta"]["seeds"][0], 3);
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        md.contains("## tenants") && md.contains("Per priority:"),
        "{md}"
    );
    let svgs = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "svg")
        })
        .count();
    assert_eq!(svgs, 2, "one TTFT CDF per workload");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_workloads_and_peers_are_refused_with_the_known_names() {
    let out = bin()
        .args(["bench", "decisions", "--quick", "--workloads", "sharegpt"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("known: shared_prefix"));
    let out = bin()
        .args(["bench", "overhead", "--smoke", "--peers", "envoy"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown peer 'envoy'"));
}

#[test]
fn a_generated_five_line_trace_replays_against_a_sim_replica() {
    let dir = tmp("replay");
    let trace = dir.join("t.jsonl");
    ok(&bin()
        .args([
            "bench",
            "trace",
            "--workload",
            "shared_prefix",
            "--quick",
            "--limit",
            "5",
        ])
        .arg("--out")
        .arg(&trace)
        .output()
        .unwrap());
    assert_eq!(std::fs::read_to_string(&trace).unwrap().lines().count(), 5);

    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut cfg = switchyard_sim::http::ReplicaConfig::from_profile(
        &switchyard_sim::profile::h100_llama3_8b(),
    );
    cfg.model = "m".into();
    cfg.time_scale = 50.0;
    let replica = rt
        .block_on(switchyard_sim::http::Replica::start(
            cfg,
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();
    let out = bin()
        .args(["bench", "replay", "--model", "m", "--time-scale", "20"])
        .arg("--trace")
        .arg(&trace)
        .arg("--target")
        .arg(format!("sim={}", replica.url()))
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    ok(&out);
    let v = json(&dir, "replay-");
    let (label, r) = (&v["targets"][0][0], &v["targets"][0][1]);
    assert_eq!(label, "sim");
    assert_eq!(r["requests"], 5);
    assert_eq!(r["ok"], 5, "{r}");
    assert!(r["ttft"]["p50"].as_f64().unwrap() > 0.0);
    drop(replica);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn overhead_smoke_measures_direct_and_switchyard_without_peers_or_wrk() {
    let dir = tmp("overhead");
    let out = bin()
        .args([
            "bench",
            "overhead",
            "--smoke",
            "--duration",
            "0.5",
            "--rate",
            "200",
        ])
        .args(["--connections", "4", "--open-streams", "20", "--no-install"])
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    ok(&out);
    let v = json(&dir, "overhead-");
    let paths = v["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 2);
    for p in paths {
        assert!(p["error"].is_null(), "{p}");
        assert!(p["throughput"]["rps"].as_f64().unwrap() > 0.0, "{p}");
        assert_eq!(p["throughput"]["generator"], "built-in closed loop");
        assert_eq!(p["rates"][0]["errors"], 0, "{p}");
    }
    let sy = &paths[1];
    assert_eq!(sy["path"], "switchyard");
    assert!(sy["rss_idle_mb"].as_f64().unwrap() > 0.0);
    assert_eq!(sy["open_streams"], 20);
    assert!(v["derived"]["throughput_vs_direct"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(dir);
}
