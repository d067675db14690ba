#!/usr/bin/env python3
"""Crafted-bodies benchmark: what bodies built to be expensive to parse cost a release gateway.

Starts a small upstream (in this script: reads each body whole, answers a fixed chat
completion) and `switchyard serve` in front of it with default limits, both on 127.0.0.1.
Then, for each of three body shapes (issue 12), sends C of them at once, each B bytes:
  - empty_messages: {"model":"m","messages":[{},{},{},...]}
  - token_ids:      {"model":"m","prompt":[[1,1,1,...]]}
  - long_content:   {"model":"m","messages":[{"role":"user","content":"xxxx..."}]}
and reads the gateway's peak resident set (VmHWM in /proc/<pid>/status) before and after;
the peak is reset between shapes (`5` to /proc/<pid>/clear_refs). While the bodies are in
flight and afterwards, GET /health must answer. Bounded: each shape has 120 s at most.
Writes bench/results/crafted-bodies-<date>.md and .json.

Usage: bench/crafted-bodies.py [--bin target/release/switchyard] [--concurrent 4]
                               [--mib 24] [--out bench/results] [--name crafted-bodies]
"""

import argparse
import datetime
import http.server
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from frontdoor import free_port, wait_port

ROOT = Path(__file__).resolve().parents[1]
ANSWER = (
    b'{"id":"c","object":"chat.completion","choices":[{"index":0,"message":'
    b'{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
)


class Upstream(http.server.BaseHTTPRequestHandler):
    """Reads the body whole (counting it), answers a fixed completion."""

    protocol_version = "HTTP/1.1"
    received = []

    def do_POST(self):
        left = int(self.headers.get("content-length", "0"))
        got = 0
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            got += len(chunk)
            left -= len(chunk)
        Upstream.received.append(got)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def do_GET(self):
        self.send_response(404)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def body(shape, size):
    """A body of exactly `size` bytes of the given shape."""
    if shape == "empty_messages":
        head, tail, unit, last = b'{"model":"m","messages":[', b"]}", b"{},", b"{}"
    elif shape == "token_ids":
        head, tail, unit, last = b'{"model":"m","prompt":[[', b"]]}", b"1,", b"1"
    else:
        head, tail = b'{"model":"m","messages":[{"role":"user","content":"', b'"}]}'
        unit, last = b"x", b"x"
    n = (size - len(head) - len(tail) - len(last)) // len(unit)
    out = head + unit * n + last + tail
    return out + b" " * (size - len(out))


def status_kib(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for {pid}")


def request(port, method, path, payload=b"", timeout=120):
    """One request on a fresh connection: (status, response body); status 0 when it failed or
    timed out."""
    try:
        return exchange(port, method, path, payload, timeout)
    except OSError:
        return 0, b""


def exchange(port, method, path, payload, timeout):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(
        f"{method} {path} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode()
    )
    if payload:
        s.sendall(payload)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    return (int(head.split()[1]) if head else 0), rest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "switchyard"))
    ap.add_argument("--concurrent", type=int, default=4)
    ap.add_argument("--mib", type=int, default=24)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--name", default="crafted-bodies")
    args = ap.parse_args()
    size = args.mib << 20

    upstream_port, gw_port = free_port(), free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", upstream_port), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix="switchyard-crafted-"))
    cfg = tmp / "gw.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{gw_port}\nscrape: {{enabled: false}}\n"
        f"models:\n  m:\n    policy: prefix_aware\n    backends:\n"
        f"      - url: http://127.0.0.1:{upstream_port}\n"
    )
    gw = subprocess.Popen([args.bin, "--log", "error", "serve", "--config", str(cfg)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        wait_port(gw_port, gw, "gateway")
        small = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
        assert request(gw_port, "POST", "/v1/chat/completions", small)[0] == 200
        for shape in ["empty_messages", "token_ids", "long_content"]:
            payload = body(shape, size)
            path = "/v1/completions" if shape == "token_ids" else "/v1/chat/completions"
            Path(f"/proc/{gw.pid}/clear_refs").write_text("5")
            rss_before = status_kib(gw.pid, "VmRSS")
            statuses = []
            threads = [
                threading.Thread(
                    target=lambda: statuses.append(request(gw_port, "POST", path, payload)[0]))
                for _ in range(args.concurrent)
            ]
            started = time.monotonic()
            for t in threads:
                t.start()
            health_during = []
            while any(t.is_alive() for t in threads) and time.monotonic() - started < 120:
                health_during.append(request(gw_port, "GET", "/health", timeout=10)[0])
                time.sleep(0.05)
            for t in threads:
                t.join(timeout=max(1, 120 - (time.monotonic() - started)))
            seconds = time.monotonic() - started
            peak = status_kib(gw.pid, "VmHWM")
            in_flight = args.concurrent * size
            rise = (peak - rss_before) * 1024
            rows.append({
                "shape": shape,
                "bodies": args.concurrent,
                "body_bytes": size,
                "statuses": sorted(statuses),
                "rss_before_mib": round(rss_before / 1024, 1),
                "peak_mib": round(peak / 1024, 1),
                "peak_rise_mib": round(rise / 2**20, 1),
                "rise_over_in_flight": round(rise / in_flight, 2),
                "health_during": f"{health_during.count(200)}/{len(health_during)} answered 200",
                "health_after": request(gw_port, "GET", "/health", timeout=10)[0],
                "seconds": round(seconds, 2),
            })
            print(json.dumps(rows[-1]), flush=True)
    finally:
        gw.terminate()
        gw.wait(timeout=30)
        server.shutdown()

    version = subprocess.run([args.bin, "--version"], capture_output=True, text=True).stdout.strip()
    result = {
        "command": "bench/crafted-bodies.py " + " ".join(sys.argv[1:]),
        "date": datetime.date.today().isoformat(),
        "binary": f"{args.bin} ({version})",
        "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{args.name}-{result['date']}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    table = "\n".join(
        f"| {r['shape']} | {', '.join(map(str, r['statuses']))} | {r['rss_before_mib']} | "
        f"{r['peak_mib']} | {r['peak_rise_mib']} | **{r['rise_over_in_flight']}x** | "
        f"{r['health_during']}, after: {r['health_after']} | {r['seconds']} |"
        for r in rows
    )
    md = f"""# Crafted bodies: peak memory of the gateway

Command: `{result['command']}` (release build, `{result['binary']}`), {result['date']}.
Gateway defaults (`max_body_bytes` 32 MiB), policy `prefix_aware`; upstream: a Python server
that reads each body whole and answers 200; everything on 127.0.0.1.

For each shape, {args.concurrent} bodies of {args.mib} MiB were sent at once
({args.concurrent * args.mib} MiB in flight). Peak RSS is VmHWM of the gateway process, reset
before each shape; the rise is over its RSS just before. Acceptance (issue 12): a rise of at
most 3x the bytes in flight, and `/health` answering (probed every 50 ms while the bodies were
in flight, each probe given 10 s; status 0 = no answer in time).

| shape | statuses | RSS before (MiB) | peak (MiB) | rise (MiB) | rise / bytes in flight | `/health` | seconds |
|---|---|---:|---:|---:|---:|---|---:|
{table}
"""
    stem.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
