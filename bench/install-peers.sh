#!/usr/bin/env bash
# Installs the peers `switchyard bench overhead --peers ...` compares against. Never run by the
# tests; `switchyard bench overhead` runs it when a requested peer is missing.
#
#   bench/install-peers.sh [nginx] [haproxy] [wrk] [litellm]     (no argument: all of them)
#
# - nginx, haproxy, wrk: Debian packages (`apt-get update` once, then `apt-get install -y`).
#   Package scripts are told not to start the services (the bench starts its own instances on
#   loopback ports under a temp dir and stops them by pid).
# - litellm: `litellm[proxy]==1.106.2` in a venv under the cache dir
#   (${SWITCHYARD_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-bench}/litellm-1.106.2),
#   reused when it is already there.
#
# Exits non-zero and names the peer when one cannot be installed; the others are still tried.
set -uo pipefail
LITELLM_VERSION=1.106.2
CACHE=${SWITCHYARD_BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard-bench}
want=("$@")
[ ${#want[@]} -eq 0 ] && want=(nginx haproxy wrk litellm)
failed=()

debs=()
for p in "${want[@]}"; do
  case "$p" in
    nginx | haproxy | wrk) command -v "$p" >/dev/null || debs+=("$p") ;;
    litellm) ;;
    *) echo "install-peers: unknown peer '$p' (known: nginx haproxy wrk litellm)" >&2; exit 2 ;;
  esac
done

if [ ${#debs[@]} -gt 0 ]; then
  # Keep the packages' maintainer scripts from starting system services on port 80.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  echo "install-peers: apt-get install ${debs[*]}" >&2
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null; }; then
    echo "install-peers: apt-get could not install ${debs[*]}" >&2
  fi
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  for p in "${debs[@]}"; do command -v "$p" >/dev/null || failed+=("$p"); done
fi

for p in "${want[@]}"; do
  [ "$p" = litellm ] || continue
  venv="$CACHE/litellm-$LITELLM_VERSION"
  # The stamp is written only after pip succeeded, so a half-made venv is made again.
  if [ -f "$venv/.switchyard-complete" ] && [ -x "$venv/bin/litellm" ]; then
    echo "install-peers: litellm already in $venv" >&2
    continue
  fi
  echo "install-peers: creating $venv (pip install 'litellm[proxy]==$LITELLM_VERSION')" >&2
  rm -rf "$venv" && mkdir -p "$CACHE"
  if python3 -m venv "$venv" \
    && "$venv/bin/pip" install -q --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION" >&2; then
    touch "$venv/.switchyard-complete"
  else
    failed+=(litellm)
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "install-peers: could not install: ${failed[*]}" >&2
  exit 1
fi
echo "install-peers: ok (${want[*]})" >&2
