#!/usr/bin/env bash
# Issue 5's real-time check: the same trace replayed through the real gateway, once per routing
# policy, each gateway in front of its own fresh set of `switchyard sim` replicas (so no policy
# inherits another's warm prefix caches). The ranking of the policies should match the
# virtual-time `switchyard bench decisions` run of the same workload.
# Everything on 127.0.0.1, bounded in requests and time, stopped by pid on exit.
#
#   bench/ranking.sh [--workload shared_prefix] [--seed 1] [--requests 400] [--time-scale 10]
#                    [--replicas 4] [--profile l4-llama3-8b]
#                    [--policies round_robin,least_loaded,prefix_aware]
#
# Writes bench/results/replay-<date>-<workload>.md and .json (one row per policy). Times in the
# report are wall seconds: multiply by the time scale for simulated GPU seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
WORKLOAD=shared_prefix SEED=1 REQUESTS=400 SCALE=10 N=4 PROFILE=l4-llama3-8b
POLICIES=round_robin,least_loaded,prefix_aware
while [ $# -gt 0 ]; do
  case "$1" in
    --workload) WORKLOAD=$2; shift 2 ;;
    --seed) SEED=$2; shift 2 ;;
    --requests) REQUESTS=$2; shift 2 ;;
    --time-scale) SCALE=$2; shift 2 ;;
    --replicas) N=$2; shift 2 ;;
    --profile) PROFILE=$2; shift 2 ;;
    --policies) POLICIES=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
BIN=${SWITCHYARD_BIN:-target/release/switchyard}
[ -x "$BIN" ] || cargo build --release -q -p switchyard
TMP=$(mktemp -d /tmp/switchyard-ranking.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

TARGETS=()
i=0
IFS=',' read -ra LIST <<<"$POLICIES"
for policy in "${LIST[@]}"; do
  sim=$((18700 + 20 * i)) gw=$((18790 + i))
  "$BIN" sim --replicas "$N" --profile "$PROFILE" --port $sim --model llama-3-8b \
    --time-scale "$SCALE" --seed "$SEED" >"$TMP/sim-$policy.log" 2>&1 &
  PIDS+=($!)
  {
    printf 'listen: 127.0.0.1:%s\nscrape: {interval: %s}\nmodels:\n  llama-3-8b:\n    policy: %s\n    backends:\n' \
      $gw "$(python3 -c "print(f'{max(0.02, 0.5 / $SCALE):.3f}s')")" "$policy"
    for r in $(seq 0 $((N - 1))); do printf '      - url: http://127.0.0.1:%s\n' $((sim + r)); done
  } >"$TMP/gw-$policy.yaml"
  SWITCHYARD_LOG=warn "$BIN" serve --config "$TMP/gw-$policy.yaml" >"$TMP/gw-$policy.log" 2>&1 &
  PIDS+=($!)
  for port in $(seq $sim $((sim + N - 1))) $gw; do
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
  done
  TARGETS+=(--target "$policy=http://127.0.0.1:$gw")
  i=$((i + 1))
done

"$BIN" bench trace --workload "$WORKLOAD" --seed "$SEED" --limit "$REQUESTS" --out "$TMP/$WORKLOAD.jsonl"
"$BIN" bench replay --trace "$TMP/$WORKLOAD.jsonl" --model llama-3-8b --time-scale "$SCALE" \
  --slo-ttft "$(python3 -c "print(2.0 / $SCALE)")" --timeout 120 "${TARGETS[@]}" \
  --note "real-time ranking: one gateway per policy, each in front of its own $N simulated $PROFILE replicas (fresh), time scale $SCALE, scrape interval 0.5 s simulated; times are wall seconds (x$SCALE = simulated)"
