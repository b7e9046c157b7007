"""Every BentoML and uvicorn internal the service relies on, where neither has a public API, in one place.

- ``cork_dispatcher`` / ``raise_latency_budget``: BentoML's adaptive batcher, ``CorkDispatcher``, the one
  ``@bentoml.api(batchable=True)`` uses inside. A batchable API decodes every request before our code
  sees it (one bad file fails the whole batch, PIL errors become 500s), so service/core/batching.py batches
  decoded arrays with the dispatcher itself; the budget is raised once a model's speed is known.
  The dispatcher's ``Optimizer`` learns how long to hold a batch for companions while the model is idle:
  the mean wait of the first request of its last 50 batches. That wait includes the hold itself and, under
  load, the time spent queued behind the running batch, so it feeds on itself: it grows under load, and
  after the load every lone request is held that long, which keeps it there (docs/benchmarks.md, "Where
  the tail went"). ``cork_dispatcher`` caps the learned wait at ``max_wait_ms`` (Triton's
  ``max_queue_delay_microseconds``; 0: a batch goes as soon as the model is free, with whatever queued
  while it was busy).
- ``install_route_labels``: BentoML's traffic metrics middleware is the outermost middleware of the
  service's app, so it runs before any auth or routing and labels every request with its raw path: each
  unknown or parameterised path became a new series in every metric file of every worker, without bound.
  The subclass installed where BentoML's app factory imports it from hands BentoML a copy of the scope
  whose ``path`` is the route template (service/http/routes.py), and gives the app behind it the real
  path back.
- ``install_timeout_middleware``: BentoML's ``TimeoutMiddleware`` (``traffic.timeout``) schedules a timer per
  request with ``loop.call_later`` and never cancels it, so each answered request leaves a live timer, its
  future and a copy of its context on the event loop for the whole timeout. Under load these are tens of
  thousands of objects that every young garbage collection finds alive and promotes, and the collections
  of the older generation walk them all: long pauses that stop every request in the worker (the tail of
  issue 31; docs/benchmarks.md, "Where the tail went"). The subclass installed where BentoML's app
  factory imports it from answers the same 504 at the same timeout and cancels its timer when the request
  is done.
- ``install_http_protocol``: uvicorn's only connection timeout is armed after a response, so a
  connection that never completes its request headers stays open for ever (uvicorn issue #160); our
  mixins (service/http/connections.py ``HeaderDeadline``, service/http/balance.py ``CountedConnections``,
  service/http/drain.py ``DrainSignal``, which hooks the protocol's ``shutdown``)
  are put over uvicorn's own protocol, entered through ``HTTP_PROTOCOLS["auto"]``, which BentoML's
  worker uses.

tests/test_bentoml_adapter.py, tests/test_reliability_metrics.py and tests/test_reliability_connections.py
fail, naming the internal (``INTERNALS``), when BentoML or uvicorn changes one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

INTERNALS = {
    "dispatcher": "bentoml._internal.marshal.dispatcher.CorkDispatcher(max_latency_in_ms, max_batch_size, "
                  "fallback, get_batch_size, batch_dim) and its max_latency attribute",
    "optimizer": "bentoml._internal.marshal.dispatcher.Optimizer(max_latency), its wait attribute (set by "
                 "trigger_refresh, read by CorkDispatcher.controller) and CorkDispatcher.optimizer",
    "metrics": "bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware",
    "timeout": "bentoml._internal.server.http.traffic.TimeoutMiddleware(app, timeout), its timeout attribute and "
               "_set_timer_out(waiter), imported by BentoML's app factory (base_app.py) when it builds the app",
    "protocol": "uvicorn.config.HTTP_PROTOCOLS['auto'] and the protocol's connection_made/on_response_complete/cycle, "
                "and shutdown (called on every connection when uvicorn's graceful shutdown begins); httptools' protocol's "
                "parser attribute (feed_data) and send_400_response(msg), called when the parser refuses a request",
    "model_store": "bentoml._internal.configuration.containers.BentoMLContainer.model_store.get()._path",
}
METRICS_INTERNAL = INTERNALS["metrics"]
PROTOCOL_INTERNAL = INTERNALS["protocol"]
PROTOCOL_ENTRY = f"{__name__}:HTTPProtocol"  # what uvicorn imports for http="auto" once installed
_REAL_PATH = "model_zoo.real_path"  # scope key carrying the real path past BentoML's metrics middleware


def model_store_dir() -> Path:
    """The model store in effect (a served bento's own): ``bentoml.models.list()`` fails as a whole on one
    unreadable ``model.yaml``, so service/control/store.py walks the entries itself."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    return Path(BentoMLContainer.model_store.get()._path)


def cork_dispatcher(max_latency_ms: int, max_batch: int, fallback: Callable[[], Any], max_wait_ms: float = 0.0) -> Any:
    """A dispatcher that batches ``(n_i, ...)`` arrays along axis 0, counting items, not requests, and
    holds a batch for companions at most ``max_wait_ms`` while the model is idle."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher, Optimizer

    class BoundedWait(Optimizer):
        """BentoML's optimizer with its learned wait read through a cap (seconds)."""

        cap = max_wait_ms / 1000.0

        @property
        def wait(self) -> float:
            return min(self._learned_wait, self.cap)

        @wait.setter
        def wait(self, value: float) -> None:
            self._learned_wait = value

    dispatcher = CorkDispatcher(max_latency_in_ms=max_latency_ms, max_batch_size=max_batch, fallback=fallback,
                                get_batch_size=len, batch_dim=(0, 0))
    dispatcher.optimizer = BoundedWait(dispatcher.max_latency)
    return dispatcher


def raise_latency_budget(dispatcher: Any, seconds: float) -> float:
    """At least ``seconds`` before the dispatcher sheds a queued request; returns the budget (seconds)."""
    dispatcher.max_latency = max(dispatcher.max_latency, seconds)
    return dispatcher.max_latency


def install_route_labels(labels: Callable[[str], str]) -> type:
    """Make BentoML's app factory build the metrics middleware that labels by ``labels(path)``."""
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "route_labels", None) is not None:  # installed already (module imported twice)
        base.route_labels = labels
        return base

    class TemplatedTrafficMetrics(base):  # type: ignore[misc, valid-type]
        route_labels = labels

        def __init__(self, app: Any, **kwargs: Any) -> None:
            super().__init__(_RealPath(app), **kwargs)

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket") and scope.get("path") != "/metrics":
                scope = {**scope, "path": self.route_labels(scope["path"]), _REAL_PATH: scope["path"]}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = TemplatedTrafficMetrics
    return TemplatedTrafficMetrics


