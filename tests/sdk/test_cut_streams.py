"""The `openai` Python SDK, unchanged, reading streams that the backend cuts at every byte.

A raw-socket upstream on 127.0.0.1 answers each request with the first N bytes of a recorded
chat completion stream (N from the `x-cut` request header), chunked, and then closes the
connection without the final chunk. Through the gateway, the SDK must yield the text of every
whole event that arrived and then raise `openai.APIError`, never a JSON decode error, for a
cut at any byte, with LF and CRLF line endings.
"""

import json
import socket
import socketserver
import threading

import openai
import pytest
from streams import serve
from test_openai_sdk import BINARY, free_port

WORDS = ["Hel", "lo, ", "wor", "ld", "!"]


def recorded(newline):
    events = []
    for i, w in enumerate(WORDS):
        delta = {"role": "assistant", "content": w} if i == 0 else {"content": w}
        chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        events.append("data: " + json.dumps(chunk) + newline + newline)
    done = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    events.append("data: " + json.dumps(done) + newline + newline)
    events.append("data: [DONE]" + newline + newline)
    return events


class Cutter(socketserver.BaseRequestHandler):
    stream = b""

    def handle(self):
        buf = b""
        while not buf.endswith(b"}"):
            got = self.request.recv(65536)
            if not got:
                return
            buf += got
        head = buf.split(b"\r\n\r\n", 1)[0].decode().lower()
        cut = next(int(l.split(":", 1)[1]) for l in head.split("\r\n") if l.startswith("x-cut:"))
        body = Cutter.stream[:cut]
        out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        for i in range(0, len(body), 9):
            part = body[i:i + 9]
            out += b"%x\r\n" % len(part) + part + b"\r\n"
        self.request.sendall(out)
        self.request.shutdown(socket.SHUT_WR)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    up = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Cutter)
    up.daemon_threads = True
    threading.Thread(target=up.serve_forever, daemon=True).start()
    port = free_port()
    cfg = tmp_path_factory.mktemp("cut") / "switchyard.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{port}\ndrain_delay: 0\nretry: {{max_attempts: 1}}\nscrape: {{enabled: false}}\n"
        "models:\n  m:\n    breaker: {enabled: false}\n    outlier_detection: {enabled: false}\n"
        f"    backends:\n      - url: http://127.0.0.1:{up.server_address[1]}\n"
    )
    proc = serve(BINARY, cfg, port)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    up.shutdown()


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["lf", "crlf"])
def test_the_sdk_sees_the_text_that_arrived_then_an_api_error_for_a_cut_at_every_byte(gateway, newline):
    events = recorded(newline)
    stream = "".join(events).encode()
    Cutter.stream = stream
    client = openai.OpenAI(base_url=gateway, api_key="sk-test", max_retries=0)
    ends, pos = [], 0
    for e in events:
        pos += len(e.encode())
        ends.append(pos)
    for cut in range(1, len(stream) + 1):
        # With CRLF, `\r\n\r` already ends an event: a lone CR is a line ending too.
        slack = 1 if newline == "\r\n" else 0
        whole = sum(1 for end in ends if end - slack <= cut)
        # The SDK stops at [DONE], the last event: only a cut before its end is an error.
        expect_error = whole < len(events)
        expected_text = "".join(WORDS[: min(whole, len(WORDS))])
        text = ""
        try:
            for chunk in client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True,
                extra_headers={"x-cut": str(cut)},
            ):
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
        except openai.APIError as e:
            assert expect_error, f"cut at {cut}: unexpected {e!r}"
            assert e.code == "upstream_stream_broken", f"cut at {cut}: {e!r}"
        else:
            assert not expect_error, f"cut at {cut}: no APIError"
        assert text == expected_text, f"cut at {cut} of {len(stream)}"
