"""Deadlines, disconnected clients and the queue policy around a model's batcher (service/core/deadlines.py),
without a server: a model that holds its first batch until released shows which requests are answered
while it is busy, and which rows it is ever asked to compute."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import numpy as np
import pytest

from service.config import ConfigError, Settings
from service.core import deadlines
from service.core.batching import Batcher
from service.core.deadlines import ClientGone, Deadline, QueuePolicy, client_wait
from service.errors import BadRequest, DeadlineExceeded, QueueFull


class Counted:
    """Stands for the Prometheus counter: counts by reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def labels(self, model: str, reason: str) -> "Counted":
        self.reason = reason
        return self

    def inc(self) -> None:
        self.counts[self.reason] += 1


class HeldModel:
    """``fn`` for a Batcher: doubles its batch; once ``hold()`` is called, the next batch waits for ``release()``."""

    def __init__(self) -> None:
        self.rows: list[float] = []  # the first column of every row ever computed
        self.gate = threading.Event()
        self.gate.set()
        self.busy = threading.Event()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.rows.extend(batch[:, 0].tolist())
        self.busy.set()
        assert self.gate.wait(30)
        return batch * 2

    def hold(self) -> None:
        self.gate.clear()
        self.busy.clear()

    def release(self) -> None:
        self.gate.set()


async def held_batcher(policy: QueuePolicy = QueuePolicy(), max_batch: int = 8) -> tuple[Batcher, HeldModel, Counted]:
    model, counted = HeldModel(), Counted()
    batcher = Batcher("unit", model, max_batch=max_batch, max_latency_ms=600_000, metrics=False, policy=policy)
    batcher.calibrate(1.0)  # slow: batches run in a thread, so the event loop answers while one is held
    batcher.queue.counter = counted
    for _ in range(14):  # past the dispatcher's 12-call training phase, which runs one at a time
        await batcher(np.zeros((1, 1), np.float32))
    model.rows.clear()
    return batcher, model, counted


async def start_held_batch(batcher: Batcher, model: HeldModel) -> asyncio.Future:
    """A request whose batch is now being computed, held until ``model.release()``."""
    model.hold()
    first = asyncio.ensure_future(batcher(np.full((1, 1), 1.0, np.float32)))
    while not model.busy.is_set():
        await asyncio.sleep(0.001)
    return first


def row(value: float) -> np.ndarray:
    return np.full((1, 1), value, np.float32)


def test_a_queued_request_past_its_deadline_is_answered_at_once_and_never_computed():
    async def main() -> None:
        batcher, model, counted = await held_batcher()
        first = await start_held_batch(batcher, model)
        with client_wait(Deadline.after(0.05, "test deadline")):
            with pytest.raises(DeadlineExceeded) as err:
                await batcher(row(2.0))
        assert not model.gate.is_set()  # answered while the model was still busy with the first batch
        assert err.value.status == 504 and "test deadline of 50 ms" in err.value.message
        model.release()
        np.testing.assert_array_equal(await first, row(2.0))
        np.testing.assert_array_equal(await batcher(row(3.0)), row(6.0))  # the queue moved past the dropped one
        batcher.shutdown()
        assert 2.0 not in model.rows and model.rows == [1.0, 3.0]
        assert counted.counts == {"deadline": 1}

    asyncio.run(main())


def test_a_wait_woken_before_the_deadline_waits_again_and_is_not_a_queue_delay(monkeypatch):
    """uvloop's timers may fire up to a millisecond early: the wake finds neither the deadline passed nor
    a queue delay (none is set) and waits again, so the answer is still the deadline's 504 (it was a 429
    "waited 0 ms in the queue")."""
    real_wait, early = asyncio.wait, []

    async def wakes_early_once(tasks, timeout=None):
        if timeout is not None and not early:
            early.append(timeout)
            return set(), set(tasks)  # woken with the deadline not yet due
        return await real_wait(tasks, timeout=timeout)

    monkeypatch.setattr(deadlines.asyncio, "wait", wakes_early_once)

    async def main() -> None:
        batcher, model, counted = await held_batcher()
        first = await start_held_batch(batcher, model)
        with client_wait(Deadline.after(0.05, "test deadline")):
            with pytest.raises(DeadlineExceeded):
                await batcher(row(2.0))
        model.release()
        await first
        batcher.shutdown()
        assert counted.counts == {"deadline": 1}

    asyncio.run(main())
    assert early  # the early wake happened


def test_a_request_whose_deadline_has_passed_is_refused_before_it_is_queued():
    async def main() -> None:
        batcher, model, counted = await held_batcher()
        with client_wait(Deadline.after(-0.001, deadlines.HEADER)):
            with pytest.raises(DeadlineExceeded, match="Request-Timeout"):
                await batcher(row(5.0))
        batcher.shutdown()
        assert model.rows == [] and counted.counts == {"deadline": 1}

    asyncio.run(main())


def test_a_request_whose_client_has_gone_is_dropped_before_it_is_computed():
    async def gone() -> bool:
        return True

    async def there() -> bool:
        return False

    async def main() -> None:
        batcher, model, counted = await held_batcher()
        first = await start_held_batch(batcher, model)
        with client_wait(None, gone):
            dropped = asyncio.ensure_future(batcher(row(2.0)))
        with client_wait(None, there):
            kept = asyncio.ensure_future(batcher(row(3.0)))
        await asyncio.sleep(0.01)  # both queued behind the held batch
        model.release()
        await first
        with pytest.raises(ClientGone):
            await dropped
        np.testing.assert_array_equal(await kept, row(6.0))
        batcher.shutdown()
        assert model.rows == [1.0, 3.0] and counted.counts == {"disconnected": 1}

    asyncio.run(main())


