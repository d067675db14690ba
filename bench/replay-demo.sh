#!/usr/bin/env bash
# One trace, replayed in real time against Switchyard and against nginx, each in front of its
# own fresh set of simulated vLLM replicas (`switchyard sim`, the fleet of the decisions
# benchmark: 4 x L4 by default), so neither inherits the other's warm prefix caches.
# Everything on 127.0.0.1, bounded, stopped by pid on exit.
#
#   bench/replay-demo.sh [--workload multi_turn] [--seed 1] [--requests 600] [--time-scale 10]
#                        [--replicas 4] [--profile l4-llama3-8b] [--policy consistent_hash]
#
# Needs nginx (bench/install-peers.sh nginx). Writes bench/results/replay-<date>-<workload>.md
# and .json. Times in the report are wall seconds: multiply by the time scale for simulated
# GPU seconds (the replicas run --time-scale times faster than the modelled H100s, and the
# trace is replayed as much faster).
set -euo pipefail
cd "$(dirname "$0")/.."
WORKLOAD=multi_turn SEED=1 REQUESTS=600 SCALE=10 POLICY=consistent_hash N=4 PROFILE=l4-llama3-8b
while [ $# -gt 0 ]; do
  case "$1" in
    --workload) WORKLOAD=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --time-scale) SCALE=$2; shift 2 ;;
    --policy) POLICY=$2; shift 2 ;;
    --replicas) N=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
command -v nginx >/dev/null || bench/install-peers.sh nginx
BIN=${SWITCHYARD_BIN:-target/release/switchyard}
[ -x "$BIN" ] || cargo build --release -q -p switchyard
TMP=$(mktemp -d /tmp/switchyard-replay.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

SIM_A=18601 SIM_B=18611 GW=18680 NGX=18681
for base in $SIM_A $SIM_B; do
  "$BIN" sim --replicas "$N" --profile "$PROFILE" --port $base --model llama-3-8b --time-scale "$SCALE" --seed "$SEED" >"$TMP/sim-$base.log" 2>&1 &
  PIDS+=($!)
done
{
  printf 'listen: 127.0.0.1:%s\nmodels:\n  llama-3-8b:\n    policy: %s\n    backends:\n' $GW "$POLICY"
  for i in $(seq 0 $((N - 1))); do printf '      - url: http://127.0.0.1:%s\n' $((SIM_A + i)); done
} >"$TMP/switchyard.yaml"
SERVERS=""
for i in $(seq 0 $((N - 1))); do SERVERS="$SERVERS server 127.0.0.1:$((SIM_B + i));"; done
SWITCHYARD_LOG=warn "$BIN" serve --config "$TMP/switchyard.yaml" >"$TMP/gw.log" 2>&1 &
PIDS+=($!)
mkdir -p "$TMP/nginx/logs"
cat >"$TMP/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  # Keep request bodies (long multi-turn prompts) in memory: the worker user cannot write
  # under this root-owned temp dir, and a body spilled to disk would get a 500.
  client_body_buffer_size 1m;
  client_body_temp_path $TMP/nginx/body;
  proxy_temp_path $TMP/nginx/proxy;
  upstream sims { $SERVERS keepalive 64; }
  server {
    listen 127.0.0.1:$NGX;
    location / {
      proxy_pass http://sims;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 300s;
    }
  }
}
CONF
nginx -p "$TMP/nginx" -c "$TMP/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
for port in $(seq $SIM_A $((SIM_A + N - 1))) $(seq $SIM_B $((SIM_B + N - 1))) $GW $NGX; do
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
done

"$BIN" bench trace --workload "$WORKLOAD" --seed "$SEED" --limit "$REQUESTS" --out "$TMP/$WORKLOAD.jsonl"
"$BIN" bench replay --trace "$TMP/$WORKLOAD.jsonl" --model llama-3-8b --time-scale "$SCALE" \
  --slo-ttft "$(python3 -c "print(2.0 / $SCALE)")" --timeout 120 \
  --target "switchyard-$POLICY=http://127.0.0.1:$GW" --target "nginx-round-robin=http://127.0.0.1:$NGX" \
  --note "$N simulated $PROFILE replicas per target (fresh per target), time scale $SCALE; times are wall seconds (x$SCALE = simulated)"
