"""`switchyard demo` as a user runs it: start it, read the URL it prints, talk to it with the
unchanged `openai` SDK (streaming and not), stop it with Ctrl-C (SIGINT), expect exit 0.
"""

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import openai
import pytest
from streams import collect

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("SWITCHYARD_BIN", ROOT / "target" / "debug" / "switchyard"))


@pytest.fixture(scope="module")
def demo():
    proc = subprocess.Popen(
        [str(BINARY), "demo", "--port", "0", "--no-traffic"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    found = {}
    lines = []

    def read():
        # Keep draining stdout (the demo prints a line per second) so it never blocks.
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"base_url = (http://127\.0\.0\.1:\d+/v1)", line)
            if m and "url" not in found:
                found["url"] = m.group(1)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.time() + 20
    while "url" not in found and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    if "url" not in found:
        proc.kill()
        pytest.fail("demo printed no base_url:\n" + "".join(lines) + proc.stderr.read())
    yield proc, found["url"], lines
    if proc.poll() is None:
        proc.kill()


def test_demo_serves_the_openai_sdk_and_stops_cleanly_on_ctrl_c(demo):
    proc, base_url, lines = demo
    client = openai.OpenAI(base_url=base_url, api_key="none", max_retries=0)
    assert [m.id for m in client.models.list()] == ["llama-3-8b"]

    reply = client.chat.completions.create(
        model="llama-3-8b", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8
    )
    assert len(reply.choices[0].message.content) == 32  # 8 simulated tokens of 4 characters
    assert reply.usage.completion_tokens == 8

    stream = client.chat.completions.create(
        model="llama-3-8b",
        messages=[{"role": "user", "content": "Hello again!"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = collect(stream)
    assert len(text) == 24
    assert usage is not None and usage.completion_tokens == 6

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=15) == 0, "demo must exit 0 on Ctrl-C"
    assert any("stopping" in line for line in lines)
