"""The `openai` Python SDK, unchanged, against a running `switchyard serve`.

A small mock upstream (Python's http.server on 127.0.0.1, real sockets) answers OpenAI
chat completions, streaming or not; the SDK talks only to the gateway.
"""

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest
from streams import collect, serve

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("SWITCHYARD_BIN", ROOT / "target" / "debug" / "switchyard"))


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        Upstream.seen.append((self.path, body))
        if body.get("stream"):
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i, word in enumerate(["Hello", " from", " upstream"]):
                chunk = {
                    "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                    "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
                }
                self._chunk(f"data: {json.dumps(chunk)}\n\n")
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = {
                    "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": body["model"],
                    "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                }
                self._chunk(f"data: {json.dumps(usage)}\n\n")
            self._chunk("data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        reply = json.dumps({
            "id": "c1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from upstream"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def _chunk(self, text):
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    servers = []
    for _ in range(2):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    port = free_port()
    cfg = tmp_path_factory.mktemp("cfg") / "switchyard.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{port}\ndrain_delay: 1s\nmodels:\n  llama:\n    policy: least_connections\n    backends:\n"
        + "".join(f"      - url: http://127.0.0.1:{s.server_address[1]}\n        model: upstream-llama\n" for s in servers)
    )
    proc = serve(BINARY, cfg, port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    assert proc.wait(timeout=30) == 0, "gateway must exit 0 on SIGTERM"
    for s in servers:
        s.shutdown()


def test_models_list(gateway):
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="sk-test")
    assert [m.id for m in client.models.list()] == ["llama"]


def test_non_streaming(gateway):
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="sk-test")
    raw = client.chat.completions.with_raw_response.create(
        model="llama", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-switchyard-backend"].startswith("127.0.0.1:")
    assert raw.headers["x-request-id"]
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from upstream"
    assert reply.usage.total_tokens == 8
    # The backend saw its own model name, not the pool's.
    assert Upstream.seen[-1][1]["model"] == "upstream-llama"


def test_streaming_with_usage(gateway):
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="sk-test")
    stream = client.chat.completions.create(
        model="llama",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = collect(stream)
    assert text == "Hello from upstream"
    assert usage is not None and usage.completion_tokens == 3


def test_async_client(gateway):
    async def run():
        client = openai.AsyncOpenAI(base_url=gateway + "/v1", api_key="sk-test")
        replies = await asyncio.gather(*[
            client.chat.completions.create(model="llama", messages=[{"role": "user", "content": str(i)}])
            for i in range(8)
        ])
        await client.close()
        return replies

    replies = asyncio.run(run())
    assert all(r.choices[0].message.content == "Hello from upstream" for r in replies)


def test_errors_reach_the_sdk_as_typed_exceptions(gateway):
    client = openai.OpenAI(base_url=gateway + "/v1", api_key="sk-test", max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "model_not_found"


def test_check_rejects_a_bad_config_with_its_location(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  llama:\n    backends:\n      - url: http://127.0.0.1:1\n        wieght: 2\n")
    out = subprocess.run([str(BINARY), "check", "--config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2
    assert f"{bad}:5:9:" in out.stderr and "did you mean `weight`?" in out.stderr
    out = subprocess.run([str(BINARY), "serve", "--config", str(bad)], capture_output=True, text=True)
    assert out.returncode == 2 and "wieght" in out.stderr
    good = tmp_path / "good.yaml"
    good.write_text("models:\n  llama:\n    backends:\n      - url: http://127.0.0.1:1\n")
    out = subprocess.run([str(BINARY), "check", "--config", str(good)], capture_output=True, text=True)
    assert out.returncode == 0 and "ok (1 model, 1 backend" in out.stdout
