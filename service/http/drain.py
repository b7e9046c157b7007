"""A bound on a worker's graceful shutdown: repository requests still waiting answer 503 when it begins.

On SIGTERM uvicorn stops accepting, then waits for every request in flight before the app's shutdown
hooks run; BentoML sets no bound on that wait beyond ``traffic.timeout`` (120 s). A load or unload
waits for every worker to apply it (up to ``LOAD_WAIT_S``, service/control/manager.py), so one hung
load held the whole shutdown for two minutes (issue 25, item 9); so did a request waiting for a model
still loading (service/control/manager.py ``ModelManager._lookup``). ``DrainSignal``, a mixin over
uvicorn's protocol (service/adapters.py ``install_http_protocol``), marks the process as draining the
moment uvicorn asks its connections to shut down; ``Drain.until`` then ends the wait with 503
``ShuttingDown``. The change itself stays requested: workers that keep running apply it, and
``/v2/repository/index`` shows its state. Inference requests in flight are not cut: they finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Awaitable, TypeVar

from service.errors import ShuttingDown

T = TypeVar("T")
READ_GRACE_S = 0.05  # an idle connection at shutdown stays open this long for a request already sent


class Drain:
    """Whether this process has begun its graceful shutdown, and the waits to end when it does."""

    def __init__(self) -> None:
        self.begun = False
        self._waiters: set[asyncio.Future] = set()

    def begin(self) -> None:
        self.begun = True
        for waiter in list(self._waiters):
            if not waiter.done():
                waiter.set_result(None)

    async def until(self, work: Awaitable[T], what: str) -> T:
        """``work``'s result, or ``ShuttingDown`` (503, ``what`` says what became of the request) as soon
        as the drain begins (``work`` is cancelled)."""
        task = asyncio.ensure_future(work)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            if not self.begun:
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                return task.result()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise ShuttingDown(f"the server is shutting down: {what}", headers={"Retry-After": "1"})
        finally:
            self._waiters.discard(waiter)
            if not task.done():  # the request itself was cancelled
                task.cancel()


@functools.cache
def process_drain() -> Drain:
    """This process's drain (one uvicorn server per worker process)."""
    return Drain()


class DrainSignal:
    """Mixin over uvicorn's H11Protocol / HttpToolsProtocol: uvicorn calls ``shutdown`` on every open
    connection when its graceful shutdown begins.

    uvicorn closes a connection with no request in progress at once. But a kept-alive client's next
    request may already sit in the socket, unread: the loop reads sockets between its turns, and a turn
    under load runs many requests' decoding and model calls. Closed, that request is lost (the client
    sees the connection reset, not an answer: tests/test_reliability_faults.py's drain under load caught
    it). With httptools' protocol such a connection stays open for ``READ_GRACE_S``: a request read
    meanwhile is answered, with ``Connection: close``; one still idle then is closed.
    """

    _draining = False

    def shutdown(self) -> None:
        process_drain().begin()
        cycle = getattr(self, "cycle", None)
        if not hasattr(self, "pipeline") or (cycle is not None and not cycle.response_complete):
            super().shutdown()  # type: ignore[misc]  # h11's, or a request in progress: closed after its answer
            return
        self._draining = True
        self.loop.call_later(READ_GRACE_S, self._close_if_idle)  # type: ignore[attr-defined]

    def on_headers_complete(self) -> None:
        super().on_headers_complete()  # type: ignore[misc]
        cycle = self.cycle  # type: ignore[attr-defined]
        if self._draining and cycle is not None and not cycle.response_complete:  # a request just read
            cycle.keep_alive = False

    def _close_if_idle(self) -> None:
        cycle, transport = self.cycle, self.transport  # type: ignore[attr-defined]
        if (cycle is None or cycle.response_complete) and not transport.is_closing():
            transport.close()

