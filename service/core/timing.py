"""Where one request's time went: a small record per request, carried in a context variable.

The HTTP edge (service/http/request_ids.py) starts a ``RequestTiming`` when a request arrives; the
answer paths (service/http/rest.py, service/http/oip.py) mark the end of each phase of the
served-model interface, and the adaptive batcher (service/core/batching.py) writes the queue wait and
the model call of the batch the request rode in::

    decode  model known -> input decoded (body read and parsed, images decoded)
    queue   submitted to the batcher -> its (first) batch starts
    infer   the batch's model call (a request split over two batches: both calls)
    encode  output -> answer body
    total   request arrived -> answer headers sent

A model that does not batch (the forecaster) has no queue; its ``predict`` is the infer phase and the
request is one model execution of its own rows. Times are ``perf_counter_ns`` integers; nothing here
locks or writes a file: the record belongs to one request, and the batch that fills it has finished
before the request reads it.
"""

from __future__ import annotations

import contextvars
from time import perf_counter_ns
from typing import Any

import numpy as np

_CURRENT: contextvars.ContextVar["RequestTiming | None"] = contextvars.ContextVar("model_zoo_timing", default=None)


class RequestTiming:
    """One request's phases, in nanoseconds, and the batch size it rode in."""

    __slots__ = ("start_ns", "mark_ns", "request_id", "decode_ns", "queue_ns", "infer_ns", "encode_ns", "batch",
                 "rows", "submitted_ns", "batched", "done")

    def __init__(self, request_id: str = "", start_ns: int | None = None) -> None:
        self.start_ns = perf_counter_ns() if start_ns is None else start_ns
        self.mark_ns = self.start_ns  # end of the previous phase
        self.request_id = request_id
        self.decode_ns = self.queue_ns = self.infer_ns = self.encode_ns = 0
        self.batch = 0  # items in the model call the request rode in (the largest, when split)
        self.rows = 0  # the request's own items
        self.submitted_ns = 0
        self.batched = False  # the batcher filled queue/infer/batch
        self.done = False  # the phases are complete: Server-Timing may be sent

    # ------------------------------------------------------------------ the answer paths

    def begin(self) -> None:
        """The model is known: decoding starts now."""
        self.mark_ns = perf_counter_ns()

    def decoded(self, item: Any) -> None:
        now = perf_counter_ns()
        self.decode_ns, self.mark_ns = now - self.mark_ns, now
        self.rows = rows(item)

    def predicted(self) -> None:
        now = perf_counter_ns()
        if not self.batched:  # no batcher on this model's path: the call was the model's own execution
            self.infer_ns, self.batch = now - self.mark_ns, self.rows
        self.mark_ns = now

    def encoded(self) -> None:
        now = perf_counter_ns()
        self.encode_ns, self.mark_ns = now - self.mark_ns, now
        self.done = True

    def total_ns(self, now: int | None = None) -> int:
        return (perf_counter_ns() if now is None else now) - self.start_ns

    # ------------------------------------------------------------------ the batcher

    def rode(self, batch_start_ns: int, infer_ns: int, batch: int) -> None:
        """A batch holding (part of) this request ran its model call: ``infer_ns`` from ``batch_start_ns``."""
        if not self.batched:
            self.queue_ns = max(0, batch_start_ns - self.submitted_ns)
            self.batched = True
        self.infer_ns += infer_ns
        self.batch = max(self.batch, batch)

    def server_timing(self, now: int | None = None) -> str:
        """The ``Server-Timing`` header value (durations in ms)."""
        ms = 1e-6
        return (f"decode;dur={self.decode_ns * ms:.3f}, queue;dur={self.queue_ns * ms:.3f}, "
                f"infer;dur={self.infer_ns * ms:.3f}, encode;dur={self.encode_ns * ms:.3f}, "
                f'total;dur={self.total_ns(now) * ms:.3f}, batch;desc="{self.batch}"')


def rows(item: Any) -> int:
    """Items in a decoded request: an ``(N, ...)`` array, a dict of feeds (the first one's N), else 1."""
    if isinstance(item, np.ndarray):
        return len(item) if item.ndim else 1
    if isinstance(item, dict) and item:
        first = next(iter(item.values()))
        if isinstance(first, np.ndarray) and first.ndim:
            return len(first)
    return 1


def start(request_id: str = "") -> RequestTiming:
    """A new record for the request being handled (the HTTP edge calls it first)."""
    timing = RequestTiming(request_id)
    _CURRENT.set(timing)
    return timing


def current() -> RequestTiming | None:
    return _CURRENT.get()


def request() -> RequestTiming:
    """The current request's record, started here when no edge started one (a direct call in a test)."""
    timing = _CURRENT.get()
    return timing if timing is not None else start()


class Timed(np.ndarray):
    """A request's array on its way through the batcher, carrying its ``RequestTiming``: BentoML's
    dispatcher may split it across two batches (``np.split``), and each piece keeps the record."""

    timing: RequestTiming | None

    def __array_finalize__(self, obj: Any) -> None:
        self.timing = getattr(obj, "timing", None)


def tagged(x: np.ndarray, timing: RequestTiming) -> np.ndarray:
    """``x`` as a ``Timed`` view (no copy) that carries ``timing``; marks it submitted now."""
    out = x.view(Timed)
    out.timing = timing
    timing.submitted_ns = perf_counter_ns()
    return out
