"""How long a client will wait, and how long a model's queue may hold a request (issue 31).

A request may carry a deadline: OIP ``parameters.timeout`` in microseconds (as Triton takes it), the
``Request-Timeout`` header on REST routes (seconds, a decimal such as ``0.25``), the gRPC deadline
(``Deadline.after(context.time_remaining(), GRPC)``), and each model may have a default
(``MODEL_ZOO_DEFAULT_TIMEOUT_MS``). The protocol edge states what it knows for the request being
answered with ``with client_wait(deadline, gone):``; the model's batcher (service/core/batching.py) reads
it: a request whose deadline passes while it is queued is answered at once (``DeadlineExceeded``, 504)
and its rows are never computed, and one whose client has gone (``gone()`` true when its batch is
formed) is dropped before it is computed.

The queue policy (``QueuePolicy``, per model from settings) bounds the queue: more than ``max_queue``
requests waiting, or a wait longer than ``max_delay_s`` before the request's batch is formed, is
``QueueFull`` (429 + Retry-After). Every drop is counted in ``model_zoo_dropped_requests_total{model,
reason}``, ``reason`` one of ``REASONS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator, Sequence

import numpy as np

from service.core.timing import Timed
from service.errors import BadRequest, DeadlineExceeded, QueueFull, ServiceError

HEADER = "Request-Timeout"
HEADER_FORMAT = "seconds as a positive decimal number, e.g. 0.25 or 2"
OIP_PARAMETER = "parameters.timeout"
OIP_FORMAT = "microseconds as a non-negative integer (0: no deadline), as Triton takes it"
GRPC = "gRPC deadline"
DEFAULT = "MODEL_ZOO_DEFAULT_TIMEOUT_MS"
REASONS = ("deadline", "disconnected", "queue_full", "queue_delay")  # the metric's bounded label values
_DECIMAL = re.compile(r"(\d+(\.\d*)?|\.\d+)")


@dataclass(frozen=True)
class Deadline:
    """A point on ``time.monotonic()``'s clock past which the client no longer wants the answer."""

    at: float
    timeout_s: float  # as the client gave it (for the message)
    source: str  # who set it: HEADER, OIP_PARAMETER, GRPC, DEFAULT

    @classmethod
    def after(cls, seconds: float, source: str, start: float | None = None) -> "Deadline":
        """``seconds`` from ``start`` (default: now)."""
        return cls((time.monotonic() if start is None else start) + seconds, seconds, source)

    def remaining(self, now: float | None = None) -> float:
        return self.at - (time.monotonic() if now is None else now)

    def expired(self, now: float | None = None) -> bool:
        return self.remaining(now) <= 0

    def describe(self) -> str:
        return f"{self.source} of {self.timeout_s * 1e3:.6g} ms"


def earliest(*deadlines: Deadline | None) -> Deadline | None:
    """The first of the deadlines given (``None``s ignored); ``None`` when none is."""
    found = [d for d in deadlines if d is not None]
    return min(found, key=lambda d: d.at) if found else None


def from_header(value: str | None, start: float | None = None) -> Deadline | None:
    """The ``Request-Timeout`` header (seconds, decimal) -> a deadline; a 400 naming the format when malformed."""
    if value is None:
        return None
    text = value.strip()
    seconds = float(text) if _DECIMAL.fullmatch(text) else math.nan
    if not (0 < seconds < math.inf):
        raise BadRequest(f"{HEADER} header {value!r} is not valid: give {HEADER_FORMAT}")
    return Deadline.after(seconds, f"{HEADER} header", start)


def from_oip(parameters: dict[str, Any], start: float | None = None) -> Deadline | None:
    """An OIP request's ``parameters.timeout`` (microseconds) -> a deadline (0 or absent: none); 400 when malformed."""
    value = parameters.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"{OIP_PARAMETER} {value!r} is not valid: give {OIP_FORMAT}")
    return Deadline.after(value / 1e6, OIP_PARAMETER, start) if value else None


@dataclass(frozen=True)
class ClientWait:
    """What the protocol edge knows about the client of the request being answered."""

    deadline: Deadline | None = None
    gone: Callable[[], Awaitable[bool]] | None = None  # true once the client has disconnected


_CURRENT: ContextVar[ClientWait | None] = ContextVar("model_zoo_client_wait", default=None)


@contextlib.contextmanager
def client_wait(deadline: Deadline | None, gone: Callable[[], Awaitable[bool]] | None = None) -> Iterator[None]:
    """Within the block, the batcher answers this request by ``deadline`` and drops it if ``gone()``."""
    token = _CURRENT.set(ClientWait(deadline, gone))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current() -> ClientWait | None:
    return _CURRENT.get()


