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
import time

import psutil
import pytest
from harness import serve

pytestmark = pytest.mark.slow
GONE_WITHIN_S = 10.0  # a worker's parent watch polls every 0.5 s


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
