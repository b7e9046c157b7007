"""Adaptive batching across requests, per model, with BentoML's own batcher.

BentoML's ``CorkDispatcher`` (what ``@bentoml.api(batchable=True)`` uses inside; reached through
service/adapters.py) is called directly instead of through a batchable API because the
batchable path decodes a whole request before it reaches our code, so one bad file would fail every
request batched with it, and PIL errors escape as 500s. Here the endpoint decodes
and validates its own uploads first (a bad file gets its own 4xx) and only the float tensors meet in
the batcher: each request submits an ``(n_i, ...)`` array, the dispatcher groups queued requests up to
``max_batch`` items (splitting a large request across calls when needed), and one model call runs
at a time per model.

A lone request on a model that runs on the event loop skips the dispatcher: the hops through it (the
request's task queues a job and wakes the dispatcher's controller task, which starts a task for the model
call, which wakes the request's task with the answer) cost such a request more than its model call. It
is computed in its own task when nothing is queued or running in this batcher (it overtakes nobody; the
call never yields the loop, so one model call at a time still holds) and no other request was computed
so in this turn of the event loop. Under load one turn runs every request read since the last: the
first is computed at once and the rest, which arrived with it, go to the dispatcher and batch together,
as does everything that arrives while they are queued. With ``max_wait_ms`` set every request goes
through the dispatcher (it holds an idle model's batch for companions).

Overload: the dispatcher cancels a queued request when it predicts a wait past ``max_latency_ms``;
its ``fallback`` raises ``Overloaded`` (503 + Retry-After), so a client sees an answer, never a hang.
Deadlines, disconnected clients and the per-model queue bounds (429) are service/core/deadlines.py's
``ModelQueue``: ``submit`` around each request, ``formed`` when a batch is formed (skips the dropped),
``check_now`` before a request computed without the dispatcher.
"""

from __future__ import annotations

import asyncio
import functools
from time import perf_counter_ns
from typing import Callable, Sequence

import anyio
import numpy as np

from service.adapters import cork_dispatcher, raise_latency_budget
from service.core import stats, timing
from service.core.deadlines import ModelQueue, QueuePolicy, fill
from service.errors import Overloaded

FULL_BATCHES = 3  # a queued request may wait this many full-size model calls before it is shed
# A model whose full batch takes at most this long (seconds, timed at warm-up) runs on the event loop:
# the thread hand-off would cost more than the call (service/README.md, "Per-request overhead").
INLINE_BATCH_S = 0.002
# Batch-size buckets: powers of two up to the largest batch anyone configures (items per model call).
BATCH_BUCKETS = tuple(float(2**i) for i in range(0, 13))
# Latency buckets, seconds: 0.1 ms .. 10 s (from an MLP batch to a ResNet batch on CPU).
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@functools.cache
def model_metrics() -> tuple[object, object]:
    """(inference latency histogram, batch size histogram), labelled by model; created once per process.

    Created through ``bentoml.metrics`` so they land in BentoML's registry (multiprocess-safe) and on
    ``/metrics`` next to BentoML's own ``bentoml_service_*`` series.
    """
    import bentoml

    latency = bentoml.metrics.Histogram(
        name="model_zoo_inference_seconds",
        documentation="Model call latency (one batch through the runtime), seconds",
        labelnames=["model"],
        buckets=LATENCY_BUCKETS,
    )
    batch = bentoml.metrics.Histogram(
        name="model_zoo_batch_size",
        documentation="Items per model call after adaptive batching across requests",
        labelnames=["model"],
        buckets=BATCH_BUCKETS,
    )
    return latency, batch


