"""Connection-level mixins over uvicorn's HTTP protocol classes: a deadline for a connection's request
headers, and a JSON 400 that says why the HTTP parser refused a request.

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

``NamedParseErrors``: a request the HTTP parser itself refuses (with httptools, llhttp refuses
``Content-Length`` together with ``Transfer-Encoding``, bad chunk framing, invalid header characters)
never reaches the ASGI app, and uvicorn answers it with a plain-text ``Invalid HTTP request received.``
that does not say what was wrong. The mixin keeps the parser's reason and answers the same 400, with
the connection closed, as the service's JSON error: ``{"error": "malformed HTTP request: Transfer-Encoding
can't be present with Content-Length"}``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from service.http.responses import error_bytes

BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"


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


class _ReasonedParser:
    """httptools' parser, keeping the reason of the error it raises (uvicorn drops it)."""

    __slots__ = ("_parser", "error")

    def __init__(self, parser: Any) -> None:
        self._parser, self.error = parser, None

    def feed_data(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except Exception as exc:  # httptools.HttpParserError, or HttpParserUpgrade (uvicorn handles it)
            self.error = str(exc)
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class NamedParseErrors:
    """Mixin over uvicorn's HttpToolsProtocol / H11Protocol: the parser's refusals as JSON naming the reason."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        parser = getattr(self, "parser", None)  # httptools' (h11's protocol has none)
        if parser is not None and hasattr(parser, "feed_data"):
            self.parser = _ReasonedParser(parser)

    def send_400_response(self, msg: str) -> None:
        reason = getattr(getattr(self, "parser", None), "error", None)
        body = error_bytes(f"malformed HTTP request: {reason or 'the HTTP parser refused it'}")
        transport = self.transport  # type: ignore[attr-defined]
        transport.write(BAD_REQUEST % len(body) + body)
        transport.close()
