"""Process handling (issue 25, item 9) against a real ``bentoml serve``: no worker outlives its server,
and SIGTERM is not held for minutes by a load request that waits.

BentoML's arbiter starts every worker in a session of its own (circus ``os.setsid()``), so a signal to
the server's process group reaches the arbiter alone; service/control/parent.py makes a worker whose
arbiter is gone shut down. service/http/drain.py answers a waiting load 503 as soon as the worker's
graceful shutdown begins.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import psutil
import pytest
import torch
from harness import ROOT, TEST_ENV, make_checkpoint, serve

from devtools.launch import spawn_service

pytestmark = pytest.mark.slow
GONE_WITHIN_S = 10.0  # a worker's parent watch polls every 0.5 s
DRAIN_WITHIN_S = 20.0  # SIGTERM to exit with a load waiting (it waited up to traffic.timeout, 120 s)


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    t0 = time.monotonic()
    while alive(pids) and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
    return alive(pids)


def kill(pids: list[int]) -> None:
    for pid in alive(pids):
        os.kill(pid, signal.SIGKILL)


def test_no_worker_survives_its_server_after_a_replacement(tmp_path):
    (tmp_path / "home").mkdir()
    with serve(tmp_path / "home", tmp_path / "server.log", {"MODEL_ZOO_WORKERS": "2"}) as server:
        first = [p.pid for p in server.workers()]
        assert len(first) == 2, server.tail()
        os.kill(first[0], signal.SIGKILL)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            now = alive([p.pid for p in server.workers()])
            if len(now) == 2 and first[0] not in now:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"no replacement worker after 60 s: {server.tail()}")
        server.wait_ready(60)
        workers = now
        try:
            # what devtools/launch.py's stop does last (and first, for an arbiter that outlives its SIGTERM)
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait(10)
            left = wait_gone(workers, GONE_WITHIN_S)
            assert not left, f"workers {left} of {workers} outlived their server (replacement: {workers[-1] not in first})"
        finally:
            kill(workers)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A BENTOML_HOME with one MLP ("hang"), exported by the real CLI."""
    from fixtures_data import mnist_data_dir
    from training.specs import make_spec

    tmp = tmp_path_factory.mktemp("hang")
    torch.manual_seed(0)
    ckpt = make_checkpoint(tmp / "mlp.pt", "mnist-mlp", make_spec("mnist-mlp"), train={"data_dir": str(mnist_data_dir())})
    done = subprocess.run([sys.executable, "-m", "export", str(ckpt), "--name", "hang", "--formats", "onnx"],
                          cwd=ROOT, env={**os.environ, "BENTOML_HOME": str(tmp / "store")},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return tmp / "store"


def sigterm_while_waiting(server, path: str, body: dict) -> tuple[int | None, float, httpx.Response | Exception]:
    """POST ``path`` (a request that waits), then SIGTERM the server's group: (exit status or None if it
    still ran after DRAIN_WITHIN_S, seconds to exit, the answer). The workers are gone afterwards."""
    answers: list[httpx.Response | Exception] = []

    def post() -> None:
        try:
            answers.append(httpx.post(server.url + path, json=body, timeout=200))
        except httpx.HTTPError as exc:
            answers.append(exc)

    waiter = threading.Thread(target=post, daemon=True)
    waiter.start()
    time.sleep(3.0)
    assert not answers, answers  # still warming up: the request waits
    workers = [p.pid for p in server.workers()]
    t0 = time.monotonic()
    os.killpg(server.proc.pid, signal.SIGTERM)
    try:
        code = server.proc.wait(DRAIN_WITHIN_S)
    except subprocess.TimeoutExpired:
        code = None
    took = time.monotonic() - t0
    waiter.join(5)
    server.stop()
    left = wait_gone(workers, GONE_WITHIN_S)
    kill(workers)
    assert not left, f"workers {left} outlived their server"
    return code, took, answers[0] if answers else TimeoutError("no answer")


def test_sigterm_with_a_load_waiting_exits_within_a_bound(store, tmp_path):
    # nothing served at start; a load warms up for 10 minutes, so the request waits on it
    env = {"MODEL_ZOO_MODELS": ",", "MODEL_ZOO_WARMUP_S": "600"}
    with serve(store, tmp_path / "server.log", env) as server:
        code, took, answer = sigterm_while_waiting(server, "/v2/repository/models/hang/load", {})
        assert code == 0, f"exit {code} {took:.0f} s after SIGTERM: {server.tail()}"
    assert isinstance(answer, httpx.Response) and answer.status_code == 503, answer
    assert "shutting down" in answer.json()["error"] and "/v2/repository/index" in answer.json()["error"], answer.text
    print(f"\nSIGTERM with a load waiting: exited {code} after {took:.1f} s")


def test_sigterm_with_a_request_waiting_for_a_loading_model_exits_within_a_bound(store, tmp_path):
    # served from the start but warming up for 10 minutes: an inference request waits for it
    env = {"MODEL_ZOO_MODELS": "hang", "MODEL_ZOO_WARMUP_S": "600"}
    with spawn_service(store, tmp_path / "server.log", {**TEST_ENV, **env}) as server:
        t0 = time.monotonic()
        while not server.workers() or httpx.get(server.url + "/livez", timeout=2).status_code != 200:
            assert time.monotonic() - t0 < 60 and server.proc.poll() is None, server.tail()
            time.sleep(0.2)
        body = {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]}
        code, took, answer = sigterm_while_waiting(server, "/v2/models/hang/infer", body)
        assert code == 0, f"exit {code} {took:.0f} s after SIGTERM: {server.tail()}"
    assert isinstance(answer, httpx.Response) and answer.status_code == 503, answer
    assert "shutting down" in answer.json()["error"] and "still loading" in answer.json()["error"], answer.text
