"""Slow request bodies: a deadline between body chunks and a cap on the bodies one client sends at once.

A request holds one of BentoML's ``traffic.max_concurrency`` slots (256 per worker) from its headers
until it is answered, and BentoML's only bound on it is ``traffic.timeout`` (120 s). A client with
complete headers and a body sent one byte every few seconds held a slot for the whole of it: 600 such
connections from one token holder made every other request get 429 (issue 25, item 6). Like nginx's
``client_body_timeout``, ``SlowBodies`` answers 408 when the next chunk of a body has not arrived
``MODEL_ZOO_BODY_TIMEOUT_S`` after the app asked for it, and closes the connection; and a peer address
already sending ``MODEL_ZOO_BODIES_PER_CLIENT`` bodies to this worker gets 429 for the next one, before
any of it is read. The wait is bounded where the app reads (the ASGI ``receive``): a route that never
reads its body answers without waiting for it, so it holds no slot for long either.

The deadline is kept by one watch per worker, not a timer per chunk: the app's ``receive`` notes when
it started waiting, and a timer due every ``WATCH_S`` (at most a quarter of the timeout) while any
request waits cancels the wait of one that has waited the timeout, which ``receive`` turns into the 408
(so it comes between the timeout and ``WATCH_S`` after it). ``asyncio.wait_for`` per chunk made every
request with a body pay a task and a loop turn of its own (what that cost: ``python -m
benchmarks.studies.middleware_cost``, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from service.config import settings
from service.core.limits import has_body
from service.http.responses import send_error

WATCH_S = 1.0  # how often waits for a body chunk are looked at (at most a quarter of the timeout)


class AddressSlots(Counter):
    """Requests per peer address holding something in this worker (a body arriving, a body draining),
    for a cap per address."""

    def take(self, peer: str, cap: int) -> bool:
        if self[peer] >= cap:
            return False
        self[peer] += 1
        return True

    def release(self, peer: str) -> None:
        self[peer] -= 1
        if not self[peer]:
            del self[peer]


def peer_address(scope: dict) -> str:
    return (scope.get("client") or ("unknown", 0))[0]


class SlowBodies:
    """ASGI middleware; ``timeout_s`` and ``per_client`` default to the settings."""

    def __init__(self, app: Any, timeout_s: float | None = None, per_client: int | None = None) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.per_client = per_client
        self.receiving = AddressSlots()  # peer address -> requests of it still receiving a body here
        self.waiting: dict[asyncio.Task, float] = {}  # request task waiting for its next chunk -> since (loop time)
        self.stalled: set[asyncio.Task] = set()  # those cancelled by the watch, not yet woken
        self._watching: asyncio.AbstractEventLoop | None = None  # the loop the watch is armed on

    def _arm(self, timeout: float) -> None:
        self._watching = loop = asyncio.get_running_loop()
        loop.call_later(min(WATCH_S, timeout / 4), self._look, timeout)

    def _look(self, timeout: float) -> None:
        """The watch: a request that has waited ``timeout`` for its next chunk is woken by a cancellation,
        which its ``receive`` turns into the 408. Armed while any request waits for a chunk."""
        self._watching = None
        now = asyncio.get_running_loop().time()
        for task, since in list(self.waiting.items()):
            if now - since >= timeout and task not in self.stalled:
                self.stalled.add(task)
                task.cancel()
        if self.waiting:
            self._arm(timeout)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        timeout = self.timeout_s if self.timeout_s is not None else settings().body_timeout_s
        cap = self.per_client if self.per_client is not None else settings().bodies_per_client
        peer = peer_address(scope)
        if not self.receiving.take(peer, cap):
            await send_error(send, 429, f"too many request bodies in progress from {peer}: the cap is {cap} "
                             "at once per client address and worker (MODEL_ZOO_BODIES_PER_CLIENT); "
                             "finish sending the others first", retry_after=True)
            return
        counted, cut, started = True, False, False

        def done_receiving() -> None:
            nonlocal counted
            if counted:
                counted = False
                self.receiving.release(peer)

        async def timed() -> dict:
            nonlocal cut
            if cut:
                return {"type": "http.disconnect"}
            if not counted:  # the body is complete: what the app waits for now is the disconnect, unbounded
                return await receive()
            task, loop = asyncio.current_task(), asyncio.get_running_loop()
            self.waiting[task] = loop.time()
            if self._watching is not loop:
                self._arm(timeout)
            try:
                message = await receive()
            except asyncio.CancelledError:
                if task not in self.stalled:
                    raise  # not ours: the request is being cancelled
                self.stalled.discard(task)
                if hasattr(task, "uncancel"):  # Python 3.11+: the cancellation was ours and is handled here
                    task.uncancel()
                cut = True
                done_receiving()
                if not started:
                    await send_error(send, 408, f"the request body stalled: no data for {timeout:g} s "
                                     "(MODEL_ZOO_BODY_TIMEOUT_S); send the body without pauses")
                return {"type": "http.disconnect"}  # the app stops reading
            finally:
                self.waiting.pop(task, None)
            if message["type"] != "http.request" or not message.get("more_body", False):
                done_receiving()
            return message

        async def guarded(message: dict) -> None:
            nonlocal started
            if cut and not started:  # our 408 is the answer; the app's after the disconnect is dropped
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed, guarded)
        finally:
            done_receiving()
