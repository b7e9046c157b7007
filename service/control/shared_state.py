"""What the server's workers agree on: which models to serve, and what each worker serves now.

BentoML runs each worker as its own process, and a load or unload request reaches one of them. The
workers share one directory (``MODEL_ZOO_STATE_DIR``, made by the process that starts them and
inherited through the environment) holding:

- ``desired.json``: ``{"generation", "models": {name: tag}, "failures": {name: {"version", "reason"}}}``, the set to
  serve; every change bumps ``generation``. Written under an exclusive ``flock`` and replaced
  atomically, so readers never see half a file.
- ``worker-<index>.json``: one per worker, ``{"pid", "generation", "synced", "models": {name:
  {"version", "state", "reason"}}}``: what that worker serves after applying ``generation``.

A worker polls ``desired.json`` (a small file, read every tick), loads and unloads to match, and rewrites its own
status; the worker that took the request answers once every live worker's status shows the change.
A replaced worker reads the same desired set at start-up, so it comes back serving what the others do.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from service.errors import InsufficientStorage

STATE_DIR_ENV = "MODEL_ZOO_STATE_DIR"

READY, LOADING, UNAVAILABLE, UNLOADING = "READY", "LOADING", "UNAVAILABLE", "UNLOADING"


@dataclass
class Desired:
    generation: int = 0
    models: dict[str, str] = field(default_factory=dict)  # name -> full store tag "name:version"
    failures: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {"version", "reason"}: last failed load


@dataclass
class WorkerStatus:
    index: int
    pid: int
    generation: int  # the desired generation this worker has applied
    synced: bool  # finished loading what it found at start-up
    models: dict[str, dict[str, str]]  # name -> {"version", "state", "reason"}


def _alive(pid: int) -> bool:
    """A running process (a killed worker not yet reaped by its parent is a zombie: dead)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except FileNotFoundError:
        return False
    except OSError:  # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, another user's
            return True
        return True


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` whole or not at all; a failed write leaves no temp file behind. A full disk is
    ``InsufficientStorage`` (507), naming the directory: a load answered a plain 500 and left 0-byte files."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise InsufficientStorage(f"no space left on the device holding the server's state directory "
                                      f"{path.parent} ({path.name} could not be written); free space there "
                                      "and retry: the models already loaded are still served",
                                      headers={"Retry-After": "30"}) from exc
        raise


class SharedState:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.desired_path = self.root / "desired.json"

    @classmethod
    def from_env(cls, create: bool) -> "SharedState":
        """The directory named by ``MODEL_ZOO_STATE_DIR``; ``create``: make a fresh one and export it
        (the process that starts the workers; they inherit the variable)."""
        if create or not os.environ.get(STATE_DIR_ENV):
            os.environ[STATE_DIR_ENV] = tempfile.mkdtemp(prefix="model-zoo-state-")
        return cls(Path(os.environ[STATE_DIR_ENV]))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / "desired.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def read_desired(self) -> Desired:
        """The current desired set (a file of a few hundred bytes: read whole every time)."""
        try:
            data = json.loads(self.desired_path.read_text())
        except FileNotFoundError:
            return Desired()
        return Desired(data["generation"], data["models"], data.get("failures", {}))

    def update_desired(self, change: Callable[[Desired], None]) -> Desired:
        """Apply ``change`` to the desired set under the lock; bumps the generation."""
        with self._locked():
            current = self.read_desired()
            new = Desired(current.generation + 1, dict(current.models), dict(current.failures))
            change(new)
            _write_atomic(self.desired_path, {"generation": new.generation, "models": new.models,
                                              "failures": new.failures})
            return new

    def write_status(self, status: WorkerStatus) -> None:
        _write_atomic(self.root / f"worker-{status.index}.json",
                      {"pid": status.pid, "generation": status.generation, "synced": status.synced,
                       "models": status.models})

    def statuses(self) -> list[WorkerStatus]:
        """Status of every worker whose process is alive (a dead worker's file is ignored)."""
        out = []
        for path in sorted(self.root.glob("worker-*.json")):
            try:
                data = json.loads(path.read_text())
                index = int(path.stem.split("-", 1)[1])
            except (OSError, ValueError):
                continue  # being replaced right now
            if _alive(data["pid"]):
                out.append(WorkerStatus(index, data["pid"], data["generation"], data["synced"], data["models"]))
        return out
