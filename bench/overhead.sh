#!/usr/bin/env bash
# Superseded by `switchyard bench overhead` (crates/bench); kept to reproduce bench/results/overhead-2026-11-22.*.
# Overhead of putting Switchyard in the path, measured side by side in one run:
#   direct:     load generator -> fast mock upstream
#   switchyard: load generator -> switchyard -> the same mock
# The mock is nginx answering a fixed OpenAI chat completion with `return 200` (a fast,
# well-understood upstream). Everything is on 127.0.0.1, bounded in time, and stopped by pid.
#
#   bench/overhead.sh [--duration 10] [--connections 32] [--rate 2000]
#
# Needs wrk, hey and nginx (installed with apt-get if missing). Writes
# bench/results/overhead-<date>.md and .json.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=10 CONNS=32 RATE=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --connections) CONNS=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
for tool in wrk hey nginx; do
  command -v "$tool" >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk hey nginx-light >/dev/null; break; }
done
cargo build --release -q -p switchyard
BIN=target/release/switchyard
TMP=$(mktemp -d /tmp/switchyard-overhead.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

MOCK_PORT=18001 GW_PORT=18080
BODY='{"id":"cmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
mkdir -p "$TMP/logs"
cat > "$TMP/nginx.conf" <<CONF
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $TMP;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$MOCK_PORT;
    location / { default_type application/json; return 200 '$BODY'; }
  }
}
CONF
nginx -p "$TMP" -c "$TMP/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
cat > "$TMP/switchyard.yaml" <<CONF
listen: 127.0.0.1:$GW_PORT
models:
  m:
    backends:
      - url: http://127.0.0.1:$MOCK_PORT
CONF
SWITCHYARD_LOG=warn "$BIN" serve --config "$TMP/switchyard.yaml" &
GW_PID=$!
PIDS+=($GW_PID)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$GW_PORT/health" && break; sleep 0.05; done
IDLE_RSS_KB=$(awk '/VmRSS/ {print $2}' /proc/$GW_PID/status)

REQ='{"model":"m","messages":[{"role":"user","content":"Say hi"}],"max_tokens":8}'
cat > "$TMP/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$REQ'
wrk.headers["Content-Type"] = "application/json"
LUA
echo "$REQ" > "$TMP/req.json"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Max throughput at fixed concurrency (wrk), then latency at a fixed offered rate (hey).
run_wrk() { wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$TMP/post.lua" "$1" > "$TMP/wrk-$2.txt"; }
run_hey() {
  local workers=20
  hey -z "${DURATION}s" -c "$workers" -q $((RATE / workers)) -m POST -T application/json -D "$TMP/req.json" "$1" > "$TMP/hey-$2.txt"
}
run_wrk "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" direct
T0=$(cpu_ticks $GW_PID)
run_wrk "http://127.0.0.1:$GW_PORT/v1/chat/completions" switchyard
T1=$(cpu_ticks $GW_PID)
run_hey "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" direct
run_hey "http://127.0.0.1:$GW_PORT/v1/chat/completions" switchyard
PEAK_RSS_KB=$(awk '/VmHWM/ {print $2}' /proc/$GW_PID/status)
TICKS=$(getconf CLK_TCK)

python3 - "$TMP" "$DURATION" "$CONNS" "$RATE" "$IDLE_RSS_KB" "$PEAK_RSS_KB" "$((T1 - T0))" "$TICKS" <<'PY'
import datetime, json, os, platform, re, subprocess, sys
tmp, duration, conns, rate, idle_kb, peak_kb, ticks, hz = sys.argv[1:]
def unit(v, u):
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[u]
def wrk(name):
    t = open(f"{tmp}/wrk-{name}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    total = int(re.search(r"(\d+) requests in", t).group(1))
    lat = {p: unit(*re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", t).groups()) for p in ("50", "99")}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
    return {"rps": rps, "requests": total, "p50_ms": lat["50"], "p99_ms": lat["99"], "non_2xx": int(errors.group(1)) if errors else 0}
def hey(name):
    t = open(f"{tmp}/hey-{name}.txt").read()
    pct = {p: float(re.search(rf"{p}% in ([\d.]+) secs", t).group(1)) * 1000 for p in ("50", "99")}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", t))
    return {"rps": rps, "p50_ms": pct["50"], "p99_ms": pct["99"], "status": codes}
w = {n: wrk(n) for n in ("direct", "switchyard")}
h = {n: hey(n) for n in ("direct", "switchyard")}
cpu_per_1k = int(ticks) / int(hz) / w["switchyard"]["requests"] * 1000
cpu = open("/proc/cpuinfo").read()
model = re.search(r"model name\s+:\s+(.*)", cpu).group(1)
machine = f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({model}), load generator, proxy and mock share them"
date = datetime.date.today().isoformat()
cmd = f"bench/overhead.sh --duration {duration} --connections {conns} --rate {rate}"
res = {"date": date, "machine": machine, "command": cmd, "wrk": w, "hey": h,
       "throughput_ratio": w["switchyard"]["rps"] / w["direct"]["rps"],
       "added_p50_ms_at_rate": h["switchyard"]["p50_ms"] - h["direct"]["p50_ms"],
       "added_p99_ms_at_rate": h["switchyard"]["p99_ms"] - h["direct"]["p99_ms"],
       "rss_idle_mb": int(idle_kb) / 1024, "rss_peak_mb": int(peak_kb) / 1024, "cpu_s_per_1k_requests": cpu_per_1k}
md = f"""# Overhead: direct vs through Switchyard

- date: {date}
- machine: {machine}
- command: `{cmd}`
- upstream: nginx 1.22 `return 200` with a fixed chat completion (non-streaming)

## Max throughput at {conns} connections (wrk, {duration}s each)

| path | requests/s | p50 ms | p99 ms | non-2xx |
|---|---:|---:|---:|---:|
| direct | {w['direct']['rps']:.0f} | {w['direct']['p50_ms']:.3f} | {w['direct']['p99_ms']:.3f} | {w['direct']['non_2xx']} |
| switchyard | {w['switchyard']['rps']:.0f} | {w['switchyard']['p50_ms']:.3f} | {w['switchyard']['p99_ms']:.3f} | {w['switchyard']['non_2xx']} |

Switchyard / direct throughput: **{res['throughput_ratio']:.2f}x** (on 2 shared cores the proxy
competes with both the load generator and the mock for CPU, so this ratio is a floor).

## Latency at a fixed offered rate of {rate} requests/s (hey, 20 workers, {duration}s each)

| path | achieved req/s | p50 ms | p99 ms | statuses |
|---|---:|---:|---:|---|
| direct | {h['direct']['rps']:.0f} | {h['direct']['p50_ms']:.3f} | {h['direct']['p99_ms']:.3f} | {h['direct']['status']} |
| switchyard | {h['switchyard']['rps']:.0f} | {h['switchyard']['p50_ms']:.3f} | {h['switchyard']['p99_ms']:.3f} | {h['switchyard']['status']} |

Added latency: p50 **{res['added_p50_ms_at_rate']:.3f} ms**, p99 **{res['added_p99_ms_at_rate']:.3f} ms**.

## Switchyard process

- RSS idle: {res['rss_idle_mb']:.1f} MB; peak during the run: {res['rss_peak_mb']:.1f} MB
- CPU: {cpu_per_1k:.3f} CPU-seconds per 1,000 requests (during the wrk run)
"""
os.makedirs("bench/results", exist_ok=True)
open(f"bench/results/overhead-{date}.md", "w").write(md)
json.dump(res, open(f"bench/results/overhead-{date}.json", "w"), indent=2)
print(md)
PY
