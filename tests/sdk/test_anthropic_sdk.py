"""The official `anthropic` Python SDK, unchanged, against `POST /v1/messages` of a running
`switchyard serve`, and the `openai` SDK against an `anthropic`-kind backend.

Two mock upstreams on 127.0.0.1 (real sockets): an OpenAI-compatible one that answers with a
tool call (JSON or chat chunks), and an Anthropic one written from the Messages API's
documented shapes (JSON or its event stream). The SDKs talk only to the gateway.
"""

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import openai
import pytest
from streams import serve

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("SWITCHYARD_BIN", ROOT / "target" / "debug" / "switchyard"))

TOOLS_ANTHROPIC = [{
    "name": "weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}]
TOOLS_OPENAI = [{"type": "function", "function": {
    "name": "weather", "description": "Current weather in a city",
    "parameters": TOOLS_ANTHROPIC[0]["input_schema"],
}}]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _read(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.seen.append((self.path, dict(self.headers), body))
        return body

    def _json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, events):
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for text in events:
            data = text.encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class OpenAIUpstream(Handler):
    """Answers every chat request with "Checking." and a call of `weather` for Rome."""

    def do_POST(self):
        body = self._read()
        if not body.get("stream"):
            self._json({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                    "role": "assistant", "content": "Checking.",
                    "tool_calls": [{"id": "call_1", "type": "function",
                                    "function": {"name": "weather", "arguments": "{\"city\": \"Rome\"}"}}]}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28},
            })
            return
        base = {"id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": body["model"]}
        deltas = [
            ({"role": "assistant", "content": ""}, None),
            ({"content": "Checking."}, None),
            ({"tool_calls": [{"index": 0, "id": "call_2", "type": "function",
                              "function": {"name": "weather", "arguments": ""}}]}, None),
            ({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}, None),
            ({"tool_calls": [{"index": 0, "function": {"arguments": "\"Rome\"}"}}]}, None),
            ({}, "tool_calls"),
        ]
        events = [f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': d, 'finish_reason': f}]})}\n\n"
                  for d, f in deltas]
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28}
            events.append(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n")
        events.append("data: [DONE]\n\n")
        self._sse(events)


def event(name, data):
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"


class AnthropicUpstream(Handler):
    """A Messages API server: "Let me check." and a `weather` tool_use for Paris."""

    def do_POST(self):
        body = self._read()
        if self.path != "/v1/messages" or self.headers.get("x-api-key") != "sk-ant-sdk":
            data = json.dumps({"type": "error", "error": {"type": "authentication_error", "message": "bad key"}}).encode()
            self.send_response(401)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if not body.get("stream"):
            self._json({
                "id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                "content": [{"type": "text", "text": "Let me check."},
                            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
                "stop_reason": "tool_use", "stop_sequence": None,
                "usage": {"input_tokens": 30, "output_tokens": 12},
            })
            return
        self._sse([
            event("message_start", {"message": {
                "id": "msg_2", "type": "message", "role": "assistant", "model": body["model"], "content": [],
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 30, "output_tokens": 1}}}),
            event("ping", {}),
            event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
            event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Let me "}}),
            event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "check."}}),
            event("content_block_stop", {"index": 0}),
            event("content_block_start", {"index": 1, "content_block": {
                "type": "tool_use", "id": "toolu_2", "name": "weather", "input": {}}}),
            event("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\": "}}),
            event("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            event("content_block_stop", {"index": 1}),
            event("message_delta", {"delta": {"stop_reason": "tool_use", "stop_sequence": None},
                                    "usage": {"output_tokens": 12}}),
            event("message_stop", {}),
        ])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(handler):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.seen = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    local, hosted = start(OpenAIUpstream), start(AnthropicUpstream)
    port = free_port()
    cfg = tmp_path_factory.mktemp("cfg") / "switchyard.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{port}\ndrain_delay: 0\nmodels:\n"
        f"  llama:\n    backends:\n      - url: http://127.0.0.1:{local.server_address[1]}\n"
        f"  claude:\n    backends:\n      - url: http://127.0.0.1:{hosted.server_address[1]}\n"
        "        provider: anthropic\n        model: claude-test\n        api_key: ${SWITCHYARD_SDK_ANTHROPIC_KEY}\n"
    )
    os.environ["SWITCHYARD_SDK_ANTHROPIC_KEY"] = "sk-ant-sdk"
    proc = serve(BINARY, cfg, port)
    yield f"http://127.0.0.1:{port}", local, hosted
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    local.shutdown()
    hosted.shutdown()


def messages_client(url):
    return anthropic.Anthropic(base_url=url, api_key="sk-client", max_retries=0)


def test_anthropic_sdk_gets_a_tool_call_from_an_openai_backend(gateway):
    url, local, _ = gateway
    msg = messages_client(url).messages.create(
        model="llama", max_tokens=100, system="Be brief.", tools=TOOLS_ANTHROPIC,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text == "Checking."
    tool = msg.content[1]
    assert (tool.type, tool.id, tool.name, tool.input) == ("tool_use", "call_1", "weather", {"city": "Rome"})
    assert msg.stop_reason == "tool_use"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (20, 8)
    path, _, sent = local.seen[-1]
    assert path == "/v1/chat/completions"
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["tools"][0]["function"]["name"] == "weather"


def test_anthropic_sdk_streams_a_tool_call_from_an_openai_backend(gateway):
    url, _, _ = gateway
    with messages_client(url).messages.stream(
        model="llama", max_tokens=100, tools=TOOLS_ANTHROPIC,
        messages=[{"role": "user", "content": "Weather in Rome?"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Checking."
    tool = final.content[1]
    assert (tool.type, tool.id, tool.name, tool.input) == ("tool_use", "call_2", "weather", {"city": "Rome"})
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 8


def test_anthropic_sdk_passes_through_to_an_anthropic_backend(gateway):
    url, _, hosted = gateway
    msg = messages_client(url).messages.create(
        model="claude", max_tokens=100, tools=TOOLS_ANTHROPIC,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert msg.content[1].input == {"city": "Paris"}
    path, headers, sent = hosted.seen[-1]
    assert sent["model"] == "claude-test"
    assert {k.lower(): v for k, v in headers.items()}["x-api-key"] == "sk-ant-sdk"


def test_anthropic_sdk_errors_are_typed(gateway):
    url, _, _ = gateway
    with pytest.raises(anthropic.NotFoundError) as e:
        messages_client(url).messages.create(
            model="nope", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "not_found_error"


def test_openai_sdk_gets_chat_completions_from_an_anthropic_backend(gateway):
    url, _, hosted = gateway
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-client", max_retries=0)
    reply = client.chat.completions.create(
        model="claude", tools=TOOLS_OPENAI,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"}],
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    call = choice.message.tool_calls[0]
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == ("toolu_1", "weather", {"city": "Paris"})
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (30, 12)
    _, _, sent = hosted.seen[-1]
    assert sent["system"] == "Be brief." and sent["max_tokens"] == 4096


def test_openai_sdk_streams_chunks_from_an_anthropic_backend(gateway):
    url, _, _ = gateway
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-client", max_retries=0)
    stream = client.chat.completions.create(
        model="claude", tools=TOOLS_OPENAI, stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    text, args, finish, usage, call_id = "", "", None, None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            call_id = call.id or call_id
            args += call.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == "Let me check."
    assert call_id == "toolu_2" and json.loads(args) == {"city": "Paris"}
    assert finish == "tool_calls"
    assert (usage.prompt_tokens, usage.completion_tokens) == (30, 12)
