"""A worker outlives its arbiter by at most a graceful shutdown.

BentoML's arbiter (circus) starts every worker, the first ones and each replacement of a dead one,
with ``os.setsid()`` (circus/process.py ``Process.spawn``): a worker is in a session and process group of
its own, so a signal to the server's group reaches only the arbiter. An arbiter that exits cleanly stops
its workers; one that is SIGKILLed (a launcher's last resort, the OOM killer, a crash) left them
running, still accepting on the inherited listening socket (issue 25, item 9). ``exit_with_parent``
watches the parent from a daemon thread: once it is gone (the worker was re-parented), the worker sends
itself SIGTERM, so requests in flight finish, and exits outright if that takes longer than
``ORPHAN_GRACE_S``. A thread rather than ``prctl(PR_SET_PDEATHSIG)``: that one fires when the *thread*
that forked the worker ends, and is Linux-only.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

logger = logging.getLogger("model_zoo.parent")

POLL_S = 0.5  # how often a worker checks its parent
ORPHAN_GRACE_S = 30.0  # seconds a worker whose arbiter is gone may spend draining before it exits


def exit_with_parent(poll_s: float = POLL_S, grace_s: float = ORPHAN_GRACE_S) -> threading.Thread:
    """Start the watch (returns the daemon thread)."""
    parent = os.getppid()
    thread = threading.Thread(target=_watch, args=(parent, poll_s, grace_s), name="model-zoo-parent-watch",
                              daemon=True)
    thread.start()
    return thread


def _watch(parent: int, poll_s: float, grace_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(poll_s)
    logger.warning("worker %d: its arbiter (pid %d) is gone; shutting down", os.getpid(), parent)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace_s)
    logger.error("worker %d: still running %.0f s after its arbiter died; exiting now", os.getpid(), grace_s)
    os._exit(1)