@dataclass(frozen=True)
class QueuePolicy:
    """One model's queue: ``max_queue`` requests waiting at once and ``max_delay_s`` of waiting before
    its batch is formed (0: unbounded), and a default deadline for requests that bring none (0: none)."""

    max_queue: int = 0
    max_delay_s: float = 0.0
    default_timeout_s: float = 0.0

    @classmethod
    def for_model(cls, name: str, settings: Any) -> "QueuePolicy":
        return cls(settings.max_queue.get(name), settings.max_queue_delay_ms.get(name) / 1e3,
                   settings.default_timeout_ms.get(name) / 1e3)

    @property
    def active(self) -> bool:
        return bool(self.max_queue or self.max_delay_s or self.default_timeout_s)

    def deadline(self, start: float | None = None) -> Deadline | None:
        return Deadline.after(self.default_timeout_s, DEFAULT, start) if self.default_timeout_s else None


def deadline_exceeded(model: str, deadline: Deadline) -> DeadlineExceeded:
    return DeadlineExceeded(f"model {model!r}: the request's deadline passed before its answer was ready "
                            f"({deadline.describe()})")


def queue_full(model: str, policy: QueuePolicy, reason: str) -> QueueFull:
    if reason == "queue_full":
        why = f"{policy.max_queue} requests are already queued (MODEL_ZOO_MAX_QUEUE)"
    else:
        why = f"the request waited {policy.max_delay_s * 1e3:.6g} ms in the queue (MODEL_ZOO_MAX_QUEUE_DELAY_MS)"
    return QueueFull(f"model {model!r} is busy: {why}; retry after a short backoff")


@functools.cache
def dropped_counter() -> Any:
    """``model_zoo_dropped_requests_total{model, reason}``: requests answered or dropped without being
    computed (``reason`` one of ``REASONS``); created once per process in BentoML's registry."""
    import bentoml

    return bentoml.metrics.Counter(
        name="model_zoo_dropped_requests",
        documentation="Requests not computed: deadline passed (504), client gone, queue full or queue delay (429)",
        labelnames=["model", "reason"],
    )


class _Ticket:
    """One queued request: its deadline, its client and where it is: queued, formed into a batch, or
    dropped (never computed from then on)."""

    __slots__ = ("deadline", "gone", "enqueued", "state", "error")

    def __init__(self, deadline: Deadline | None, gone: Callable[[], Awaitable[bool]] | None) -> None:
        self.deadline, self.gone = deadline, gone
        self.enqueued = time.monotonic()
        self.state = "queued"
        self.error: Exception | None = None  # what answers a dropped request


class Queued(Timed):
    """A request's ``(n, ...)`` rows carrying its ticket (and its timing record, service/core/timing.py)
    through BentoML's dispatcher, which may split them (slices keep both: ``__array_finalize__``)."""

    ticket: _Ticket | None = None

    def __array_finalize__(self, obj: Any) -> None:
        super().__array_finalize__(obj)
        self.ticket = getattr(obj, "ticket", None)


class ClientGone(ServiceError):
    """The client disconnected while its request was queued: nobody reads this answer (nginx's 499)."""

    status = 499


# A request formed into a batch after waiting at least this long is asked whether its client is still
# there (one receive() through the middlewares); a fresher one is answered before the check would pay off.
GONE_CHECK_AFTER_S = 0.001


