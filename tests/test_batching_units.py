"""The batcher's fast path (service/core/batching.py), without a server: on a model that runs on the event
loop, a request that finds nothing outstanding is computed in its own task, without BentoML's
dispatcher; every other request goes through the dispatcher as before. ``Watched`` records the batches
the dispatcher forms, ``Model`` every model call and where it ran."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import prometheus_client
import pytest
from test_deadlines_units import Counted

from service.core import deadlines, stats, timing
from service.core.batching import INLINE_BATCH_S, Batcher
from service.core.deadlines import Deadline, client_wait
from service.errors import DeadlineExceeded


class Model:
    """``fn`` for a Batcher: doubles its batch; records each call's items, task and thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, asyncio.Task | None, int]] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # a worker thread: no event loop running here
            task = None
        self.calls.append((len(batch), task, threading.get_ident()))
        return batch * 2

    @property
    def sizes(self) -> list[int]:
        return [n for n, _, _ in self.calls]


class Watched(Batcher):
    """A Batcher that records the items of each part of every batch its dispatcher forms."""

    def __init__(self, *args, **kwargs) -> None:
        self.dispatched: list[list[int]] = []
        super().__init__(*args, **kwargs)  # hands the dispatcher this class's _dispatch

    async def _dispatch(self, parts):
        self.dispatched.append([len(p) for p in parts])
        return await super()._dispatch(parts)


def watched(model: Model, inline: bool = True, max_batch: int = 4, name: str = "unit-fast", **kwargs) -> Watched:
    """A batcher calibrated as a model a full batch of which takes half (inline) or twice INLINE_BATCH_S."""
    batcher = Watched(name, model, max_batch=max_batch, max_latency_ms=5000, metrics=False, **kwargs)
    batcher.calibrate(INLINE_BATCH_S / max_batch * (0.5 if inline else 2))
    assert batcher.inline == inline
    return batcher


def rows(*values: float) -> np.ndarray:
    return np.array(values, np.float32).reshape(-1, 1)


def test_a_lone_request_on_an_inline_model_is_computed_in_its_own_task_without_the_dispatcher():
    model = Model()

    async def main() -> None:
        batcher = watched(model)
        for n in (1, 3, 4):
            await asyncio.sleep(0)  # a later turn of the loop: the client's next request
            x = np.arange(2 * n, dtype=np.float32).reshape(n, 2)
            y = await batcher(x)
            assert type(y) is np.ndarray
            np.testing.assert_array_equal(y, x * 2)  # fn(x), exactly
            assert model.calls[-1] == (n, asyncio.current_task(), threading.get_ident())
        assert batcher.dispatched == [] and batcher.outstanding == 0
        batcher.shutdown()
        with pytest.raises(RuntimeError, match="shut down"):  # fn is gone: an answer, not a hang
            await batcher(rows(1.0))

    asyncio.run(main())


def test_of_requests_arriving_together_at_an_idle_inline_model_the_first_is_computed_at_once_and_the_rest_batch():
    """Requests that reach the batcher in the same turn of the loop arrived together (under load, one turn
    runs every request read since the last): the first finds the batcher idle and is computed in its
    own task; the rest go to the dispatcher, which batches them."""
    model = Model()

    async def main() -> tuple[Watched, list[asyncio.Task]]:
        batcher = watched(model)
        inputs = [rows(i) for i in range(8)]
        tasks = [asyncio.ensure_future(batcher(x)) for x in inputs]
        for x, y in zip(inputs, await asyncio.gather(*tasks)):
            np.testing.assert_array_equal(y, x * 2)  # each request gets its own rows back
        await asyncio.sleep(0)
        np.testing.assert_array_equal(await batcher(rows(9)), rows(18))  # idle again, a later turn: at once
        batcher.shutdown()
        return batcher, tasks

    batcher, tasks = asyncio.run(main())
    assert batcher.dispatched == [[1, 1, 1, 1], [1, 1, 1]]
    assert model.sizes == [1, 4, 3, 1]
    assert model.calls[0][1] is tasks[0]  # the first, in its own task
    assert all(task not in tasks for _, task, _ in model.calls[1:3])  # the batches, in the dispatcher's


