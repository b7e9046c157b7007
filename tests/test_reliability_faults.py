"""Faults against a real ``bentoml serve`` on the session's exported store (devtools/faults.py).

Short versions of ``python -m benchmarks.reliability.faults`` (figures in docs/reliability.md):
a worker SIGKILLed under load is replaced and the service answers again by itself; SIGTERM under
load lets every in-flight request finish before the process exits 0; a broken model store stops
start-up with status 1 and one message naming the model and the file, never a half-ready server.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from harness import ROOT, serve, sibling_home

from devtools.faults import (
    BREAKS,
    break_store,
    kill_worker,
    sigterm_drain,
    startup_failure,
)

pytestmark = pytest.mark.slow
LOST_IN_FLIGHT = {"RemoteProtocolError", "ReadError", "ConnectError"}  # a connection cut by the dying worker


@pytest.fixture(scope="module")
def store(zoo_server, tmp_path_factory):
    # A BENTOML_HOME over the session's mnist-mlp and sine-rnn, but not zoo_server's own: every
    # `bentoml serve` empties its home's Prometheus directory, which would freeze zoo_server's /metrics.
    return sibling_home(zoo_server, tmp_path_factory.mktemp("faults"))


def test_killed_worker_is_replaced_and_the_other_keeps_answering(store, tmp_path):
    with serve(store, tmp_path / "kill.log", {"MODEL_ZOO_MODELS": "mnist-mlp", "MODEL_ZOO_WORKERS": "2"}) as s:
        res = kill_worker(s, users=8, before=2.0, after=1.0, recover_timeout=60)
        assert len(res["new_pids"]) == 2 and res["killed_pid"] not in res["new_pids"]
        assert res["recovery_s"] is not None and res["recovery_s"] < 60, res
        assert res["ready_again_s"] is not None, res
        # failures: only requests the dead worker held; the replacement makes requests wait while it
        # loads instead of answering 503
        lost = sum(n for k, n in res["failed_outcomes"].items() if k in LOST_IN_FLIGHT)
        assert set(res["failed_outcomes"]) <= LOST_IN_FLIGHT, res
        assert lost <= res["in_flight_at_kill"], res
        assert res["failed_after_recovery"] == 0, res
        assert res["outcomes"].get("200", 0) > 0
        print(f"\nkill-worker: {res}")


def test_sigterm_under_load_drains_in_flight_requests(store, tmp_path):
    with serve(store, tmp_path / "term.log", {"MODEL_ZOO_MODELS": "mnist-mlp"}) as s:
        res = sigterm_drain(s, users=16, images=32, before=2.0, exit_timeout=45)
    print(f"\nsigterm: {res}")
    assert res["in_flight_at_sigterm"] > 0, res
    assert res["in_flight_failed"] == 0 and res["in_flight_outcomes"] == {"200": res["in_flight_at_sigterm"]}, res
    assert res["exit_code"] == 0, res


@pytest.mark.parametrize("how", BREAKS)
def test_broken_store_stops_startup_naming_model_and_file(store, tmp_path, how):
    home = tmp_path / "home"
    named = break_store(store, home, how)
    res = startup_failure(home, tmp_path / "start.log", exit_timeout=60)
    assert res["exit_code"] not in (None, 0), res["output"][-1500:]
    assert not res["readyz_200_seen"] and not res["livez_200_seen"], "a half-ready server answered"
    out = res["output"]
    assert "cannot start" in out and "'mnist-mlp'" in out and str(named) in out, out[-1500:]
    assert "Traceback" not in out, out[-1500:]


def test_malformed_setting_stops_startup_with_one_line(store, tmp_path):
    res = startup_failure(store, tmp_path / "start.log", exit_timeout=60, env={"MODEL_ZOO_MAX_BODY_MB": "lots"})
    assert res["exit_code"] == 1 and not res["livez_200_seen"], res["output"][-1500:]
    assert "MODEL_ZOO_MAX_BODY_MB='lots' is not an integer" in res["output"] and "Traceback" not in res["output"]


def test_preflight_command(store, tmp_path):
    """``python -m service.control.preflight``: 0 on the good store, 1 with the model and file on a broken copy."""
    run = lambda home: subprocess.run([sys.executable, "-m", "service.control.preflight"], cwd=ROOT,  # noqa: E731
                                      capture_output=True, text=True, timeout=120,
                                      env={**os.environ, "BENTOML_HOME": str(home)})
    good = run(store)
    assert good.returncode == 0 and "every served model loads" in good.stdout, good.stderr
    named = break_store(store, tmp_path / "home", "corrupt")
    bad = run(tmp_path / "home")
    assert bad.returncode == 1 and str(named) in bad.stderr and "'mnist-mlp'" in bad.stderr, bad.stderr
