"""ASGI middleware: a request id on every answer, ``Server-Timing`` on every inference answer.

- ``X-Request-Id``: the client's (at most ``MAX_ID`` characters from ``[A-Za-z0-9._:-]``, so it is
  safe in a header and a log line) or, when absent or unsafe, a new random one; echoed on every
  answer, and named in the log line written for every 4xx and 5xx (the access log is off: see
  service/app.py).
- ``Server-Timing``: the request's timing record (service/core/timing.py) is started here, so its
  ``total`` runs from the request's arrival to its answer's headers; an answer path that completed
  the served-model phases (service/http/rest.py, service/http/oip.py) gets
  ``decode;dur=.., queue;dur=.., infer;dur=.., encode;dur=.., total;dur=.., batch;desc="N"`` (ms).

Wiring (service/app.py), outermost, so even a refusal by another middleware carries the id::

    ModelZoo.add_asgi_middleware(RequestIds)
"""

from __future__ import annotations

import logging
import os
import re
from time import perf_counter_ns
from typing import Any

from service.core import timing

MAX_ID = 128
SAFE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,%d}" % MAX_ID)
HEADER = b"x-request-id"
LOGGED_PATH = 200  # characters of the path in a log line

logger = logging.getLogger("model_zoo.requests")


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's ``X-Request-Id`` when it is safe, else a new one (32 hex digits)."""
    for key, value in headers:
        if key == HEADER:  # ASGI servers lower-case header names
            if SAFE_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return os.urandom(16).hex()


class RequestIds:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        record = timing.start(rid)
        encoded = rid.encode("ascii")

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", encoded))
                if record.done:
                    headers.append((b"server-timing", record.server_timing(perf_counter_ns()).encode("ascii")))
                message = {**message, "headers": headers}
                status = message["status"]
                if status >= 400:
                    logger.log(logging.WARNING if status >= 500 else logging.INFO, "%s %r -> %d request_id=%s",
                               scope.get("method"), scope.get("path", "")[:LOGGED_PATH], status, rid)
            await send(message)

        await self.app(scope, receive, send_with_id)
