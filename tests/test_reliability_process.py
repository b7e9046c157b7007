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
from harness import ROOT, make_checkpoint, serve

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


def test_sigterm_with_a_load_waiting_exits_within_a_bound(store, tmp_path):
    # nothing served at start; a load warms up for 10 minutes, so the request waits on it
    env = {"MODEL_ZOO_MODELS": ",", "MODEL_ZOO_WARMUP_S": "600"}
    with serve(store, tmp_path / "server.log", env) as server:
        answers: list[httpx.Response | Exception] = []

        def load() -> None:
            try:
                answers.append(httpx.post(server.url + "/v2/repository/models/hang/load", timeout=200))
            except httpx.HTTPError as exc:
                answers.append(exc)

        waiter = threading.Thread(target=load, daemon=True)
        waiter.start()
        time.sleep(3.0)
        assert not answers, answers  # still warming up: the load waits
        workers = [p.pid for p in server.workers()]
        t0 = time.monotonic()
        os.killpg(server.proc.pid, signal.SIGTERM)
        try:
            code = server.proc.wait(DRAIN_WITHIN_S)
        except subprocess.TimeoutExpired:
            code = None
        took = time.monotonic() - t0
        waiter.join(5)
        try:
            assert code is not None, f"still running {DRAIN_WITHIN_S:.0f} s after SIGTERM: {server.tail()}"
            assert code == 0, server.tail()
            assert answers and isinstance(answers[0], httpx.Response), answers
            assert answers[0].status_code == 503 and "shutting down" in answers[0].json()["error"], answers[0].text
            assert not wait_gone(workers, GONE_WITHIN_S)
            print(f"\nSIGTERM with a load waiting: exited {code} after {took:.1f} s")
        finally:
            server.stop()
            kill(workers)
