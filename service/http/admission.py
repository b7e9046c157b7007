"""Admission at the edge: a request this worker cannot answer in time gets 503 before it is read.

Past capacity, the waiting happens before any code of ours sees a request: in the kernel's socket
buffers and accept queue, and in the event loop's queue of ready callbacks, behind the requests read
before it. The batcher's bounds and a request's deadline (service/core/deadlines.py) act only once the
request has been read, parsed and routed, which under overload is after its client gave up: the worker
then spends its time reading and parsing requests nobody waits for, and answers almost none in time
(docs/benchmarks.md, "Goodput under overload").

Two rules refuse an inference request -- a ``POST`` to ``/classify_*``, ``/forecast_*``, ``/models/...``
or ``/v2/models/...`` -- with 503, ``Retry-After: 1`` and a JSON error saying which, before its body is
read (the connection stays open when the body declared is small, ``KEEP_ALIVE_BODY``, so a refused
client does not reconnect):

- **Its deadline cannot be met.** The middleware counts the inference requests this worker has admitted
  and not answered (``in_flight``) and measures the rate it answers them (``rate``, per ``RATE_WINDOW_S``,
  smoothed). A request with a ``Request-Timeout`` header is refused when the requests ahead of it would
  take more than ``DEADLINE_SHARE`` of it (``in_flight / rate``, Little's law); the rest of the deadline
  is its own time in the worker. ``MODEL_ZOO_DEFAULT_TIMEOUT_MS``'s default value counts as every
  request's deadline when it is earlier (a per-model override applies in that model's queue only: the
  model is not known before routing). The request is refused while that costs a header parse and a small
  write, instead of being read, decoded and queued, then dropped at its deadline: what made the goodput
  collapse (docs/benchmarks.md, "Goodput under overload"). Fewer than ``MIN_AHEAD`` requests ahead
  never refuse one.
- **The loop is behind.** ``LoopLag`` keeps a timer due every ``PERIOD_S``; how late it runs is how long
  a callback that became ready at its due time waited: what a request read now waits before its turn.
  The estimate is the smallest lateness of the last ``SUSTAINED`` ticks: a loop that stays behind keeps
  it up, while one slow iteration (a garbage collection, a model loading) is no backlog and refuses
  nothing. Over ``MODEL_ZOO_SHED_LAG_MS`` (default ``SHED_LAG_MS``; 0 turns it off), every inference
  request is refused, with or without a deadline; the gRPC server, on the same loop, answers UNAVAILABLE
  (service/grpc/server.py).

Where: ``RefuseAtParse``, over uvicorn's protocol, answers the refusal from the parser's callback for the
end of a request's headers, before uvicorn builds the request's ASGI cycle and task (what each costs:
``python -m benchmarks.studies.refusal_cost``, in
docs/benchmarks.md); ``AdmitWhileCurrent``, the outermost of the service's ASGI middlewares, counts what
is admitted and applies the same rules to what the protocol passes on without deciding (a request
pipelined behind one in progress, a path it does not read as is, h11's protocol).

Health, readiness, metrics, metadata and model control are never refused. The lag estimate is
exported as ``model_zoo_event_loop_lag_seconds`` (the largest over the workers); the refusals are
counted in ``model_zoo_shed_requests_total`` and logged once per ``LOG_EVERY_S`` with their number, not
once per request (a line each would itself be a cost under overload). The lag bound is meant to sit
well above a worker's lag at full throughput with a closed loop of clients, which the gauge shows. Requests without a deadline are refused only by the lag rule:
past capacity they wait in the socket buffers and the accept queue, where the loop does not lag, so a
client that will give up should say when (``Request-Timeout``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from service.core import deadlines
from service.errors import Behind, ServiceError
from service.http.request_ids import request_id
from service.http.responses import error_bytes, error_headers, send_error

PERIOD_S = 0.005  # how often the lag timer is due
SUSTAINED = 3  # ticks in a row that must all run late for the loop to count as behind
SHED_LAG_MS = 50.0  # default MODEL_ZOO_SHED_LAG_MS
LOG_EVERY_S = 1.0
RATE_WINDOW_S = 0.1  # the answer rate is measured over windows this long, smoothed (RATE_WEIGHT on the newest)
RATE_WEIGHT = 0.3
DEADLINE_SHARE = 0.5  # a request is admitted while the wait predicted for it is within this share of its deadline
KEEP_ALIVE_BODY = 64 * 1024  # a refused request's unread body up to this size keeps its connection open
MIN_AHEAD = 8  # fewer requests ahead than this never refuse one (an idle worker's rate is no estimate)
TIMEOUT_HEADER = deadlines.HEADER.lower().encode()
DEFAULT_SOURCE = "MODEL_ZOO_DEFAULT_TIMEOUT_MS"
INFERENCE_PREFIXES = ("/classify_", "/forecast_", "/models/", "/v2/models/")
INFERENCE_TARGETS = tuple(prefix.encode() for prefix in INFERENCE_PREFIXES)  # as the request line has them

logger = logging.getLogger("model_zoo.admission")


class LoopLag:
    """How far behind this thread's event loop runs, in seconds (``lag``), from a timer due every ``period``."""

    def __init__(self, period: float = PERIOD_S) -> None:
        self.period = period
        self.lag = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._recent = [0.0] * SUSTAINED  # the last ticks' lateness, oldest first
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
        recent = self._recent
        recent.pop(0)
        recent.append(now - self._due)
        self.lag = min(recent)
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
    """``model_zoo_shed_requests_total``: inference requests refused at the edge (503, gRPC UNAVAILABLE)."""
    import bentoml

    return bentoml.metrics.Counter(
        name="model_zoo_shed_requests",
        documentation="Inference requests answered 503 before their body was read: the requests ahead would "
                      "use up their deadline, or the worker's event loop was behind by more than MODEL_ZOO_SHED_LAG_MS",
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
    """Outermost of the service's ASGI middlewares: the two refusals of the module docstring."""

    def __init__(self, app: Any, shed_lag_ms: float = SHED_LAG_MS, default_timeout_ms: float = 0.0) -> None:
        self.app = app
        self.limit_s = shed_lag_ms / 1e3
        self.default_s = default_timeout_ms / 1e3  # MODEL_ZOO_DEFAULT_TIMEOUT_MS's default value (0: none)
        self.lag = LAG
        if shed_lag_ms > 0:
            LAG.gauge = lag_gauge()
        shed_counter()  # exported from the start (at 0), not from the first refusal
        self.in_flight = 0  # inference requests admitted and not answered yet, this worker
        self.rate = 0.0  # inference answers per second, this worker (smoothed)
        self._count, self._window = 0, time.monotonic()
        global GATE
        GATE = self  # the protocol's refusals (RefuseAtParse) read this worker's counts

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get(ADMITTED) or not is_inference(scope):
            await self.app(scope, receive, send)  # (admitted and counted by the protocol: RefuseAtParse)
            return
        why = self.refusal(scope["headers"])
        if why is not None:
            await self._refuse(scope, send, why)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.done()

    def done(self) -> None:
        """An admitted inference request has been answered (or its client is gone)."""
        self.in_flight -= 1
        self._answered()

    def refusal(self, headers: list[tuple[bytes, bytes]]) -> ServiceError | None:
        """Why an inference request with these (lower-cased) headers is refused now, or None: it is admitted."""
        if self.lag.behind(self.limit_s):
            return Behind.lagging(self.lag.lag, self.limit_s)
        return self._cannot_meet(headers)

    def _answered(self) -> None:
        """One more inference answered: the rate over the current window, smoothed, once it is over."""
        self._count += 1
        now = time.monotonic()
        elapsed = now - self._window
        if elapsed >= RATE_WINDOW_S:
            rate = self._count / elapsed
            self.rate = rate if self.rate == 0 else (1 - RATE_WEIGHT) * self.rate + RATE_WEIGHT * rate
            self._count, self._window = 0, now

    def _cannot_meet(self, headers: list[tuple[bytes, bytes]]) -> ServiceError | None:
        """The refusal when the requests ahead (``in_flight`` at this worker's answer ``rate``) would take
        more than ``DEADLINE_SHARE`` of the request's deadline: its ``Request-Timeout``, or the server's
        ``MODEL_ZOO_DEFAULT_TIMEOUT_MS`` when that is set and earlier."""
        if self.rate <= 0 or self.in_flight < MIN_AHEAD:
            return None
        budget, source = self.default_s, DEFAULT_SOURCE
        for key, value in headers:
            if key == TIMEOUT_HEADER:
                try:
                    deadline = deadlines.from_header(value.decode("latin-1"))
                except ServiceError:
                    return None  # malformed: the route answers its 400
                if deadline is not None and (not budget or deadline.timeout_s < budget):
                    budget, source = deadline.timeout_s, deadlines.HEADER
                break
        wait = self.in_flight / self.rate
        if not budget or wait <= DEADLINE_SHARE * budget:
            return None
        return Behind.ahead(self.in_flight, wait, budget, source)

    async def _refuse(self, scope: dict, send: Any, why: ServiceError) -> None:
        # an unread body that may be large or unbounded closes the connection rather than have the server
        # skip it; a small one is skipped by the HTTP parser and the connection stays open (a reconnect
        # would cost the client and this worker more than the refusal itself)
        await send_error(send, why.status, why.message, close=not small_body(scope["headers"]), retry_after=True,
                         extra=[(b"x-request-id", request_id(scope["headers"]).encode("ascii"))])
        shed(why)


_log = {"shed": 0, "at": 0.0}  # refusals since the last log line, and when it was written


def shed(why: ServiceError) -> None:
    """Count one refusal (HTTP or gRPC), and log the count, with the last one's reason, once per ``LOG_EVERY_S``."""
    shed_counter().inc()
    _log["shed"] += 1
    now = time.monotonic()
    if now - _log["at"] >= LOG_EVERY_S:
        logger.warning("shed %d inference request(s); the last: %s", _log["shed"], why.message)
        _log["shed"], _log["at"] = 0, now


GATE: AdmitWhileCurrent | None = None  # this worker's middleware, once its app is built
ADMITTED = "model_zoo.admitted"  # scope key: the protocol admitted and counts this request


class _Refused:
    """The answered request's stand-in for uvicorn's request cycle: complete, so the parser's callbacks for
    its body (``on_body``, ``on_message_complete``) skip the body, and the connection waits for the next."""

    __slots__ = ()
    response_complete = True
    keep_alive = False
    message_event = type("_Set", (), {"set": staticmethod(lambda: None)})()  # connection_lost sets it


REFUSED = _Refused()
STATUS_503 = b"HTTP/1.1 503 Service Unavailable\r\n"


def refusal_bytes(why: ServiceError, headers: list[tuple[bytes, bytes]], keep_alive: bool,
                  default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole 503 answer, as ``responses.send_error`` and the request-id middleware would write it."""
    body = error_bytes(why.message)
    out = [STATUS_503]
    for name, value in [*default_headers,  # uvicorn's (server, date)
                        *error_headers(body, not keep_alive, True, [(b"x-request-id", request_id(headers).encode("ascii"))])]:
        out += [name, b": ", value, b"\r\n"]
    out += [b"\r\n", body]
    return b"".join(out)


class RefuseAtParse:
    """Mixin over uvicorn's HttpToolsProtocol (service/adapters.py ``install_http_protocol``): the two refusals
    of ``AdmitWhileCurrent``, answered from the parser's callback for the end of the headers.

    Under overload most requests are refused, so the refusal's own cost decides how much of the worker is
    left for the requests it admits. Through the middleware a refusal still costs uvicorn's request cycle:
    the scope, an ``asyncio.Event``, a task, the ASGI calls down to the middleware and its response built
    message by message. Here it is one write to the transport. Taken only when the connection has no
    request in progress (nothing to answer out of order); anything else -- a pipelined request, a path in
    absolute form or percent-encoded, h11's protocol -- reaches the middleware, which applies the same rules.
    """

    def on_headers_complete(self) -> None:
        gate, cycle = GATE, self.cycle  # type: ignore[attr-defined]
        if (gate is None or (cycle is not None and not cycle.response_complete) or self.pipeline  # type: ignore[attr-defined]
                or not self.url.startswith(INFERENCE_TARGETS) or self.parser.get_method() != b"POST"):  # type: ignore[attr-defined]
            super().on_headers_complete()  # type: ignore[misc]
            return
        headers = self.headers  # type: ignore[attr-defined]
        why = gate.refusal(headers)
        if why is None:
            # counted from now, not from when its task reaches the middleware: the requests read in the
            # same turn of the loop are decided on counts that include this one
            super().on_headers_complete()  # type: ignore[misc]
            self.scope[ADMITTED] = True  # type: ignore[attr-defined]
            gate.in_flight += 1
            self._admitted = gate
            return
        # a small body is skipped by the parser (the connection stays open for the client's next request);
        # a large or unbounded one, or one the client sends only after a 100 Continue, closes it
        keep = small_body(headers) and self.parser.should_keep_alive() and not self.expect_100_continue  # type: ignore[attr-defined]
        self.cycle = REFUSED
        transport = self.transport  # type: ignore[attr-defined]
        transport.write(refusal_bytes(why, headers, keep, self.server_state.default_headers))  # type: ignore[attr-defined]
        shed(why)
        if keep:
            self.on_response_complete()  # type: ignore[attr-defined]  # uvicorn's: keep-alive timer, read on
        else:
            transport.close()

    _admitted: AdmitWhileCurrent | None = None  # the gate that counts this connection's request in flight

    def _release(self) -> None:
        gate, self._admitted = self._admitted, None
        if gate is not None:
            gate.done()

    def on_response_complete(self) -> None:
        self._release()
        super().on_response_complete()  # type: ignore[misc]

    def connection_lost(self, exc: Exception | None) -> None:
        self._release()  # its answer will not be written: it is no longer ahead of anyone
        super().connection_lost(exc)  # type: ignore[misc]