def test_a_full_queue_answers_429_with_retry_after_and_the_queued_are_answered():
    async def main() -> None:
        batcher, model, counted = await held_batcher(QueuePolicy(max_queue=2))
        first = await start_held_batch(batcher, model)
        queued = [asyncio.ensure_future(batcher(row(v))) for v in (2.0, 3.0)]
        await asyncio.sleep(0)  # both are in the queue
        with pytest.raises(QueueFull) as err:
            await batcher(row(4.0))
        assert err.value.status == 429 and err.value.headers["Retry-After"] == "1"
        assert "2 requests are already queued (MODEL_ZOO_MAX_QUEUE)" in err.value.message
        model.release()
        await first
        for future, value in zip(queued, (2.0, 3.0)):
            np.testing.assert_array_equal(await future, row(2 * value))
        np.testing.assert_array_equal(await batcher(row(5.0)), row(10.0))  # room again
        batcher.shutdown()
        assert sorted(model.rows) == [1.0, 2.0, 3.0, 5.0] and counted.counts == {"queue_full": 1}
        assert batcher.queue.queued == 0

    asyncio.run(main())


def test_a_request_queued_longer_than_the_queue_delay_gets_429_and_is_never_computed():
    async def main() -> None:
        batcher, model, counted = await held_batcher(QueuePolicy(max_delay_s=0.05))
        first = await start_held_batch(batcher, model)
        with pytest.raises(QueueFull, match="MODEL_ZOO_MAX_QUEUE_DELAY_MS"):
            await batcher(row(2.0))
        assert not model.gate.is_set()
        model.release()
        await first
        np.testing.assert_array_equal(await batcher(row(3.0)), row(6.0))
        batcher.shutdown()
        assert model.rows == [1.0, 3.0] and counted.counts == {"queue_delay": 1}

    asyncio.run(main())


def test_the_model_default_deadline_applies_to_requests_without_one_and_a_client_deadline_can_be_earlier():
    async def main() -> None:
        batcher, model, counted = await held_batcher(QueuePolicy(default_timeout_s=0.05))
        first = await start_held_batch(batcher, model)
        with pytest.raises(DeadlineExceeded, match=deadlines.DEFAULT):
            await batcher(row(2.0))
        with client_wait(Deadline.after(0.02, deadlines.OIP_PARAMETER)):
            with pytest.raises(DeadlineExceeded, match="parameters.timeout of 20 ms"):
                await batcher(row(3.0))
        with pytest.raises(DeadlineExceeded):  # the held one too: computed, but later than its default
            await first
        model.release()
        np.testing.assert_array_equal(await batcher(row(4.0)), row(8.0))
        batcher.shutdown()
        assert model.rows == [1.0, 4.0] and counted.counts == {"deadline": 3}

    asyncio.run(main())


def test_a_request_split_across_batches_keeps_its_deadline_and_gets_its_rows_back():
    async def main() -> None:
        batcher, model, _ = await held_batcher(max_batch=4)
        x = np.arange(10, dtype=np.float32).reshape(10, 1)
        with client_wait(Deadline.after(30, "test")):
            out = await batcher(x)
        batcher.shutdown()
        np.testing.assert_array_equal(out, x * 2)
        assert not isinstance(out, deadlines.Queued) and sorted(model.rows) == x[:, 0].tolist()

    asyncio.run(main())


@pytest.mark.parametrize("value, seconds", [("0.25", 0.25), ("2", 2.0), (" .5 ", 0.5), ("10.", 10.0)])
def test_the_request_timeout_header_is_decimal_seconds(value, seconds):
    deadline = deadlines.from_header(value, start=100.0)
    assert deadline.at == pytest.approx(100.0 + seconds) and deadline.source == "Request-Timeout header"


@pytest.mark.parametrize("value", ["abc", "-1", "0", "0.0", "1e3", "inf", "nan", "", "1,5", "1" * 400])
def test_a_malformed_request_timeout_header_is_a_400_saying_the_format(value):
    with pytest.raises(BadRequest, match="Request-Timeout header .* give seconds as a positive decimal number"):
        deadlines.from_header(value)


def test_the_oip_timeout_is_microseconds_and_zero_is_none():
    assert deadlines.from_oip({}) is None and deadlines.from_oip({"timeout": 0}) is None
    deadline = deadlines.from_oip({"timeout": 100_000}, start=5.0)
    assert deadline.at == pytest.approx(5.1) and deadline.describe() == "parameters.timeout of 100 ms"
    for bad in (-1, 1.5, True, "100", [1]):
        with pytest.raises(BadRequest, match="parameters.timeout .* microseconds as a non-negative integer"):
            deadlines.from_oip({"timeout": bad})


def test_queue_settings_per_model(monkeypatch):
    monkeypatch.setenv("MODEL_ZOO_MAX_QUEUE", "16, cifar10-resnet18=4")
    monkeypatch.setenv("MODEL_ZOO_MAX_QUEUE_DELAY_MS", "mnist-mlp=50")
    monkeypatch.setenv("MODEL_ZOO_DEFAULT_TIMEOUT_MS", "")
    s = Settings.from_env()
    assert QueuePolicy.for_model("cifar10-resnet18", s) == QueuePolicy(4, 0.0, 0.0)
    assert QueuePolicy.for_model("mnist-mlp", s) == QueuePolicy(16, 0.05, 0.0)
    assert not QueuePolicy.for_model("x", Settings()).active
    for bad in ("many", "a=b", "Bad Name=3", "-1"):
        monkeypatch.setenv("MODEL_ZOO_MAX_QUEUE", bad)
        with pytest.raises(ConfigError, match="MODEL_ZOO_MAX_QUEUE"):
            Settings.from_env()