@pytest.mark.parametrize("inline, max_wait_ms", [(False, 0.0), (True, 1.0)], ids=["in-a-thread", "holds-a-batch"])
def test_a_model_in_a_thread_or_one_that_holds_a_batch_for_companions_always_goes_through_the_dispatcher(
        inline, max_wait_ms):
    model = Model()

    async def main() -> tuple[Watched, asyncio.Task]:
        batcher = watched(model, inline=inline, max_wait_ms=max_wait_ms)
        for i in range(3):
            np.testing.assert_array_equal(await batcher(rows(i)), rows(2 * i))
        batcher.shutdown()
        return batcher, asyncio.current_task()

    batcher, request_task = asyncio.run(main())
    assert batcher.dispatched == [[1]] * 3 and model.sizes == [1] * 3
    assert all(task is not request_task for _, task, _ in model.calls)
    if not inline:
        assert all(task is None for _, task, _ in model.calls)  # in a worker thread


def test_requests_arriving_while_one_is_in_the_dispatcher_go_through_it_and_are_batched():
    model = Model()

    async def main() -> None:
        batcher = watched(model, max_batch=4)
        large = np.arange(6, dtype=np.float32).reshape(6, 1) + 100  # more than a batch: the dispatcher's
        inputs = [rows(i) for i in range(8)]
        first = asyncio.ensure_future(batcher(large))
        outs = await asyncio.gather(*(batcher(x) for x in inputs))  # queued while it is outstanding
        np.testing.assert_array_equal(await first, large * 2)
        for x, y in zip(inputs, outs):
            np.testing.assert_array_equal(y, x * 2)  # each request gets its own rows back
        assert batcher.outstanding == 0
        batcher.shutdown()
        # the large request split 4 + 2, the rest batched behind it in arrival order
        assert batcher.dispatched == [[4], [2, 1, 1], [1, 1, 1, 1], [1, 1]]

    asyncio.run(main())
    assert model.sizes == [4, 4, 4, 2]


def test_a_request_larger_than_a_batch_goes_through_the_dispatcher_and_the_next_lone_one_does_not():
    model = Model()

    async def main() -> None:
        batcher = watched(model, max_batch=4)
        x = np.arange(6, dtype=np.float32).reshape(6, 1)
        np.testing.assert_array_equal(await batcher(x), x * 2)
        assert batcher.dispatched == [[4], [2]] and batcher.outstanding == 0
        np.testing.assert_array_equal(await batcher(rows(7.0)), rows(14.0))
        assert batcher.dispatched == [[4], [2]] and model.calls[-1][1] is asyncio.current_task()
        batcher.shutdown()

    asyncio.run(main())
    assert model.sizes == [4, 2, 1]


def test_a_passed_deadline_on_the_fast_path_is_a_counted_504_and_nothing_is_computed():
    model, counted, asked = Model(), Counted(), []

    async def gone() -> bool:
        asked.append(True)
        return True

    async def main() -> None:
        batcher = watched(model)
        batcher.queue.counter = counted
        with client_wait(Deadline.after(-0.001, deadlines.HEADER)):
            with pytest.raises(DeadlineExceeded, match="Request-Timeout") as err:
                await batcher(rows(5.0))
        assert err.value.status == 504 and model.calls == []
        with client_wait(Deadline.after(30, deadlines.HEADER), gone):  # in time: computed, its client not asked
            np.testing.assert_array_equal(await batcher(rows(3.0)), rows(6.0))
        assert batcher.dispatched == []
        batcher.shutdown()

    asyncio.run(main())
    assert model.sizes == [1] and asked == [] and counted.counts == {"deadline": 1}


def test_the_fast_path_fills_the_timing_record_the_statistics_and_the_histograms():
    name = "unit-fast-stats"

    def sample(metric: str) -> float:
        return prometheus_client.REGISTRY.get_sample_value(metric, {"model": name}) or 0.0

    async def main() -> timing.RequestTiming:
        batcher = Watched(name, Model(), max_batch=4, max_latency_ms=5000)  # metrics on: BentoML's registry
        batcher.calibrate(INLINE_BATCH_S / 8)
        record = timing.start("unit")
        await batcher(np.zeros((3, 2), np.float32))
        assert batcher.dispatched == []
        batcher.shutdown()
        return record

    record = asyncio.run(main())
    assert record.batched and record.batch == 3 and record.infer_ns > 0 and record.queue_ns >= 0
    [entry] = stats.model_statistics([(name, "1")])
    assert entry["execution_count"] == 1 and entry["inference_count"] == 3
    assert [b["batch_size"] for b in entry["batch_stats"]] == [3]
    assert sample("model_zoo_batch_size_count") == 1 and sample("model_zoo_batch_size_sum") == 3
    assert sample("model_zoo_inference_seconds_count") == 1
