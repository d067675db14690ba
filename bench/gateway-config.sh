# Sourced by bench/instructions.sh and bench/perf-stat.sh: the gateway config they measure.
#
#   write_gateway_config FILE LISTEN_PORT UPSTREAM_PORT [KEY]
#
# One model `m` over the upstream on 127.0.0.1. With KEY: auth, limits and admission on, as
# `bench overhead`'s switchyard-auth (a key with rpm, tpm and max_concurrent, a tenant with rpm
# and tpm, `admission: {}`).
write_gateway_config() {
  local file=$1 listen=$2 upstream=$3 key=${4:-} auth=""
  if [ -n "$key" ]; then
    auth="auth:
  tenants:
    bench: {rpm: 100000000, tpm: 100000000000}
  keys:
    - {key: $key, tenant: bench, rpm: 100000000, tpm: 100000000000, max_concurrent: 100000}
admission: {}"
  fi
  cat > "$file" <<CONF
listen: 127.0.0.1:$listen
$auth
models:
  m:
    backends:
      - url: http://127.0.0.1:$upstream
CONF
}
