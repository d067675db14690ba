"""The `openai` Python SDK with API keys against `switchyard serve` with `auth:` on: typed
errors for a bad key (AuthenticationError), a model the key may not use
(PermissionDeniedError) and a spent rate limit (RateLimitError), and a metered stream that
looks to the client exactly as it asked for it.
"""

import threading
from http.server import ThreadingHTTPServer

import openai
import pytest
from streams import collect, serve
from test_openai_sdk import BINARY, Upstream, free_port

KEY = "sk-sdk-test-key-0123456789"
LIMITED = "sk-sdk-limited-key-0123456789"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = free_port()
    cfg = tmp_path_factory.mktemp("cfg") / "switchyard.yaml"
    cfg.write_text(
        f"listen: 127.0.0.1:{port}\ndrain_delay: 1s\n"
        "auth:\n  keys:\n"
        f"    - {{key: {KEY}, tenant: team-a, models: [llama]}}\n"
        f"    - {{key: {LIMITED}, tenant: team-b, rpm: 1}}\n"
        "models:\n  llama:\n    backends:\n"
        f"      - url: http://127.0.0.1:{srv.server_address[1]}\n"
        "  other:\n    backends:\n"
        f"      - url: http://127.0.0.1:{srv.server_address[1]}\n"
    )
    proc = serve(BINARY, cfg, port)
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    srv.shutdown()


def ask(client, model="llama"):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])


def test_a_good_key_passes(gateway):
    reply = ask(openai.OpenAI(base_url=gateway, api_key=KEY))
    assert reply.choices[0].message.content == "Hello from upstream"


def test_a_bad_key_is_an_authentication_error(gateway):
    with pytest.raises(openai.AuthenticationError) as e:
        ask(openai.OpenAI(base_url=gateway, api_key="sk-wrong-wrong-wrong", max_retries=0))
    assert e.value.status_code == 401
    assert e.value.code == "invalid_api_key"


def test_a_model_the_key_may_not_use_is_permission_denied(gateway):
    with pytest.raises(openai.PermissionDeniedError) as e:
        ask(openai.OpenAI(base_url=gateway, api_key=KEY, max_retries=0), model="other")
    assert e.value.code == "model_not_allowed"


def test_a_spent_rate_limit_is_a_rate_limit_error(gateway):
    client = openai.OpenAI(base_url=gateway, api_key=LIMITED, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="llama", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "1"
    assert raw.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError) as e:
        ask(client)
    assert e.value.code == "rate_limit_exceeded"
    assert int(e.value.response.headers["retry-after"]) >= 1


def test_a_metered_stream_shows_no_usage_chunk_it_did_not_ask_for(gateway):
    client = openai.OpenAI(base_url=gateway, api_key=KEY)
    stream = client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text, usage = collect(stream)
    assert text == "Hello from upstream"
    assert usage is None
    # The upstream was asked for usage all the same (the gateway counts the tokens).
    assert Upstream.seen[-1][1]["stream_options"] == {"include_usage": True}