class ModelQueue:
    """Deadlines, client disconnects and the queue policy around one model's batcher
    (service/core/batching.py calls ``submit`` for each request and ``formed`` for each batch, or
    ``check_now`` for a request it computes at once)."""

    def __init__(self, model: str, policy: QueuePolicy, metrics: bool = True) -> None:
        self.model, self.policy = model, policy
        self.counter = dropped_counter() if metrics else None
        self.queued = 0  # requests submitted and not yet formed into a batch (or dropped)

    def _count(self, reason: str) -> None:
        if self.counter is not None:
            self.counter.labels(model=self.model, reason=reason).inc()

    def _move(self, ticket: _Ticket, state: str) -> None:
        if ticket.state == "queued":
            self.queued -= 1
        ticket.state = state

    def _drop(self, ticket: _Ticket, reason: str, error: Exception) -> Exception:
        if ticket.state != "dropped":
            self._move(ticket, "dropped")
            ticket.error = error
            self._count(reason)
        return error

    def _in_time(self, wait: ClientWait | None) -> Deadline | None:
        """The request's deadline; ``DeadlineExceeded`` (counted) when it has passed already."""
        deadline = earliest(wait.deadline if wait else None, self.policy.deadline())
        if deadline is not None and deadline.expired():
            self._count("deadline")
            raise deadline_exceeded(self.model, deadline)
        return deadline

    def check_now(self) -> None:
        """Before a request is computed at once, with nothing queued (the batcher's fast path): its 504
        if its deadline has passed. Whether its client has gone is not asked: asking is an await, and
        computing now costs less; the queue's bounds cannot be reached with nothing queued."""
        wait = current()
        if wait is not None or self.policy.active:
            self._in_time(wait)

    async def submit(self, call: Callable[[np.ndarray], Awaitable[Any]], x: np.ndarray) -> Any:
        """``await call(x)`` within this request's deadline and the queue's bounds."""
        wait, policy = current(), self.policy
        if wait is None and not policy.active:
            return await call(x)  # nothing to enforce: BentoML's dispatcher as it is
        deadline = self._in_time(wait)
        if policy.max_queue and self.queued >= policy.max_queue:
            self._count("queue_full")
            raise queue_full(self.model, policy, "queue_full")
        ticket = _Ticket(deadline, wait.gone if wait else None)
        rows = x.view(Queued)
        rows.ticket = ticket
        self.queued += 1
        if deadline is None and not policy.max_delay_s:
            try:
                return await call(rows)
            finally:
                if ticket.state == "queued":  # shed by the dispatcher, or cancelled: never to be computed
                    self._move(ticket, "dropped")
        task = asyncio.ensure_future(call(rows))
        try:
            while True:
                limit = deadline.at if deadline is not None else math.inf
                if ticket.state == "queued" and policy.max_delay_s:
                    limit = min(limit, ticket.enqueued + policy.max_delay_s)
                timeout = None if limit == math.inf else max(0.0, limit - time.monotonic())
                done, _ = await asyncio.wait({task}, timeout=timeout)
                if done:
                    return task.result()
                if deadline is not None and deadline.expired():  # its rows are skipped when its batch is formed
                    raise self._drop(ticket, "deadline", deadline_exceeded(self.model, deadline))
                # (a timer may wake the wait before the deadline is due, uvloop's by up to a millisecond: then
                # neither applies and it waits again; with no queue delay set there is none to pass)
                if (policy.max_delay_s and ticket.state == "queued"
                        and time.monotonic() >= ticket.enqueued + policy.max_delay_s):
                    raise self._drop(ticket, "queue_delay", queue_full(self.model, policy, "queue_delay"))
                # formed into a batch meanwhile: only the deadline is left to wait for
        finally:
            if not task.done():
                task.add_done_callback(_retrieve)
            if ticket.state == "queued":
                self._move(ticket, "dropped")

    async def formed(self, parts: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[Exception | None]]:
        """The dispatcher formed a batch of ``parts``: (the rows to compute, per part the error that
        answers it instead, or None). A request dropped while queued, or whose client is gone, is skipped."""
        now = time.monotonic()
        run: list[np.ndarray] = []
        skipped: list[Exception | None] = []
        for part in parts:
            ticket = getattr(part, "ticket", None)
            if ticket is not None and ticket.state == "queued":
                if ticket.deadline is not None and ticket.deadline.expired(now):
                    self._drop(ticket, "deadline", deadline_exceeded(self.model, ticket.deadline))
                elif ticket.gone is not None and now - ticket.enqueued >= GONE_CHECK_AFTER_S and await ticket.gone():
                    self._drop(ticket, "disconnected", ClientGone(f"model {self.model!r}: the client disconnected"))
                else:
                    self._move(ticket, "formed")
            if ticket is not None and ticket.state == "dropped":
                skipped.append(ticket.error or ClientGone("dropped"))
            else:
                skipped.append(None)
                run.append(part)  # still a view: the batcher reads its timing record, then hands on a plain array
        if not run:  # raised, not returned: the dispatcher then leaves this batch out of its latency model,
            raise skipped[0]  # whose wait for companions would learn from these waits; every waiter has answered or gone
        return run, skipped


def fill(outputs: list[np.ndarray], skipped: list[Exception | None]) -> list[Any]:
    """Per part of a formed batch: its output rows, or the error that answers it instead."""
    it = iter(outputs)
    return [next(it) if error is None else error for error in skipped]


def _retrieve(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled():
        task.exception()  # the waiter answered already: nobody reads this result
