"""The workers' shared state (service/control/shared_state.py) in one process: generations, concurrent writers
under the lock, and dead workers' status files ignored."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile

from service.control.shared_state import Desired, SharedState, WorkerStatus


def _add_many(root: str, prefix: str, n: int) -> None:
    state = SharedState(root)
    for i in range(n):
        state.update_desired(lambda d, i=i: d.models.__setitem__(f"{prefix}{i}", f"{prefix}{i}:v1"))


def test_every_change_bumps_the_generation_and_none_is_lost(tmp_path):
    state = SharedState(tmp_path)
    assert state.read_desired() == Desired()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_add_many, args=(str(tmp_path), p, 25)) for p in ("a", "b")]
    for p in procs:
        p.start()
    _add_many(str(tmp_path), "c", 25)
    for p in procs:
        p.join(60)
    desired = state.read_desired()
    assert desired.generation == 75 and len(desired.models) == 75  # three writers, no lost update
    after = state.update_desired(lambda d: d.models.pop("a0"))
    assert after.generation == 76 and "a0" not in state.read_desired().models


def test_statuses_ignore_workers_that_died(tmp_path):
    state = SharedState(tmp_path)
    state.write_status(WorkerStatus(1, os.getpid(), 3, True, {"m": {"version": "v", "state": "READY", "reason": ""}}))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    state.write_status(WorkerStatus(2, int(dead.stdout), 3, True, {}))
    live = state.statuses()
    assert [(s.index, s.generation, s.models["m"]["state"]) for s in live] == [(1, 3, "READY")]


def test_from_env_makes_a_fresh_directory_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.delenv("MODEL_ZOO_STATE_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = SharedState.from_env(create=True)
    assert os.environ["MODEL_ZOO_STATE_DIR"] == str(first.root) and first.root.is_dir()
    assert SharedState.from_env(create=False).root == first.root  # a worker: the one it inherited
    second = SharedState.from_env(create=True)  # another server started from this process
    assert second.root != first.root
