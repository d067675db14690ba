//! Max throughput with `wrk` (one thread, N connections, a Lua script for the POST body and
//! headers), and the parsing of its report.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::loadgen::Target;
use crate::stats::Percentiles;

/// Max throughput of one path at fixed concurrency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Throughput {
    /// `wrk` or the built-in closed loop.
    pub generator: String,
    /// Requests per second.
    pub rps: f64,
    /// Requests completed.
    pub requests: u64,
    /// Non-2xx answers.
    pub non_2xx: u64,
    /// Socket errors.
    pub errors: u64,
    /// Latency at that load, ms (wrk reports p50/p90/p99; others are copies of those).
    pub latency_ms: Option<Percentiles>,
}

fn lua_quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Runs `wrk -t1 -cN -dD --latency` against `target`.
pub async fn run(
    target: &Target,
    connections: usize,
    duration: Duration,
    dir: &Path,
) -> Result<Throughput, String> {
    let mut lua = String::from("wrk.method = \"POST\"\n");
    lua.push_str(&format!(
        "wrk.body = {}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
        lua_quote(&String::from_utf8_lossy(&target.body))
    ));
    for (k, v) in &target.headers {
        lua.push_str(&format!(
            "wrk.headers[{}] = {}\n",
            lua_quote(k.as_str()),
            lua_quote(v.to_str().unwrap_or(""))
        ));
    }
    let script = dir.join("post.lua");
    std::fs::write(&script, lua).map_err(|e| format!("wrk script: {e}"))?;
    let url = format!("http://{}{}", target.addr, target.path);
    let args = vec![
        "-t1".to_owned(),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs().max(1)),
        "--latency".to_owned(),
        "-s".to_owned(),
        script.display().to_string(),
        url,
    ];
    let out =
        tokio::task::spawn_blocking(move || std::process::Command::new("wrk").args(args).output())
            .await
            .map_err(|e| format!("wrk: {e}"))?
            .map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse(&text).ok_or_else(|| format!("cannot read wrk's report: {}", text.trim()))
}

fn unit_ms(v: &str) -> Option<f64> {
    if let Some(n) = v.strip_suffix("us") {
        return n.parse::<f64>().ok().map(|x| x / 1000.0);
    }
    let (num, mult) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|x| x * mult)
}

/// Reads wrk's `--latency` report.
pub fn parse(text: &str) -> Option<Throughput> {
    let mut rps = None;
    let mut requests = None;
    let mut non_2xx = 0;
    let mut errors = 0;
    let (mut p50, mut p90, mut p99) = (None, None, None);
    for line in text.lines() {
        let l = line.trim();
        let words: Vec<&str> = l.split_whitespace().collect();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if words.len() > 2 && words[1] == "requests" && words[2] == "in" {
            requests = words[0].parse::<u64>().ok();
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            errors = v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if words.len() == 2 {
            match words[0] {
                "50%" => p50 = unit_ms(words[1]),
                "90%" => p90 = unit_ms(words[1]),
                "99%" => p99 = unit_ms(words[1]),
                _ => {}
            }
        }
    }
    let latency_ms = match (p50, p90, p99) {
        (Some(a), Some(b), Some(c)) => Some(Percentiles {
            count: requests.unwrap_or(0) as usize,
            p50: a,
            p90: b,
            p99: c,
            p999: c,
            max: c,
            mean: a,
        }),
        _ => None,
    };
    Some(Throughput {
        generator: "wrk -t1".into(),
        rps: rps?,
        requests: requests?,
        non_2xx,
        errors,
        latency_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 10s test @ http://127.0.0.1:18080/v1/chat/completions
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.40ms    2.11ms  40.10ms   93.12%
    Req/Sec    21.64k     1.90k   25.51k    71.00%
  Latency Distribution
     50%    1.24ms
     75%    1.50ms
     90%    2.20ms
     99%   18.36ms
  215967 requests in 10.03s, 77.44MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  21531.34
Transfer/sec:      7.72MB
";

    #[test]
    fn wrk_reports_parse_with_units_and_errors() {
        let t = parse(REPORT).unwrap();
        assert_eq!(t.requests, 215_967);
        assert!((t.rps - 21531.34).abs() < 1e-9);
        assert_eq!((t.non_2xx, t.errors), (5, 3));
        let l = t.latency_ms.unwrap();
        assert_eq!((l.p50, l.p90, l.p99), (1.24, 2.2, 18.36));
        assert_eq!(unit_ms("350.00us"), Some(0.35));
        assert_eq!(unit_ms("1.5s"), Some(1500.0));
        assert!(parse("garbage").is_none());
    }
}
