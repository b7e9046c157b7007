"""The servers the HTTP part measures (the service and its naive peers), one at a time, started with
the one server helper (devtools/launch.py): ``Server.cpu_seconds`` sums user+system time over a
server's process tree, so the report can show how much of the 2 cores each side used. ``Profiler`` attaches py-spy to a running
server for a missed target.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from devtools.launch import BIN, Server, ServerError, free_port, spawn, spawn_service
from benchmarks.store import BenchError, StoredModel

__all__ = ["Profiler", "Server", "free_port", "start_naive", "start_naive_ort", "start_service"]

READY_TIMEOUT_S = 180.0  # a cold BentoML start + warm-up of three models on 2 busy cores


def _spawn(kind: str, cmd: list[str], env: dict[str, str], log: Path, url: str) -> Server:
    """``launch.spawn`` for a server command listening at ``url`` (the naive servers)."""
    return spawn(kind, cmd, log, int(url.rsplit(":", 1)[1]), env)


def start_service(home: Path, log: Path, env_extra: dict[str, str] | None = None) -> Server:
    """``bentoml serve service.app:ModelZoo`` with the benchmark's store and the service's defaults."""
    return _wait(spawn_service(home, log, env_extra))


def start_naive(models: list[StoredModel], log: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.baselines.naive_server", "--host", "127.0.0.1", "--port", str(port)]
    for m in models:
        cmd += ["--model", f"{m.name}={m.checkpoint}"]
    return _wait(_spawn("naive", cmd, dict(os.environ), log, f"http://127.0.0.1:{port}"))


def start_naive_ort(models: list[StoredModel], log: Path) -> Server:
    """The naive ONNX Runtime server on the store entries' own ``model.onnx`` (classifiers only)."""
    from zoo.families import FAMILIES

    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.baselines.naive_ort_server", "--host", "127.0.0.1", "--port", str(port)]
    for m in models:
        if FAMILIES[m.name].decoder == "images":
            cmd += ["--model", f"{m.name}={m.model_dir}"]
    return _wait(_spawn("naive-ort", cmd, dict(os.environ), log, f"http://127.0.0.1:{port}"))


def _wait(server: Server, timeout: float = READY_TIMEOUT_S) -> Server:
    """Wait for ``/readyz``; a server that exits or never gets ready is a ``BenchError`` quoting its log."""
    try:
        return server.wait_ready(timeout)
    except ServerError as exc:
        raise BenchError(str(exc)) from None


class Profiler:
    """``py-spy record`` on a server's process tree (raw collapsed stacks), non-blocking sampling."""

    def __init__(self, server: Server, seconds: float, out: Path, rate: int = 100) -> None:
        self.out = out
        exe = BIN / "py-spy"
        self.cmd = [str(exe), "record", "--format", "raw", "--output", str(out), "--duration", str(max(1, round(seconds))),
                    "--rate", str(rate), "--subprocesses", "--nonblocking", "--pid", str(server.proc.pid)]
        self.proc: subprocess.Popen | None = None
        self.error = None if exe.is_file() else "py-spy is not installed (pip install -e '.[dev]')"

    def __enter__(self) -> "Profiler":
        if self.error is None:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if self.proc.returncode != 0 or not self.out.is_file():
            lines = (err or "").strip().splitlines()
            self.error = f"py-spy failed (exit {self.proc.returncode}): {lines[-1] if lines else 'no output'}"
