"""Helpers shared by the SDK tests."""

import socket
import subprocess
import time

import pytest


def serve(binary, cfg, port):
    """Starts `switchyard serve --config cfg` listening on `port`, its log in a file beside the
    config (a pipe nobody reads would block the gateway once full); returns the process once
    the port accepts, or fails the test with the log."""
    log_path = cfg.parent / "gateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(binary), "serve", "--config", str(cfg)], stderr=log)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    pytest.fail("gateway did not start: " + log_path.read_text())


def collect(stream):
    """Reads an `openai` chat completion stream to its end: (text, usage or None)."""
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage:
            usage = chunk.usage
    return text, usage
