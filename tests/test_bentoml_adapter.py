"""The BentoML internals service/adapters.py relies on are still there and still behave so.

Each test fails with the internal's name when a BentoML upgrade changes it; what the service does
with them over HTTP is checked by the service tests (batching, 4xx bodies, every route answering).
"""

from __future__ import annotations

import asyncio
import inspect

import numpy as np
import pytest

from service.adapters import (
    INTERNALS,
    cork_dispatcher,
    raise_latency_budget,
)


def test_cork_dispatcher_batches_items_and_its_budget_can_be_raised():
    from bentoml._internal.marshal import dispatcher as module

    assert "self.max_latency" in inspect.getsource(module.CorkDispatcher.train_optimizer), INTERNALS["dispatcher"]
    assert "self.max_latency" in inspect.getsource(module.CorkDispatcher.controller), INTERNALS["dispatcher"]

    async def run() -> tuple[list[int], float]:
        sizes: list[int] = []

        async def call(parts):
            sizes.append(sum(len(p) for p in parts))
            return [p * 2 for p in parts]

        d = cork_dispatcher(1000, 8, fallback=lambda: None)
        assert raise_latency_budget(d, 0.5) == 1.0 and raise_latency_budget(d, 3.0) == 3.0
        submit = d(call)
        outs = await asyncio.gather(*(submit(np.full((3, 2), i, np.float32)) for i in range(4)))
        d.shutdown()
        for i, out in enumerate(outs):
            np.testing.assert_array_equal(out, np.full((3, 2), 2 * i, np.float32))
        return sizes, d.max_latency

    try:
        sizes, budget = asyncio.run(run())
    except TypeError as exc:
        pytest.fail(f"BentoML changed {INTERNALS['dispatcher']}: {exc}")
    assert budget == 3.0 and sum(sizes) == 12 and max(sizes) <= 8, (sizes, INTERNALS["dispatcher"])


def test_cork_dispatcher_caps_the_learned_wait_for_companions():
    """BentoML's optimizer learns its wait from the batches' own waits (which include that wait and any
    time queued under load), so it feeds on itself; a lone request after a load was held that long."""
    from bentoml._internal.marshal import dispatcher as module

    assert "self.wait =" in inspect.getsource(module.Optimizer.trigger_refresh), INTERNALS["optimizer"]
    assert "self.optimizer.wait" in inspect.getsource(module.CorkDispatcher.controller), INTERNALS["optimizer"]

    d = cork_dispatcher(600_000, 8, fallback=lambda: None, max_wait_ms=5)
    d.optimizer.wait = 300.0  # what a long load can teach it: seconds
    assert d.optimizer.wait == 0.005, INTERNALS["optimizer"]

    async def lone_request_after_a_load() -> np.ndarray:
        d = cork_dispatcher(600_000, 8, fallback=lambda: None)

        async def call(parts):
            return [p + 1 for p in parts]

        submit = d(call)
        for _ in range(12):  # past BentoML's warm-up and training of the optimizer
            await submit(np.zeros((1, 2), np.float32))
        d.optimizer.wait = 300.0
        try:
            return await asyncio.wait_for(submit(np.zeros((1, 2), np.float32)), 60)  # held 285 s without the cap
        finally:
            d.shutdown()

    np.testing.assert_array_equal(asyncio.run(lone_request_after_a_load()), np.ones((1, 2), np.float32))


def test_timeout_middleware_cancels_its_timer_and_still_answers_504():
    from bentoml._internal.server.http import traffic

    from service.adapters import install_timeout_middleware

    middleware = install_timeout_middleware()
    assert traffic.TimeoutMiddleware is middleware, INTERNALS["timeout"]
    assert hasattr(middleware, "_set_timer_out"), INTERNALS["timeout"]

    async def run() -> tuple[list[dict], list[dict], int]:
        loop = asyncio.get_running_loop()

        async def app(scope, receive, send):
            if scope["path"] == "/slow":
                await asyncio.sleep(60)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        async def receive():
            return {"type": "http.request", "body": b""}

        fast, slow = [], []

        async def collect(into, message):
            into.append(message)

        await middleware(app, timeout=30)({"type": "http", "path": "/fast"}, receive, lambda m: collect(fast, m))
        live = [h for h in loop._scheduled if not h.cancelled()]
        await middleware(app, timeout=0.01)({"type": "http", "path": "/slow", "headers": []}, receive,
                                            lambda m: collect(slow, m))
        return fast, slow, len(live)

    fast, slow, live = asyncio.run(run())
    assert [m.get("status") for m in fast] == [200, None] and fast[1]["body"] == b"ok"
    assert live == 0, "the answered request's timer is still scheduled"
    assert slow[0]["status"] == 504