def install_timeout_middleware() -> type:
    """Make BentoML's app factory build a ``TimeoutMiddleware`` that cancels its timer once the request is done."""
    import asyncio

    from bentoml._internal.server.http import traffic

    base = traffic.TimeoutMiddleware
    if getattr(base, "cancels_its_timer", False):
        return base

    class CancelledTimeout(base):  # type: ignore[misc, valid-type]
        cancels_its_timer = True

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] not in ("http", "websocket"):
                return await self.app(scope, receive, send)
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

            async def started(message: dict) -> None:
                if not waiter.done():
                    waiter.set_result(None)
                await send(message)

            fut = asyncio.ensure_future(self.app(scope, receive, started))
            try:
                await waiter
            except asyncio.TimeoutError:
                if fut.cancel():
                    from starlette.responses import JSONResponse

                    await JSONResponse({"error": f"Not able to process the request in {self.timeout} seconds"},
                                       status_code=504)(scope, receive, send)
                    return
            finally:
                timer.cancel()  # the answer has started: BentoML's timer would stay scheduled for the whole timeout
            await fut

    traffic.TimeoutMiddleware = CancelledTimeout
    return CancelledTimeout


class _RealPath:
    """Behind BentoML's metrics middleware: the app sees the request's real path again."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if _REAL_PATH in scope:
            scope = dict(scope)
            scope["path"] = scope.pop(_REAL_PATH)
        await self.app(scope, receive, send)


HTTPProtocol: type | None = None


def install_http_protocol(*mixins: type, **attributes: Any) -> type:
    """Make uvicorn's ``http="auto"`` (what BentoML's worker uses) resolve to its own protocol under ``mixins``."""
    global HTTPProtocol
    import uvicorn.config
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    # AutoHTTPProtocol: httptools' protocol when installed, else h11's; the mixins fit both
    HTTPProtocol = type("HTTPProtocol", (*mixins, AutoHTTPProtocol), attributes)
    uvicorn.config.HTTP_PROTOCOLS["auto"] = PROTOCOL_ENTRY
    return HTTPProtocol
