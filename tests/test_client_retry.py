"""Retries and errors against a real local HTTP server that misbehaves on purpose.

This stub (stdlib ``http.server`` on a free loopback port) is the one stand-in
server in the client tests: it answers 503/429 a scripted number of times before
a 200, which the real service cannot be made to do on demand.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from clients.client import AsyncZooClient, ZooClient
from clients.transport import ZooError


class Script:
    """Per-path list of (status, headers, body) answered in order; the last repeats."""

    def __init__(self, answers: dict[str, list[tuple[int, dict, object]]]) -> None:
        self.answers = answers
        self.seen: list[tuple[str, str, dict]] = []  # (method, path, headers)
        self.times: list[float] = []


def _handler(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            script.seen.append((self.command, self.path, dict(self.headers)))
            script.times.append(time.monotonic())
            queue = script.answers.get(self.path, [(404, {}, {"error": f"no route {self.path}"})])
            status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
            data = json.dumps(body).encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

    return Handler


@pytest.fixture
def stub():
    servers = []

    def start(answers):
        script = Script(answers)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", script

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


OVERLOADED = (503, {}, {"error": "process is overloaded"})


def test_sync_retries_503_then_succeeds_honouring_retry_after(stub):
    url, script = stub({"/models/sine-rnn/forecast": [(503, {"Retry-After": "1"}, {"error": "process is overloaded"}),
                                           OVERLOADED, (200, {}, {"forecast": [0.5, 0.25]})]})
    with ZooClient(url, retries=3, backoff=0.05, token="s3cret") as zoo:
        assert zoo.forecast([0.1, 0.2], steps=2) == [0.5, 0.25]
        assert zoo.retries_done == 2
    assert len(script.seen) == 3
    assert script.times[1] - script.times[0] >= 1.0  # Retry-After: 1 was waited out
    assert script.times[2] - script.times[1] < 0.5  # no Retry-After: short jittered backoff
    assert all(h.get("Authorization") == "Bearer s3cret" for _, _, h in script.seen)


def test_gives_up_after_retries_with_server_message(stub):
    url, script = stub({"/models/sine-rnn/forecast": [OVERLOADED]})
    with ZooClient(url, retries=2, backoff=0.01) as zoo, pytest.raises(ZooError) as info:
        zoo.forecast([0.1], steps=1)
    assert info.value.status == 503 and info.value.message == "process is overloaded"
    assert len(script.seen) == 3  # one try + two retries


def test_client_errors_are_not_retried(stub):
    url, script = stub({"/models/mnist-mlp/classify": [(400, {}, {"error": "file 'x.png' is not an image"})]})
    with ZooClient(url, retries=3, backoff=0.01) as zoo, pytest.raises(ZooError) as info:
        zoo.classify("mnist-mlp", b"not an image")
    assert info.value.status == 400 and "x.png" in info.value.message
    assert len(script.seen) == 1


def test_async_retries_429_then_succeeds(stub):
    result = [{"label": "7", "index": 7, "score": 0.9, "top_k": []}]
    url, script = stub({"/models/mnist-mlp/classify": [(429, {"Retry-After": "0"}, {"error": "slow down"}), (200, {}, result)]})

    async def go():
        async with AsyncZooClient(url, retries=2, backoff=0.01) as zoo:
            return await zoo.classify("mnist-mlp", b"\x89PNG\r\n\x1a\n....")

    assert asyncio.run(go()) == result
    assert len(script.seen) == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_retried_then_names_url():
    url = f"http://127.0.0.1:{_closed_port()}"
    with ZooClient(url, retries=2, backoff=0.01) as zoo:
        with pytest.raises(ZooError) as info:
            zoo.forecast([0.1], steps=1)
        assert zoo.retries_done == 2
    assert info.value.status is None and str(info.value).startswith(f"cannot connect to {url}")


def test_cli_cannot_connect_names_the_url_and_how_to_get_a_service():
    url = f"http://127.0.0.1:{_closed_port()}"
    bad = subprocess.run([sys.executable, "-m", "clients", "health", "--url", url], capture_output=True, text=True,
                         timeout=60, env={k: v for k, v in os.environ.items() if k != "ZOO_URL"})
    assert bad.returncode == 1 and bad.stdout == ""
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1, bad.stderr
    assert lines[0].startswith(f"zoo health: error: cannot connect to {url} ("), lines[0]
    assert "`make serve`" in lines[0] and "--url" in lines[0] and "$ZOO_URL" in lines[0], lines[0]


def test_cli_forecast_retries_and_cli_errors_are_one_line(stub):
    url, script = stub({"/models/sine-rnn/forecast": [OVERLOADED, (200, {}, {"forecast": [1.5, -0.5]})],
                        "/models/mnist-mlp/classify": [(400, {}, {"error": "too many files"})]})
    run = lambda *a: subprocess.run([sys.executable, "-m", "clients", *a], capture_output=True, text=True, timeout=60)
    ok = run("forecast", "--url", url, "--history", "0.1, 0.2,0.3", "--steps", "2")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "1.5,-0.5"
    method, path, headers = script.seen[-1]
    assert (method, path) == ("POST", "/models/sine-rnn/forecast")
    for args, expected in [
        (("forecast", "--url", url, "--history", "0.1,abc"), "--history value 2: 'abc' is not a number"),
        (("forecast", "--url", f"http://127.0.0.1:{_closed_port()}", "--history", "1", "--retries", "0"), "cannot connect to http://127.0.0.1:"),
        (("classify", "--url", url, "--model", "a/b", "x.png"), "invalid model name 'a/b'"),
        (("health", "--url", url), "NOT ready"),
    ]:
        bad = run(*args)
        assert bad.returncode != 0
        text = (bad.stderr + bad.stdout).strip()
        assert expected in text and "Traceback" not in text, text
