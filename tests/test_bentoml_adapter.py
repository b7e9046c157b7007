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
