"""Faults injected into a real server: a killed worker, SIGTERM under load, broken model stores.

Each returns a plain dict of what happened, for the reliability tests (tests/test_reliability_faults.py)
and for ``python -m benchmarks.reliability.faults``, which runs them on a store of your own and
documents the scenarios (figures in docs/reliability.md).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from devtools.launch import ONE_WORKER, Server, spawn_service
from devtools.load import Load, bodies_for, summarise

BREAKS = ("missing", "corrupt", "wrong-family")


def kill_worker(served: Server, users: int = 16, before: float = 3.0, after: float = 2.0,
                recover_timeout: float = 90.0) -> dict[str, Any]:
    load = Load(served.url, "/classify_digit", bodies_for("classify_digit"), users).start()
    time.sleep(before)
    workers = served.workers()
    if not workers:
        load.stop()
        raise RuntimeError(f"no worker process found under pid {served.proc.pid}")
    old = workers[0].pid
    t_kill = time.monotonic()
    os.kill(old, signal.SIGKILL)
    ready_at = first_ok = None
    while time.monotonic() - t_kill < recover_timeout and (ready_at is None or first_ok is None):
        if ready_at is None and served.ready() and any(w.pid != old for w in served.workers()):
            ready_at = time.monotonic()
        if first_ok is None:
            done = [r.end for r in list(load.records) if r.start > t_kill and r.ok]
            first_ok = min(done) if done else None
        time.sleep(0.05)
    time.sleep(after)
    records = load.stop()
    in_flight = [r for r in records if r.start < t_kill < r.end]
    failed = [r for r in records if not r.ok]
    return {
        "scenario": "kill-worker", "users": users, "killed_pid": old,
        "new_pids": [w.pid for w in served.workers()],
        "requests": len(records), "outcomes": summarise(records),
        "in_flight_at_kill": len(in_flight), "in_flight_outcomes": summarise(in_flight),
        "failed": len(failed), "failed_outcomes": summarise(failed),
        "failed_after_recovery": sum(1 for r in failed if first_ok is not None and r.start > first_ok),
        "recovery_s": round(first_ok - t_kill, 2) if first_ok else None,
        "ready_again_s": round(ready_at - t_kill, 2) if ready_at else None,
    }


def sigterm_drain(served: Server, users: int = 32, images: int = 32, before: float = 3.0,
                  exit_timeout: float = 60.0) -> dict[str, Any]:
    load = Load(served.url, "/classify_digit", bodies_for("classify_digit", images), users,
                stop_on_refusal=True).start()
    time.sleep(before)
    t_term = time.monotonic()
    pending = load.in_flight()
    os.kill(served.proc.pid, signal.SIGTERM)  # the arbiter; it stops the workers gracefully
    try:
        code = served.proc.wait(exit_timeout)
    except Exception:  # noqa: BLE001 - TimeoutExpired: report it, then clean up
        code = None
    t_exit = time.monotonic()
    records = load.stop()
    in_flight = [r for r in records if r.start < t_term < r.end]
    after = [r for r in records if r.start >= t_term]
    return {
        "scenario": "sigterm", "users": users, "images_per_request": images,
        "requests": len(records), "in_flight_at_sigterm": len(in_flight), "in_flight_counter": pending,
        "in_flight_outcomes": summarise(in_flight),
        "in_flight_failed": sum(1 for r in in_flight if not r.ok),
        "longest_in_flight_finished_after_s": round(max((r.end - t_term for r in in_flight), default=0.0), 3),
        "sent_after_sigterm": summarise(after),
        "exit_code": code, "exit_after_s": round(t_exit - t_term, 2),
    }


def break_store(src_home: Path, dst_home: Path, how: str) -> Path:
    """Copy the store and break its mnist-mlp entry; returns the file the error must name."""
    if how not in BREAKS:
        raise ValueError(f"unknown break {how!r}; choose one of {', '.join(BREAKS)}")
    shutil.copytree(src_home / "models", dst_home / "models", symlinks=True)
    entry = _latest(dst_home, "mnist-mlp")
    if how == "missing":
        (entry / "model.onnx").unlink()
        return entry / "model.onnx"
    if how == "corrupt":
        (entry / "model.onnx").write_bytes(b"\x08\x07garbage, not a protobuf" * 64)
        return entry / "model.onnx"
    sine = _latest(dst_home, "sine-rnn")  # wrong family: a sine-rnn's files in the mnist-mlp entry
    for f in sine.iterdir():
        if f.name != "model.yaml":
            shutil.copy2(f, entry / f.name)
    return entry / "spec.json"


def _latest(home: Path, name: str) -> Path:
    base = home / "models" / name
    latest = base / "latest"
    tag = latest.read_text().strip() if latest.is_file() else sorted(p.name for p in base.iterdir() if p.is_dir())[-1]
    return base / tag


def startup_failure(home: Path, log: Path, exit_timeout: float = 90.0,
                    env: dict[str, str] | None = None) -> dict[str, Any]:
    served = spawn_service(home, log, {**ONE_WORKER, **(env or {})})
    ready_seen = live_seen = False
    t0 = time.monotonic()
    while served.proc.poll() is None and time.monotonic() - t0 < exit_timeout:
        try:
            live_seen |= httpx.get(served.url + "/livez", timeout=1).status_code == 200
            ready_seen |= httpx.get(served.url + "/readyz", timeout=1).status_code == 200
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    code = served.proc.poll()
    served.stop(5)
    return {"exit_code": code, "exit_after_s": round(time.monotonic() - t0, 2), "readyz_200_seen": ready_seen,
            "livez_200_seen": live_seen, "output": served.tail(4000)}
