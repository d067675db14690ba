#!/usr/bin/env bash
# Proxy CPU, context switches and syscalls per request, read by `perf stat -p` on a running
# `switchyard serve` while wrk drives it: what callgrind's instruction count leaves out (the
# kernel, the runtime's threads parking and waking each other).
#
#   bench/perf-stat.sh BINARY open|keyed [SECONDS] [SERVE ARGS...]
#   bench/perf-stat.sh target/release/switchyard keyed 8 --workers 0
#
# Starts `BINARY bench mock` and `BINARY serve` in front of it (keyed: auth, limits and
# `admission: {}`, as `bench overhead`'s switchyard-auth), warms up for 2 s with
# `wrk -t1 -c32`, then counts over SECONDS (default 8) of the same load. Loopback only; both
# processes are stopped by pid
# before it returns. Needs wrk, perf (tracepoints are enough) and curl.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 BINARY open|keyed [SECONDS] [SERVE ARGS...]" >&2; exit 2; }
BIN=$1 MODE=$2 SECS=${3:-8}
shift $(( $# >= 3 ? 3 : 2 ))
TMP=$(mktemp -d)
MOCK=18601 GW=18680
KEY=sk-perf-stat-0123456789abcdef
MOCK_PID="" GW_PID=""
# SIGINT stops the gateway at once (SIGTERM would keep its listener open for drain_delay);
# the mock ends on SIGTERM.
cleanup() {
  [ -n "$GW_PID" ] && kill -INT "$GW_PID" 2>/dev/null
  [ -n "$MOCK_PID" ] && kill "$MOCK_PID" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$TMP"
}
trap cleanup EXIT
"$BIN" bench mock --listen 127.0.0.1:$MOCK --log warn & MOCK_PID=$!
HEADER=()
. "$(dirname "$0")/gateway-config.sh"
if [ "$MODE" = keyed ]; then
  write_gateway_config "$TMP/sy.yaml" $GW $MOCK $KEY
  HEADER=(-H "Authorization: Bearer $KEY")
else
  write_gateway_config "$TMP/sy.yaml" $GW $MOCK
fi
cat > "$TMP/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"Say hi"}],"max_tokens":8}'
wrk.headers["Content-Type"] = "application/json"
LUA
SWITCHYARD_LOG=warn "$BIN" serve --config "$TMP/sy.yaml" "$@" & GW_PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$GW/health" && break; sleep 0.1; done
URL="http://127.0.0.1:$GW/v1/chat/completions"
wrk -t1 -c32 -d2s -s "$TMP/post.lua" "${HEADER[@]}" "$URL" > /dev/null
perf stat -x, -o "$TMP/perf.txt" -p "$GW_PID" \
  -e 'task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter,syscalls:sys_enter_futex' &
PERF=$!
wrk -t1 -c32 -d"${SECS}s" -s "$TMP/post.lua" "${HEADER[@]}" "$URL" > "$TMP/wrk.txt"
kill -INT "$PERF"; wait "$PERF" 2>/dev/null || true
REQ=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
echo "$MODE $* requests=$REQ $(grep Requests/sec "$TMP/wrk.txt")"
# task-clock is in ms: per 1,000 requests it reads as microseconds per request.
awk -F, -v r="$REQ" '$1 ~ /^[0-9.]+$/ {printf "  %-32s %10.3f per 1k requests\n", $3, $1*1000/r}' "$TMP/perf.txt"
