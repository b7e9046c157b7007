"""Lingering close: an answer sent before the body was read reaches a client that is still sending it.

The service answers some requests before it reads their bodies: an unknown model (404), a missing
token (401), a foreign origin (403), a declared length over the cap (413), a wrong content type
(415), too many bodies at once (429). Closing the connection then, with the rest of the upload still
arriving, makes the server's kernel reset it, and a client busy sending sees the reset instead of the
answer ("connection failed" for a typo in a model name, issue 27.1). Like nginx's lingering close,
``LingeringClose`` sends such an answer at once, with ``Connection: close``, but holds back its end
(uvicorn closes when the response is complete, and its ``receive`` returns nothing after that) while
it reads and discards the rest of the body within bounds: no more than the body-size cap in all
(``MODEL_ZOO_MAX_BODY_MB``), a gap of at most ``CHUNK_S`` between chunks, ``TOTAL_S`` in all, and at
most ``MODEL_ZOO_BODIES_PER_CLIENT`` lingering requests per client address and worker (a lingering
request holds a request slot, like a body being received: service/http/bodies.py). Past a bound, or
for a body that stalled (408) or waits for ``100 Continue`` (none of it is in flight), the connection
closes at once, as before. So no body over the cap is read in full: the 413 of one still closes at once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from service.config import settings
from service.core.limits import has_body
from service.http.bodies import AddressSlots, peer_address

CHUNK_S = 2.0  # longest gap between body chunks while lingering (an uploading client sends far more often)
TOTAL_S = 10.0  # longest linger in all (nginx's lingering_time is 30 s)
NO_LINGER = frozenset({408})  # the body stalled: waiting for it is what the answer refuses
CLOSE = (b"connection", b"close")


class LingeringClose:
    """ASGI middleware; ``max_bytes`` and ``per_client`` default to the settings, ``chunk_s``/``total_s`` to the module's."""

    def __init__(self, app: Any, max_bytes: int | None = None, per_client: int | None = None,
                 chunk_s: float = CHUNK_S, total_s: float = TOTAL_S) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_client = per_client
        self.chunk_s = chunk_s
        self.total_s = total_s
        self.lingering = AddressSlots()  # peer address -> its requests lingering here now

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes if self.max_bytes is not None else settings().max_body_bytes
        cap = self.per_client if self.per_client is not None else settings().bodies_per_client
        peer = peer_address(scope)
        headers = scope.get("headers") or []
        declared = _declared_length(headers)
        may_linger = declared is None or declared <= limit
        may_linger &= not any(k == b"expect" for k, _ in headers)
        received, finished, early = 0, False, False

        async def counted() -> dict:
            nonlocal received, finished
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
            else:
                finished = True  # gone: nothing left to read
            return message

        async def drain() -> None:
            """Read and discard the rest of the body, within the bounds."""
            deadline = time.monotonic() + self.total_s
            while not finished and received <= limit:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                try:
                    await asyncio.wait_for(counted(), min(self.chunk_s, left))
                except asyncio.TimeoutError:
                    return

        async def lingering(message: dict) -> None:
            nonlocal early, may_linger
            if message["type"] == "http.response.start" and not finished:
                early = True  # the answer came before the body: the connection closes after it
                may_linger &= message["status"] not in NO_LINGER
                if CLOSE not in message.get("headers", []):
                    message = {**message, "headers": [*message.get("headers", []), CLOSE]}
            elif (early and may_linger and message["type"] == "http.response.body" and not message.get("more_body")
                  and not finished and self.lingering.take(peer, cap)):
                await send({**message, "more_body": True})  # the whole answer, but not its end: uvicorn waits
                try:
                    await drain()
                finally:
                    self.lingering.release(peer)
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(scope, counted, lingering)


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for key, value in headers:
        if key == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
