"""The set of models one worker serves: which are in the store, loaded, warmed up, or why not.

Shared by the BentoML endpoints and the Open Inference Protocol app. Loading and warm-up run as a
background task on the server's event loop after start-up, so ``/livez`` answers at once and
``/readyz`` turns 200 only when every model present in the store is loaded *and* warmed up.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from service.config import FAMILIES, Settings
from service.errors import ModelUnavailable, NotFound, missing_model_message
from service.models import Forecaster, ImageClassifier, load_model

logger = logging.getLogger("model_zoo.registry")

WARMUP_ROUNDS = 16  # model calls per model: > 12, the requests BentoML's batcher uses to fit its latency model


def store_entry(name: str) -> Any | None:
    """The latest stored model ``name`` in BentoML's model store (a bento's own store when serving a bento)."""
    import bentoml
    from bentoml.exceptions import NotFound as StoreNotFound

    try:
        return bentoml.models.get(f"{name}:latest")
    except StoreNotFound:
        return None


# Young-generation collections run every GC_THRESHOLD[0] net allocations; Python's default (700) means
# several collections per HTTP request on this stack. Measured at c=32 single-image /classify_digit.
GC_THRESHOLD = (20_000, 20, 20)


def settle_heap() -> None:
    """After loading and warm-up: move everything alive into the permanent generation and space out
    collections. The worker's heap after start-up (BentoML, pydantic, numpy, ONNX Runtime, starlette:
    hundreds of thousands of objects) never becomes garbage, but every full collection walked it:
    at 32 concurrent /classify_digit clients those pauses were the p99 (125 ms against a p50 of
    24 ms) and ~11% of the worker's CPU per request (0.81 vs 0.72 ms). ``gc.freeze()`` takes it out of every later collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)
    logger.info("start-up heap frozen (%d objects) and GC thresholds set to %s", gc.get_freeze_count(), GC_THRESHOLD)


class Zoo:
    def __init__(self, settings: Settings, stored: dict[str, Any]) -> None:
        """``stored``: family -> stored model (BentoML ``Model``) for every family present in the store."""
        self.settings = settings
        self.stored = stored
        self.models: dict[str, ImageClassifier | Forecaster] = {}
        self.failures: dict[str, str] = {}
        self.warm: set[str] = set()
        self.done = False
        self._task: asyncio.Task | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Schedule loading + warm-up on the running loop (returns at once)."""
        self._task = asyncio.get_running_loop().create_task(self._load_all())

    async def _load_all(self) -> None:
        for name in FAMILIES:
            if name not in self.stored:
                if name in self.settings.models:
                    logger.warning(missing_model_message(name))
                continue
            try:
                model = await asyncio.to_thread(load_model, name, self.stored[name], self.settings)
                self.models[name] = model
                await model.warmup(WARMUP_ROUNDS, self.settings.warmup_s)
                self.warm.add(name)
                logger.info("%s is warmed up", name)
            except Exception as exc:  # noqa: BLE001 - one broken entry must not take the others down
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self.failures[name] = f"model {name!r} failed to load: {first}"
                logger.exception("model %s failed to load", name)
        self.done = True
        settle_heap()
        logger.info("model zoo ready: serving %s%s", ", ".join(sorted(self.warm)) or "nothing",
                    f"; failed: {', '.join(sorted(self.failures))}" if self.failures else "")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        for model in self.models.values():
            if isinstance(model, ImageClassifier):
                model.batcher.shutdown()

    # ------------------------------------------------------------------ queries

    def is_ready(self) -> bool:
        """Every model present in the store loaded and warmed up (a failed load keeps this False)."""
        return self.done and not self.failures and self.warm == set(self.stored)

    def model_ready(self, name: str) -> bool:
        return name in self.warm

    def known(self) -> list[str]:
        return list(FAMILIES)

    def get(self, name: str) -> ImageClassifier | Forecaster:
        """The warmed-up model, or the 4xx/503 that explains why it cannot answer."""
        if name not in FAMILIES:
            raise NotFound(f"unknown model {name!r}; known models: {', '.join(FAMILIES)}")
        if name not in self.settings.models:
            raise ModelUnavailable(f"model {name!r} is not served by this instance: MODEL_ZOO_MODELS="
                                   f"{','.join(self.settings.models)}")
        if name not in self.stored:
            raise ModelUnavailable(missing_model_message(name))
        if name in self.failures:
            raise ModelUnavailable(self.failures[name])
        if name not in self.warm:
            raise ModelUnavailable(f"model {name!r} is still loading; retry shortly (see /readyz)",
                                   headers={"Retry-After": "1"})
        return self.models[name]
