"""Start, wait for and stop a server process: the one way the tests, the benchmarks and the
reliability tools run a server.

    with start_service(home, log, ONE_WORKER) as server:   # bentoml serve, ready (GET /readyz 200)
        httpx.get(server.url + "/v2/models/mnist-mlp")
    # stopped: SIGTERM to its process group, SIGKILL if it lingers

``spawn_service`` starts without waiting (to watch start-up); ``spawn`` runs any server command that
answers ``/readyz`` (the naive baseline, a built bento). Each server runs in its own session (process
group) on a free loopback port with its output in a log file, and ``stop`` ends the whole tree (the
workers, each in a session of its own, too). The
tree of ``bentoml serve``: the arbiter (holds the listening socket) -> one worker process per BentoML
worker, which loads the models and answers requests; ``workers()`` finds them by ``WORKER_MARK``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVICE = "service.app:ModelZoo"
ONE_WORKER = {"MODEL_ZOO_WORKERS": "1", "MODEL_ZOO_THREADS": "1"}  # small and predictable on a shared machine
WORKER_MARK = "_bentoml_impl.worker.service"  # in a BentoML worker's command line
READY_TIMEOUT_S = 120.0


class ServerError(RuntimeError):
    """A server exited or never got ready; the message ends with the tail of its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def home_over(store_home: Path, parent: Path) -> Path:
    """A fresh BENTOML_HOME in ``parent`` whose ``models`` is a symlink to ``store_home``'s store.

    A second server must not share a running server's home: ``bentoml serve`` empties
    ``$BENTOML_HOME/prometheus_multiproc_dir`` at start-up, deleting the other server's live metric files.
    """
    home = parent / "bentoml"
    home.mkdir(parents=True)
    (home / "models").symlink_to(Path(store_home).resolve() / "models")
    return home


@dataclass
class Server:
    kind: str  # "service", "service-int8", "naive-ort", "naive", ...: names the server in reports and messages
    proc: subprocess.Popen
    url: str
    log: Path
    command: str
    home: Path | None = None  # BENTOML_HOME, for a bentoml server
    start_s: float = 0.0  # seconds until ready
    seen: list[tuple[int, ...]] = field(default_factory=list)  # statuses of wait_ready's ``watch`` before ready

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, watch: tuple[str, ...] = ()) -> "Server":
        """Poll ``/readyz`` until 200 (recording the statuses of the ``watch`` paths seen before it);
        a server that exits or stalls is stopped and raises ``ServerError`` quoting its log."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                self.stop()
                raise ServerError(f"{self.kind} server exited with {self.proc.returncode} before it was ready; "
                                  f"end of {self.log}:\n{self.tail()}")
            try:
                paths = watch if "/readyz" in watch else (*watch, "/readyz")
                statuses = tuple(httpx.get(self.url + path, timeout=2).status_code for path in paths)
                if statuses[paths.index("/readyz")] == 200:
                    self.start_s = time.monotonic() - t0
                    return self
                if watch:
                    self.seen.append(statuses[:len(watch)])
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServerError(f"{self.kind} server not ready after {timeout:.0f} s; end of {self.log}:\n{self.tail()}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM the process group, SIGKILL it if it outlives ``timeout``; returns the exit status.
        BentoML's workers are in sessions of their own (circus ``setsid``): a group signal reaches only
        the arbiter, so any worker still running at the end is SIGKILLed by its pid."""
        workers, tree = self.workers(), self.tree()[1:]
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        try:  # what is left of the group: a worker orphaned by a crashed arbiter
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        _, left = psutil.wait_procs(workers, timeout=5)  # they exit by themselves once the arbiter is gone
        for p in left:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        # every process the group had, SIGKILLed above, is gone before stop() returns (on a busy machine
        # a killed child can still be running for a moment after the signal was sent)
        psutil.wait_procs([p for p in tree if p not in workers], timeout=5)
        return self.proc.returncode

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """User + system CPU time over the server's process tree."""
        total = 0.0
        for p in self.tree():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def workers(self) -> list[psutil.Process]:
        """The BentoML worker processes under the arbiter."""
        out = []
        for p in self.tree()[1:]:
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


def spawn(kind: str, cmd: list[str], log: Path, port: int, env: dict[str, str] | None = None,
          cwd: Path = ROOT, home: Path | None = None) -> Server:
    """Start ``cmd`` (which listens on 127.0.0.1:``port``) in its own process group; does not wait."""
    log.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env if env is not None else dict(os.environ),
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return Server(kind, proc, f"http://127.0.0.1:{port}", log, " ".join(cmd), home)


def spawn_service(home: Path, log: Path, env: dict[str, str] | None = None, target: str = SERVICE,
                  cwd: Path = ROOT) -> Server:
    """``bentoml serve TARGET`` with ``BENTOML_HOME=home`` plus ``env``; does not wait."""
    port = free_port()
    cmd = [str(BIN / "bentoml"), "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    return spawn("service", cmd, log, port, {**os.environ, "BENTOML_HOME": str(home), **(env or {})}, cwd, Path(home))


def start_service(home: Path, log: Path, env: dict[str, str] | None = None,
                  timeout: float = READY_TIMEOUT_S) -> Server:
    """``spawn_service``, then wait until it is ready (``ServerError`` if it never is)."""
    return spawn_service(home, log, env).wait_ready(timeout)
