"""Start, watch and stop a real ``bentoml serve service.service:ModelZoo`` for the reliability runs.

The served process tree: ``bentoml serve`` (the circus arbiter, holds the listening socket) -> one
worker process per BentoML worker (``python -m _bentoml_impl.worker.service``), which loads the models
and answers requests. The fault runs kill or signal these processes; the soak samples their RSS.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[2]
BENTOML = Path(sys.executable).parent / "bentoml"
WORKER_MARK = "_bentoml_impl.worker.service"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """One server on a free loopback port; ``with Served(home) as s:`` starts it and waits for /readyz."""

    def __init__(self, home: str | Path, log: str | Path, env: dict[str, str] | None = None,
                 ready_timeout: float = 120.0) -> None:
        self.home, self.log = Path(home), Path(log)
        self.env = {**os.environ, "BENTOML_HOME": str(self.home), "MODEL_ZOO_WORKERS": "1", "MODEL_ZOO_THREADS": "1",
                    **(env or {})}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> "Served":
        self.proc = subprocess.Popen(
            [str(BENTOML), "serve", "service.service:ModelZoo", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=ROOT, env=self.env, stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout: float | None = None) -> float:
        """Seconds until /readyz is 200; RuntimeError (with the log's tail) if the server exits or stalls."""
        t0 = time.monotonic()
        deadline = t0 + (timeout or self.ready_timeout)
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
            if self.ready():
                return time.monotonic() - t0
            time.sleep(0.1)
        raise RuntimeError(f"server not ready after {timeout or self.ready_timeout:.0f} s:\n{self.tail()}")

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the process group, SIGKILL it if it outlives ``timeout``; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self._reap_group()
        return self.proc.returncode

    def _reap_group(self) -> None:
        """Kill what is left of the process group (a worker orphaned by a crashed arbiter)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def __enter__(self) -> "Served":
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------ introspection

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def workers(self) -> list[psutil.Process]:
        """The worker processes under the arbiter (usually one)."""
        if self.proc is None:
            return []
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in children:
            try:
                if WORKER_MARK in " ".join(p.cmdline()):
                    out.append(p)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                continue
        return out

    def worker_rss(self) -> dict[int, int]:
        """pid -> resident set size in bytes, for every live worker."""
        out = {}
        for p in self.workers():
            try:
                out[p.pid] = p.memory_info().rss
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        return out
