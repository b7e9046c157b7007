"""A deadline for a connection's request headers: a mixin over uvicorn's HTTP protocol classes.

BentoML runs uvicorn, whose only connection timeout is ``timeout_keep_alive`` (``bentoml serve
--timeout-keep-alive N``, default 5 s), and uvicorn arms it only after a response: a connection that
never sends a request, or sends its headers a byte at a time, stays open for ever (uvicorn issue #160;
no setting covers it, and an ASGI middleware only sees a request once its headers are complete).
``HeaderDeadline`` closes a connection whose next request headers have not arrived
``MODEL_ZOO_HEADER_TIMEOUT_S`` after it opened or after its last response. A request whose headers
arrived is never cut by it (slow bodies: service/http/bodies.py). service/adapters.py
``install_http_protocol`` puts it (and service/http/balance.py's connection count) over uvicorn's own
protocol; tests/test_reliability_connections.py fails, naming the internal, when uvicorn changes what
this relies on.
"""

from __future__ import annotations

import asyncio
from typing import Any


class HeaderDeadline:
    """Mixin over uvicorn's H11Protocol / HttpToolsProtocol."""

    header_timeout: float = 10.0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        self._disarm()
        if not self.transport.is_closing():  # type: ignore[attr-defined]
            self._deadline = self.loop.call_later(self.header_timeout, self._expire, self.cycle)  # type: ignore[attr-defined]

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, armed_with: Any) -> None:
        self._deadline = None
        cycle, transport = self.cycle, self.transport  # type: ignore[attr-defined]
        idle = cycle is armed_with and (cycle is None or cycle.response_complete)  # no new headers since
        if idle and not transport.is_closing() and transport.get_protocol() is self:  # not upgraded away
            transport.close()
