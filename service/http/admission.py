"""Admission at the edge: a worker whose event loop has fallen behind answers new inference requests 503 at once.

Past capacity, the waiting happens before any code of ours sees a request: in the kernel's socket
buffers and accept queue, and in the event loop's queue of ready callbacks, behind the requests read
before it. The batcher's bounds and a request's deadline (service/core/deadlines.py) act only once the
request has been read, parsed and routed, which under overload is after its client gave up: the worker
then spends its time reading and parsing requests nobody waits for, and answers almost none in time
(docs/benchmarks.md, "Goodput under overload").

The signal that sees that wait is the loop's own lag. ``LoopLag`` keeps a timer due every ``PERIOD_S``;
how late it runs is how long a callback that became ready at its due time waited: what a request read
now will wait before its turn. The estimate is the lateness of the last tick, or half the estimate of
the tick before when that was larger (so one slow iteration decays within a few ticks, and a loop
that stays behind keeps it up).

``AdmitWhileCurrent`` (ASGI, outermost of the service's middlewares) answers an inference request --
a ``POST`` to ``/classify_*``, ``/forecast_*``, ``/models/...`` or ``/v2/models/...`` -- with 503,
``Retry-After: 1`` and a JSON error naming the lag, before reading its body (the connection stays open
when the body declared is small, ``KEEP_ALIVE_BODY``), while the lag is over
``MODEL_ZOO_SHED_LAG_MS`` (default ``SHED_LAG_MS``; 0 turns it off). A refusal costs the header parse
and one small write, a fraction of an answered request, so the worker keeps enough of its time for the
requests it admits, and those are fresh. Health, readiness, metrics, metadata and model control are
never refused. The estimate is exported as ``model_zoo_event_loop_lag_seconds`` (the largest over the
workers); the refusals are counted (``model_zoo_shed_requests_total``) and logged once
per ``LOG_EVERY_S`` with their number, not once per request (a line each would itself be a cost
under overload). The threshold sits well above the lag of a worker at full throughput with a closed
loop of clients (a few ms: each iteration handles the sockets that became readable meanwhile), so
only a backlog the loop cannot work off sheds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from service.errors import Behind
from service.http.request_ids import request_id
from service.http.responses import error_bytes

PERIOD_S = 0.005  # how often the lag timer is due
SHED_LAG_MS = 50.0  # default MODEL_ZOO_SHED_LAG_MS
LOG_EVERY_S = 1.0
KEEP_ALIVE_BODY = 64 * 1024  # a refused request's unread body up to this size keeps its connection open
INFERENCE_PREFIXES = ("/classify_", "/forecast_", "/models/", "/v2/models/")

logger = logging.getLogger("model_zoo.admission")


class LoopLag:
    """How far behind this thread's event loop runs, in seconds (``lag``), from a timer due every ``period``."""

    def __init__(self, period: float = PERIOD_S) -> None:
        self.period = period
        self.lag = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self.gauge: Any = None  # set to the estimate on every tick when given

    def running(self) -> bool:
        """Ticking on the running loop (a worker's loop; a test may run several loops one after another)."""
        return self._handle is not None and self._loop is asyncio.get_running_loop()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due = loop.time() + self.period
        self._handle = loop.call_at(self._due, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def behind(self, limit_s: float) -> bool:
        """Over ``limit_s`` behind (``limit_s`` 0: never); starts the timer on the running loop if it is not."""
        if limit_s <= 0:
            return False
        if not self.running():
            self.start(asyncio.get_running_loop())
            return False
        return self.lag > limit_s

    def _tick(self) -> None:
        loop = self._loop
        now = loop.time()
        late = now - self._due
        self.lag = late if late >= self.lag * 0.5 else self.lag * 0.5
        if self.gauge is not None:
            self.gauge.set(self.lag)
        self._due = now + self.period
        self._handle = loop.call_at(self._due, self._tick)


LAG = LoopLag()  # this worker's: its HTTP middleware and its gRPC server (service/grpc/server.py, UNAVAILABLE) read it


@functools.cache
def lag_gauge() -> Any:
    """``model_zoo_event_loop_lag_seconds``: the lag estimate, the largest over the live workers."""
    import bentoml

    return bentoml.metrics.Gauge(name="model_zoo_event_loop_lag_seconds", multiprocess_mode="max",
                                 documentation="How far behind a worker's event loop runs (LoopLag's estimate), "
                                               "the largest over the workers, seconds")


@functools.cache
def shed_counter() -> Any:
    """``model_zoo_shed_requests_total``: inference requests refused at the edge (503) while the loop lagged."""
    import bentoml

    return bentoml.metrics.Counter(
        name="model_zoo_shed_requests",
        documentation="Inference requests answered 503 before their body was read: the worker's event loop "
                      "was behind by more than MODEL_ZOO_SHED_LAG_MS",
    )


def small_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """A declared ``Content-Length`` of at most ``KEEP_ALIVE_BODY`` bytes (and no chunked body)."""
    length = None
    for key, value in headers:
        if key == b"content-length":
            length = value
        elif key == b"transfer-encoding":
            return False
    return length is not None and length.isdigit() and int(length) <= KEEP_ALIVE_BODY


def is_inference(scope: dict) -> bool:
    return scope["method"] == "POST" and scope["path"].startswith(INFERENCE_PREFIXES)


class AdmitWhileCurrent:
    """Outermost ASGI middleware: 503 for inference requests while this worker's loop lags (module docstring)."""

    def __init__(self, app: Any, shed_lag_ms: float = SHED_LAG_MS) -> None:
        self.app = app
        self.limit_s = shed_lag_ms / 1e3
        self.lag = LAG
        if shed_lag_ms > 0:
            LAG.gauge = lag_gauge()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.lag.behind(self.limit_s) and is_inference(scope):
            await self._refuse(scope, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, scope: dict, send: Any) -> None:
        body = error_bytes(Behind(self.lag.lag, self.limit_s).message)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                   (b"retry-after", b"1"), (b"x-request-id", request_id(scope["headers"]).encode("ascii"))]
        if not small_body(scope["headers"]):
            # the unread body may be large or unbounded: close rather than have the server skip it. A
            # small one is skipped by the HTTP parser and the connection stays open (a reconnect would
            # cost the client and this worker more than the refusal itself)
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        shed(self.limit_s)


_log = {"shed": 0, "at": 0.0}  # refusals since the last log line, and when it was written


def shed(limit_s: float) -> None:
    """Count one refusal (HTTP or gRPC), and log the count once per ``LOG_EVERY_S``."""
    shed_counter().inc()
    _log["shed"] += 1
    now = time.monotonic()
    if now - _log["at"] >= LOG_EVERY_S:
        logger.warning("shed %d inference request(s): event loop %.0f ms behind (MODEL_ZOO_SHED_LAG_MS=%g)",
                       _log["shed"], LAG.lag * 1e3, limit_s * 1e3)
        _log["shed"], _log["at"] = 0, now
