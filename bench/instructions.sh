#!/usr/bin/env bash
# CPU instructions per proxied request, counted by callgrind, so the figure does not depend on
# what else the machine is doing (the wall-clock overhead runs in bench/overhead.sh do).
#
#   bench/instructions.sh BINARY [BINARY...]
#   INSTRUCTIONS_AUTH=1 bench/instructions.sh BINARY   # keyed: auth, limits and admission on,
#                                                     # as `bench overhead`'s switchyard-auth
#
# For each binary: serve one pool in front of an nginx `return 200` mock under callgrind, send
# 200 then 4200 requests (hey, 4 workers) in two runs, and report
# (Ir(4200) - Ir(200)) / 4000: start-up and shutdown cancel out. Loopback only; every process
# is stopped by pid. Needs valgrind, hey, nginx and curl.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY...]" >&2; exit 2; }
TMP=$(mktemp -d /tmp/switchyard-instructions.XXXXXX)
MOCK=18401 GW=18480
NGINX_PID=""
cleanup() { [ -n "$NGINX_PID" ] && kill "$NGINX_PID" 2>/dev/null; rm -rf "$TMP"; }
trap cleanup EXIT
BODY='{"id":"cmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
cat > "$TMP/nginx.conf" <<CONF
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$MOCK; location / { default_type application/json; return 200 '$BODY'; } }
}
CONF
nginx -p "$TMP" -c "$TMP/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
KEY=sk-instructions-0123456789abcdef
HEADER=()
. "$(dirname "$0")/gateway-config.sh"
if [ "${INSTRUCTIONS_AUTH:-0}" = 1 ]; then
  write_gateway_config "$TMP/sy.yaml" $GW $MOCK $KEY
  HEADER=(-H "Authorization: Bearer $KEY")
else
  write_gateway_config "$TMP/sy.yaml" $GW $MOCK
fi
echo '{"model":"m","messages":[{"role":"user","content":"Say hi"}],"max_tokens":8}' > "$TMP/req.json"

count() { # BINARY N -> total instructions of one run
  local out="$TMP/cg.out"
  SWITCHYARD_LOG=warn timeout 600 valgrind -q --tool=callgrind --callgrind-out-file="$out" \
    "$1" serve --config "$TMP/sy.yaml" &
  local pid=$!
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$GW/health" && break; sleep 0.1; done
  hey -n "$2" -c 4 -m POST -T application/json -D "$TMP/req.json" "${HEADER[@]}" \
    "http://127.0.0.1:$GW/v1/chat/completions" > "$TMP/hey.txt"
  grep -q "\[200\].*$2 responses" "$TMP/hey.txt" || { echo "not every request got 200" >&2; cat "$TMP/hey.txt" >&2; }
  kill -TERM "$pid"
  wait "$pid" || true
  grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}'
}

printf '| binary | instructions per request |\n|---|---:|\n'
for bin in "$@"; do
  small=$(count "$bin" 200)
  large=$(count "$bin" 4200)
  printf '| %s | %d |\n' "$bin" $(( (large - small) / 4000 ))
done
