#!/usr/bin/env python3
"""Front-door benchmark: half-open (slowloris) connections against a release gateway.

Starts `switchyard bench mock` (a fast OpenAI upstream) and `switchyard serve` in front of it,
both on 127.0.0.1, then:
  1. times N normal chat completions, one after another (the baseline);
  2. opens C connections that each send half a request header and then nothing;
  3. times N normal requests again while those connections are open;
  4. waits until the gateway has closed every half-open connection, noting when each closed.
Writes bench/results/frontdoor-<date>.md and .json. Bounded: everything stops by itself
after the header-read timeout plus 30 s at most.

Usage: bench/frontdoor.py [--bin target/release/switchyard] [--connections 2000]
                          [--header-timeout 10] [--requests 200]
"""

import argparse
import datetime
import json
import os
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAT = b'{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":8}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    for _ in range(400):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"{what} exited early")
            time.sleep(0.05)
    sys.exit(f"{what} did not start")


def timed_requests(port, n):
    """Seconds per request over one kept-alive connection, n requests in a row."""
    req = (
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % len(CHAT) + CHAT
    )
    out = []
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = s.makefile("rb")
    for _ in range(n):
        t = time.perf_counter()
        s.sendall(req)
        status = f.readline()
        length = 0
        while True:
            line = f.readline()
            if line in (b"\r\n", b""):
                break
            k, _, v = line.decode().partition(":")
            if k.strip().lower() == "content-length":
                length = int(v)
        f.read(length)
        out.append(time.perf_counter() - t)
        assert status.startswith(b"HTTP/1.1 200"), status
    s.close()
    return out


def summary(xs):
    xs = sorted(xs)
    return {
        "p50_ms": round(statistics.median(xs) * 1000, 3),
        "p99_ms": round(xs[int(0.99 * (len(xs) - 1))] * 1000, 3),
        "max_ms": round(xs[-1] * 1000, 3),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "switchyard"))
    ap.add_argument("--connections", type=int, default=2000)
    ap.add_argument("--header-timeout", type=float, default=10.0)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.connections + 256
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))

    tmp = Path(tempfile.mkdtemp(prefix="switchyard-frontdoor-"))
    mock_port, gw_port = free_port(), free_port()
    mock = subprocess.Popen([args.bin, "bench", "mock", "--listen", f"127.0.0.1:{mock_port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cfg = tmp / "gw.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{gw_port}\ndrain_delay: 0\nscrape: {{enabled: false}}\n"
        f"limits: {{header_read_timeout: {args.header_timeout}s, max_connections: {args.connections + 100}}}\n"
        f"models:\n  m:\n    backends:\n      - url: http://127.0.0.1:{mock_port}\n"
    )
    gw = subprocess.Popen([args.bin, "--log", "error", "serve", "--config", str(cfg)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(mock_port, mock, "mock")
        wait_port(gw_port, gw, "gateway")
        timed_requests(gw_port, 50)  # warm up
        before = timed_requests(gw_port, args.requests)

        sel = selectors.DefaultSelector()
        opened = {}
        for _ in range(args.connections):
            s = socket.create_connection(("127.0.0.1", gw_port))
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-")
            s.setblocking(False)
            opened[s.fileno()] = (s, time.monotonic())
            sel.register(s, selectors.EVENT_READ)
        all_sent = time.monotonic()

        during = timed_requests(gw_port, args.requests)
        during_done = time.monotonic()

        closed_after = []
        deadline = all_sent + args.header_timeout + 30
        while opened and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s, t0 = opened[key.fd]
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                if data:
                    continue
                closed_after.append(time.monotonic() - t0)
                sel.unregister(s)
                del opened[key.fd]
                s.close()
        still_open = len(opened)
        for s, _ in opened.values():
            s.close()
        health_ok = timed_requests(gw_port, 1) is not None
    finally:
        gw.terminate()
        mock.terminate()
        gw.wait(timeout=30)
        mock.wait(timeout=30)

    result = {
        "command": "bench/frontdoor.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "binary": args.bin,
        "connections": args.connections,
        "header_read_timeout_s": args.header_timeout,
        "requests": args.requests,
        "normal_request_before": summary(before),
        "normal_request_during": summary(during),
        "added_p50_ms": round((statistics.median(during) - statistics.median(before)) * 1000, 3),
        "measured_during_s": round(during_done - all_sent, 3),
        "closed": len(closed_after),
        "still_open": still_open,
        "close_after_s": {
            "min": round(min(closed_after), 3) if closed_after else None,
            "max": round(max(closed_after), 3) if closed_after else None,
        },
        "answered_after": health_ok,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"frontdoor-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    b, d = result["normal_request_before"], result["normal_request_during"]
    md = f"""# Front door: half-open connections

Command: `{result['command']}` (release build, `{result['binary']}`), {result['date']}.
Upstream: `switchyard bench mock`; everything on 127.0.0.1; 2 cores shared by client, gateway
and mock.

{args.connections} connections each sent half a request header and then nothing, with
`limits.header_read_timeout: {args.header_timeout:g}s`.

| | p50 | p99 | max |
|---|---|---|---|
| normal request, before | {b['p50_ms']} ms | {b['p99_ms']} ms | {b['max_ms']} ms |
| normal request, with {args.connections} half-open connections | {d['p50_ms']} ms | {d['p99_ms']} ms | {d['max_ms']} ms |

- Added p50 latency of a normal request while they were open: **{result['added_p50_ms']} ms**
  (acceptance: within 100 ms).
- Half-open connections closed by the gateway: **{result['closed']} of {args.connections}**
  ({result['still_open']} still open at the end), each closed
  {result['close_after_s']['min']} to **{result['close_after_s']['max']} s** after its half
  header was sent (acceptance: within the timeout plus 5 s, {args.header_timeout + 5:g} s).
- The gateway still answered afterwards: {result['answered_after']}.
"""
    stem.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
