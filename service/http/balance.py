"""Keep-alive connections spread over the workers: a worker holding more than its share asks clients to reconnect.

BentoML's workers share one listening socket, and a worker woken for a new connection accepts every
connection queued at that moment (asyncio's accept loop, like libuv's, drains the queue). Clients that
open their connections together (a load generator, a proxy's or sidecar's connection pool) can all land
on one worker, and keep-alive keeps them there while the other cores idle. The kernel spreads
connections itself only across separate ``SO_REUSEPORT`` sockets, and BentoML makes one socket.

So each worker counts its open connections in its own 8-byte slot of a shared file (``connections``
in the workers' state directory, service/control/shared_state.py). A worker that holds more than its share,
``ceil(total / workers)``, adds ``Connection: close`` to its responses until it is back to its share:
each such client reconnects after its answer (no request is lost or retried), and the new connection
goes to whichever worker accepts first, most likely one with spare time. A connection told to close
still counts in the total for ``TRANSIT_S`` after it closed, while its client reconnects; without
that, the total would drop between the close and the reconnect and the worker would close more than
its excess. Balanced workers close nothing; what one rebalancing costs is a reconnect per excess connection (service/README.md,
"Connections across workers"). A worker that dies leaves its count behind until its replacement (same index) resets it,
which only raises the share the others compute, so it never makes them close more.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable

FILE = "connections"
TRANSIT_S = 0.25  # a closed connection's busy client reconnects well within this (a TCP handshake)
_SLOT = struct.Struct("<q")


class ConnectionShare:
    """This worker's open-connection count, next to every other worker's, in a shared mapped file.

    One process writes each slot (its own event loop, so no lock); reads of the others' slots may be a
    moment old, which only delays a decision to the next response.
    """

    def __init__(self, root: Path, workers: int, index: int, clock: Callable[[], float] = time.monotonic) -> None:
        if not 1 <= index <= workers:
            raise ValueError(f"worker index {index} outside 1..{workers}")
        self.workers, self.slot, self.clock = workers, (index - 1) * _SLOT.size, clock
        self.open = 0
        self.leaving = 0  # connections told to close that have not closed yet
        self.transit: deque[float] = deque()  # when each connection told to close did close
        # the state directory is new for every server, so the file starts as zeros (ftruncate fills with them)
        fd = os.open(Path(root) / FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < workers * _SLOT.size:
                os.ftruncate(fd, workers * _SLOT.size)
            self._map = mmap.mmap(fd, workers * _SLOT.size)
        finally:
            os.close(fd)
        self._write()  # a replacement worker starts from 0, not from its predecessor's count

    def _write(self) -> None:
        _SLOT.pack_into(self._map, self.slot, self.open)

    def counts(self) -> list[int]:
        return [max(0, n) for (n,) in _SLOT.iter_unpack(self._map)]

    def opened(self) -> None:
        self.open += 1
        self._write()

    def closed(self) -> None:
        """A connection closed (any: which one was told to is not known here, and it does not matter to the counts)."""
        self.open -= 1
        if self.leaving:
            self.leaving -= 1
            self.transit.append(self.clock())
        self._write()

    def should_close(self) -> bool:
        """True (and counted as leaving) when this worker, less what is already leaving, holds more than its share."""
        now = self.clock()
        while self.transit and now - self.transit[0] > TRANSIT_S:
            self.transit.popleft()
        total = sum(self.counts()) + len(self.transit)
        share = -(-total // self.workers)
        if self.open - self.leaving > share:
            self.leaving += 1
            return True
        return False


SHARE: ConnectionShare | None = None  # this worker's, once enable() ran; None with one worker


def enable(root: Path, workers: int, index: int) -> ConnectionShare | None:
    """Count this worker's connections and rebalance them (with one worker there is nothing to balance)."""
    global SHARE
    SHARE = ConnectionShare(root, workers, index) if workers > 1 and 1 <= index <= workers else None
    return SHARE


class CountedConnections:
    """Mixin over uvicorn's HTTP protocol (service/adapters.py builds the class): counts this worker's connections."""

    def connection_made(self, transport: Any) -> None:
        if SHARE is not None:
            SHARE.opened()
        super().connection_made(transport)  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        if SHARE is not None:
            SHARE.closed()
        super().connection_lost(exc)  # type: ignore[misc]


CLOSE = (b"connection", b"close")


class Rebalance:
    """ASGI middleware: ``Connection: close`` on a response while this worker holds more than its share."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or SHARE is None:
            return await self.app(scope, receive, send)

        share = SHARE

        async def send_closing(message: dict) -> None:
            if message["type"] == "http.response.start" and share.should_close():
                message = {**message, "headers": [*message.get("headers", ()), CLOSE]}
            await send(message)

        await self.app(scope, receive, send_closing)
