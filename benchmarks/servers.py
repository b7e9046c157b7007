"""Starting, watching and stopping the two servers the HTTP part measures, one at a time.

Each server runs in its own session (process group) on a free loopback port, with its output in a
log file; ``stop`` ends the whole group (BentoML's serve spawns a worker process). ``cpu_seconds``
sums user+system time over the server's process tree, so the report can show how much of the
2 cores each side used. ``Profiler`` attaches py-spy to a running server for a missed target.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from benchmarks.store import ROOT, BenchError, StoredModel

BIN = Path(sys.executable).parent
READY_TIMEOUT_S = 180.0  # a cold BentoML start + warm-up of three models on 2 busy cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    kind: str  # "service" | "service-int8" | "naive-ort" | "naive"
    proc: subprocess.Popen
    url: str
    log: Path
    command: str
    start_s: float = 0.0  # seconds until ready

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def _spawn(kind: str, cmd: list[str], env: dict[str, str], log: Path, url: str) -> Server:
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    return Server(kind, proc, url, log, " ".join(cmd))


def start_service(home: Path, log: Path, env_extra: dict[str, str] | None = None) -> Server:
    """``bentoml serve service.service:ModelZoo`` with the benchmark's store and the service's defaults."""
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(home), **(env_extra or {})}
    cmd = [str(BIN / "bentoml"), "serve", "service.service:ModelZoo", "--host", "127.0.0.1", "--port", str(port)]
    return _wait(_spawn("service", cmd, env, log, f"http://127.0.0.1:{port}"))


def start_naive(models: list[StoredModel], log: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.baselines.naive_server", "--host", "127.0.0.1", "--port", str(port)]
    for m in models:
        cmd += ["--model", f"{m.name}={m.checkpoint}"]
    return _wait(_spawn("naive", cmd, dict(os.environ), log, f"http://127.0.0.1:{port}"))


def start_naive_ort(models: list[StoredModel], log: Path) -> Server:
    """The naive ONNX Runtime server on the store entries' own ``model.onnx`` (classifiers only)."""
    from service.families import FAMILIES

    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.baselines.naive_ort_server", "--host", "127.0.0.1", "--port", str(port)]
    for m in models:
        if FAMILIES[m.name].decoder == "images":
            cmd += ["--model", f"{m.name}={m.model_dir}"]
    return _wait(_spawn("naive-ort", cmd, dict(os.environ), log, f"http://127.0.0.1:{port}"))


def _wait(server: Server, timeout: float = READY_TIMEOUT_S) -> Server:
    """Poll ``/readyz`` until 200; a server that exits or never gets ready is an error quoting its log."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if server.proc.poll() is not None:
            tail = server.log.read_text(errors="replace")[-2000:]
            raise BenchError(f"{server.kind} server exited with {server.proc.returncode} before it was ready:\n{tail}")
        try:
            if httpx.get(server.url + "/readyz", timeout=2).status_code == 200:
                server.start_s = time.monotonic() - t0
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    server.stop()
    raise BenchError(f"{server.kind} server not ready after {timeout:.0f} s; log: {server.log}")


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