class Batcher:
    """``await batcher(x)`` with ``x`` of shape ``(n, ...)`` -> ``fn(batch)[rows of x]``.

    ``fn`` maps a float32 ``(N, ...)`` batch to an ``(N, ...)`` output; it runs in a worker thread,
    or on the event loop once ``calibrate`` found a full batch cheaper than ``INLINE_BATCH_S``. On the
    event loop, a request that finds nothing outstanding, fits one batch, and is the first to reach the
    batcher in this turn of the loop (and no ``max_wait_ms`` to hold for companions) is computed in its
    own task, without the dispatcher (the module docstring says why).
    Must first be called from the server's event loop (the dispatcher binds to it).
    """

    def __init__(self, name: str, fn: Callable[[np.ndarray], np.ndarray], max_batch: int, max_latency_ms: int,
                 metrics: bool = True, policy: QueuePolicy = QueuePolicy(), max_wait_ms: float = 0.0) -> None:
        self.name = name
        self.queue = ModelQueue(name, policy, metrics)
        self.fn = fn
        self.metrics = model_metrics() if metrics else None
        self.max_batch = max_batch
        # counts items, not requests; an idle model holds a batch for companions at most max_wait_ms
        self.dispatcher = cork_dispatcher(max_latency_ms, max_batch, self._overloaded, max_wait_ms)
        self.inline = False  # until calibrate() has timed the model
        self.holds = max_wait_ms > 0  # asked to hold a batch for companions: always through the dispatcher
        self.outstanding = 0  # requests submitted to the dispatcher and not yet returned
        self._computed_this_turn = False  # a request was computed without the dispatcher in this turn of the loop
        self._submit = self.dispatcher(self._dispatch)  # async: the dispatcher awaits it on the loop

    def calibrate(self, seconds_per_item: float) -> float:
        """Raise the latency budget to what this model needs on this machine; returns it (seconds).

        The dispatcher sheds a queued job that has waited ``max_latency`` while a batch runs. A request
        larger than ``max_batch`` is split and its second chunk waits for the first, so on a slow model
        (a ResNet-18 at 224x224 on CPU: seconds per full batch) a configured 2 s budget would turn one
        legitimate large request into a 503. The budget becomes at least ``FULL_BATCHES`` full batches.
        """
        full_batch = seconds_per_item * self.max_batch
        self.inline = full_batch <= INLINE_BATCH_S
        return raise_latency_budget(self.dispatcher, FULL_BATCHES * full_batch)

    def _overloaded(self) -> np.ndarray:
        raise Overloaded(self.name)

    async def _dispatch(self, parts: Sequence[np.ndarray]) -> list[np.ndarray | Exception]:
        run, skipped = await self.queue.formed(parts)  # requests past their deadline or client: not computed
        if self.inline:
            return fill(self._run_batch(run), skipped)
        return fill(await anyio.to_thread.run_sync(self._run_batch, run), skipped)

    def _run_batch(self, parts: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The queued requests' arrays -> one output per part (in a thread, or inline for tiny models).
        Each request's timing record (service/core/timing.py) gets its queue wait and this call."""
        sizes = [len(p) for p in parts]
        t0 = perf_counter_ns()
        batch = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        if type(batch) is not np.ndarray:
            batch = batch.view(np.ndarray)  # a request's timing.Timed view: the runtime gets a plain array
        t1 = perf_counter_ns()
        out = self.fn(batch)
        t2 = perf_counter_ns()
        outs = np.split(out, np.cumsum(sizes)[:-1], axis=0)
        t3 = perf_counter_ns()
        n = len(batch)
        if self.metrics is not None:
            latency, batch_hist = self.metrics
            latency.labels(model=self.name).observe((t2 - t1) * 1e-9)
            batch_hist.labels(model=self.name).observe(n)
        riders = [t for t in (getattr(p, "timing", None) for p in parts) if t is not None]
        for t in riders:
            t.rode(t0, t2 - t1, n)
        if riders:  # a call made for requests (warm-up calls carry no record and are not counted)
            stats.executed(self.name, n, t1 - t0, t2 - t1, t3 - t2)
        return outs

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return self.fn(x)
        record = timing.current()
        rows = x if record is None else timing.tagged(x, record)
        if (self.inline and not self.outstanding and not self._computed_this_turn and not self.holds
                and len(x) <= self.max_batch):
            self.queue.check_now()  # only a passed deadline applies: there is no queue to bound or wait in
            # the requests that reach the batcher later in this turn of the loop arrived with this one:
            # they go to the dispatcher and batch together (cleared by the loop's next turn)
            self._computed_this_turn = True
            asyncio.get_running_loop().call_soon(self._next_turn)
            return self._run_batch([rows])[0]
        self.outstanding += 1
        try:
            return await self.queue.submit(self._submit, rows)
        finally:
            self.outstanding -= 1

    def _next_turn(self) -> None:
        self._computed_this_turn = False

    def shutdown(self) -> None:
        """Stop the dispatcher and let go of ``fn``: a bound method of the model that owns this batcher,
        so model -> batcher -> fn -> model is a reference cycle that only a full collection would free."""
        self.dispatcher.shutdown()
        self.fn = _shut_down


def _shut_down(x: np.ndarray) -> np.ndarray:
    raise RuntimeError("this batcher was shut down (its model was unloaded or replaced)")
