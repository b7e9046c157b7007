"""Lingering close: an answer sent before the body was read reaches a client that is still sending it.

The service answers some requests before it reads their bodies: an unknown model (404), a missing
token (401), a foreign origin (403), a declared length over the cap (413), a wrong content type
(415), too many bodies at once (429). Closing the connection then, with the rest of the upload still
arriving, makes the server's kernel reset it, and a client busy sending sees the reset instead of the
answer ("connection failed" for a typo in a model name, issue 27.1). Like nginx's lingering close,
``LingeringClose`` holds such an answer's start until the app has sent all of it, then reads and
discards the rest of the body within bounds: no more than the body-size cap in all
(``MODEL_ZOO_MAX_BODY_MB``), a gap of at most ``CHUNK_S`` between chunks and ``TOTAL_S`` in all. A
body read to its end leaves the connection kept alive (the inner ``Connection: close``, added because
the body was unread, is dropped); past a bound, or for a body that stalled (408) or that asked
``Expect: 100-continue`` (nothing is in flight), the answer goes out with ``Connection: close`` as
before. So no body over the cap is read in full: the 413 of one still closes at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from service.config import settings
from service.core.limits import has_body

CHUNK_S = 2.0  # longest gap between body chunks while lingering (an uploading client sends far more often)
TOTAL_S = 10.0  # longest linger in all (nginx's lingering_time is 30 s)
NO_LINGER = frozenset({408})  # the body stalled: waiting for it is what the answer refuses
CLOSE = (b"connection", b"close")


class LingeringClose:
    """ASGI middleware; ``max_bytes`` defaults to the body-size cap, ``chunk_s``/``total_s`` to the module's."""

    def __init__(self, app: Any, max_bytes: int | None = None, chunk_s: float = CHUNK_S, total_s: float = TOTAL_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.chunk_s = chunk_s
        self.total_s = total_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes if self.max_bytes is not None else settings().max_body_bytes
        headers = scope.get("headers") or []
        declared = _declared_length(headers)
        expects = any(k == b"expect" for k, _ in headers)
        received, finished, held = 0, False, None

        async def counted() -> dict:
            nonlocal received, finished
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
            else:
                finished = True  # gone: nothing left to read
            return message

        async def drained() -> bool:
            """Read the rest of the body within the bounds; True once it has all arrived."""
            if expects or (declared is not None and declared > limit):
                return False
            deadline = time.monotonic() + self.total_s
            while not finished:
                left = deadline - time.monotonic()
                if received > limit or left <= 0:
                    return False
                try:
                    await asyncio.wait_for(counted(), min(self.chunk_s, left))
                except asyncio.TimeoutError:
                    return False
            return received <= limit

        async def lingering(message: dict) -> None:
            nonlocal held
            kind = message["type"]
            if kind == "http.response.start" and not finished and message["status"] not in NO_LINGER:
                held = message  # the answer came before the body: hold it until the answer is whole
                return
            if held is not None and kind == "http.response.body":
                start, held = held, None
                if not message.get("more_body", False) and await drained():
                    start = {**start, "headers": [h for h in start.get("headers", []) if h != CLOSE]}
                elif CLOSE not in start.get("headers", []):  # a streamed answer, or a bound passed
                    start = {**start, "headers": [*start.get("headers", []), CLOSE]}
                await send(start)
            await send(message)

        await self.app(scope, counted, lingering)
        if held is not None:  # the app ended without a body message: send the start it held
            await send(held)


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
