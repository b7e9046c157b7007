"""The served models: an image classifier or a forecaster around one store entry and its session.

Post-processing lives here (DESIGN.md: models return logits; softmax, top-k and labels belong to the
service). Forecast validation uses the limits of the model's ``SequenceSpec``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service.config import Settings
from service.control.store import read_spec
from service.core import limits
from service.core.band import band_warning
from service.core.batching import Batcher
from service.core.preprocess import describe, measure, preprocess_many
from service.core.runtime import Session, load_session
from service.errors import BadRequest, Overloaded
from zoo.spec import Spec

logger = logging.getLogger("model_zoo.models")

TOP_K = 5  # entries in "top_k" (fewer when the model has fewer classes)
# Uploads up to this many bytes that also decode to few pixels (limits.INLINE_DECODE_PIXELS) are
# decoded on the event loop: a 28x28 PNG costs less than a thread hop; the rest go to a thread.
INLINE_DECODE_BYTES = 16 * 1024


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, K) logits, computed in float64 for stable small scores."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(probs: np.ndarray, labels: tuple[str, ...], k: int) -> list[list[dict[str, Any]]]:
    """(N, K) probabilities -> per item the k best ``{"label", "index", "score"}``, best first (ties: lower index)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[{"label": labels[j], "index": int(j), "score": float(p[j])} for j in row] for p, row in zip(probs, order)]


@dataclass
class Loaded:
    """What every served model shares: its name, store tag, spec and session."""

    name: str
    tag: str
    path: Path
    spec: Spec
    session: Session

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[-1]

    def describe(self) -> str:
        return (f"{self.tag} ({self.spec.family}): {self.session.runtime} {self.session.artifact} on {self.session.provider}")


class ImageClassifier:
    def __init__(self, loaded: Loaded, settings: Settings) -> None:
        self.m = loaded
        self.settings = settings
        self.spec = loaded.spec
        self.batcher = Batcher(loaded.name, self.logits_sync, settings.max_batch, settings.max_latency_ms)

    def logits_sync(self, x: np.ndarray) -> np.ndarray:
        """(N, *input_shape) float32 -> (N, num_classes) logits, straight through the session."""
        return self.m.session.run({"input": x})["logits"]

    async def logits(self, x: np.ndarray) -> np.ndarray:
        """Through the adaptive batcher (batched with other requests)."""
        return await self.batcher(x)

    @property
    def pixel_cap(self) -> int:
        """Decoded pixels per image: follows the model's input size, at most MODEL_ZOO_MAX_PIXELS."""
        return limits.image_pixel_cap(self.spec.image.height, self.spec.image.width, self.settings)

    def measure(self, files: list[tuple[str | None, bytes]]) -> int:
        """Decoded pixels of the request, from the files' headers; 413 over a per-image or per-request cap."""
        cap = self.pixel_cap
        total = sum(measure(data, describe(i, name), cap) for i, (name, data) in enumerate(files))
        limits.request_pixels(total, self.settings)
        return total

    def preprocess(self, files: list[tuple[str | None, bytes]]) -> np.ndarray:
        self.measure(files)
        return preprocess_many(files, self.spec.image, self.pixel_cap)

    async def prepare(self, files: list[tuple[str | None, bytes]]) -> np.ndarray:
        """Encoded files -> model input; decoded on the loop only when small in bytes *and* in pixels
        (a 702-byte WebP can decode to 16 M pixels), otherwise in a thread so the loop keeps answering."""
        if sum(len(data) for _, data in files) <= INLINE_DECODE_BYTES and \
                self.measure(files) <= limits.INLINE_DECODE_PIXELS:
            return preprocess_many(files, self.spec.image, self.pixel_cap)
        return await asyncio.to_thread(self.preprocess, files)

    def postprocess(self, logits: np.ndarray) -> list[dict[str, Any]]:
        probs = softmax(logits)
        k = min(TOP_K, self.spec.num_classes)
        out = []
        for best in top_k(probs, self.spec.labels, k):
            out.append({**best[0], "top_k": best})
        return out

    def close(self) -> None:
        """Unloaded or replaced, with no request in flight: stop the batcher and release the session.
        Breaks the model <-> batcher cycle so the model's memory returns by reference counting, not at
        the next full collection (rare under service/control/manager.py's ``settle_heap``)."""
        self.batcher.shutdown()
        self.m.session.close()

    async def classify(self, files: list[tuple[str | None, bytes]]) -> list[dict[str, Any]]:
        return self.postprocess(await self.logits(await self.prepare(files)))

    def _single_threaded(self) -> None:
        """A model cheap enough to run on the event loop also runs on one ORT thread: handing so small a
        call to ORT's pool costs more than it saves, and the pool thread competes for the core the event
        loop needs (service/README.md, "Per-request overhead")."""
        session = self.m.session
        if session.runtime != "onnx" or session.provider != "CPUExecutionProvider" or self.settings.threads == 1:
            return
        self.m.session = load_session(self.m.path, self.spec, "onnx", self.settings.precision, threads=1)
        x = np.zeros((1, *self.spec.image.input_shape()), np.float32)
        for _ in range(8):
            self.logits_sync(x)
        logger.info("%s: cheap enough for the event loop; its session now runs on one thread", self.m.name)

    async def warmup(self, rounds: int, min_seconds: float) -> None:
        """Run batches of several sizes straight through the session (first calls are slow: ORT
        allocations, TorchScript profiling), then through the batcher so its latency model is fitted
        on real timings. A batcher that sheds a warm-up call (tiny MODEL_ZOO_MAX_LATENCY_MS) is fine."""
        rng = np.random.default_rng(0)
        shape = self.spec.image.input_shape()
        start = time.monotonic()
        def timed(x: np.ndarray) -> float:  # seconds in the runtime alone (no thread hand-off)
            t0 = time.perf_counter()
            self.logits_sync(x)
            return time.perf_counter() - t0

        i, largest, per_item = 0, 0, 0.0
        while i < rounds or time.monotonic() - start < min_seconds:
            x = rng.standard_normal(((1, 2, 4, 8)[i % 4], *shape), dtype=np.float32)
            seconds = await asyncio.to_thread(timed, x)
            if len(x) >= largest:  # the latest (warm) call of the largest batch: least fixed overhead
                largest, per_item = len(x), seconds / len(x)
            i += 1
        budget = self.batcher.calibrate(per_item)
        if self.batcher.inline:
            await asyncio.to_thread(self._single_threaded)
        logger.info("%s: %.3f ms per image; batching up to %d images, latency budget %.0f ms, model calls %s",
                    self.m.name, per_item * 1e3, self.settings.max_batch, budget * 1e3,
                    "on the event loop (cheap)" if self.batcher.inline else "in a worker thread")
        for i in range(rounds):
            try:
                await self.logits(rng.standard_normal((1 + i % 4, *shape), dtype=np.float32))
            except Overloaded:
                pass


class Forecaster:
    def __init__(self, loaded: Loaded, settings: Settings) -> None:
        self.m = loaded
        self.settings = settings
        self.spec = loaded.spec
        self.seq = loaded.spec.sequence

    def validate(self, history: list[float], steps: int) -> np.ndarray:
        sq = self.seq
        if isinstance(steps, bool) or not isinstance(steps, int):
            raise BadRequest(f"'steps' must be an integer, got {steps!r}")
        if not 1 <= steps <= sq.max_steps:
            raise BadRequest(f"'steps' must be between 1 and {sq.max_steps}, got {steps}")
        if not sq.min_history <= len(history) <= sq.max_history:
            raise BadRequest(f"'history' must have between {sq.min_history} and {sq.max_history} values, "
                             f"got {len(history)}")
        bad = [i for i, v in enumerate(history) if not math.isfinite(v)]
        if bad:
            raise BadRequest(f"'history' must hold finite numbers; history[{bad[0]}] is {history[bad[0]]!r}"
                             + (f" ({len(bad)} such values)" if len(bad) > 1 else ""))
        return np.asarray(history, dtype=np.float32)

    def zero_state(self, n: int) -> dict[str, np.ndarray]:
        return {s: np.zeros((self.seq.num_layers, n, self.seq.hidden_size), np.float32) for s in self.seq.state_names}

    def rollout(self, history: np.ndarray, steps: int) -> np.ndarray:
        """(T,) history -> (steps,) forecast: the step graph fed the history with zero state, then
        one step at a time feeding its own prediction back (docs/contracts.md)."""
        sess = self.m.session
        feeds = {"x": history.reshape(1, -1, 1), **self.zero_state(1)}  # x (1, T, 1)
        out = np.empty(steps, np.float32)
        for t in range(steps):
            res = sess.run(feeds)
            out[t] = res["y"][0, -1, 0]  # the prediction of the next value
            feeds = {"x": res["y"][:, -1:, :], **{s: res[f"{s}_out"] for s in self.seq.state_names}}
        return out

    def close(self) -> None:
        """Unloaded or replaced, with no request in flight: release the session."""
        self.m.session.close()

    def forecast(self, history: list[float], steps: int) -> list[float]:
        return [float(v) for v in self.rollout(self.validate(history, steps), steps)]

    def answer(self, history: list[float], steps: int) -> dict[str, Any]:
        """The HTTP answer: ``{"forecast": [...]}`` plus ``"warning"`` when the history lies outside the trained band."""
        x = self.validate(history, steps)
        out: dict[str, Any] = {"forecast": [float(v) for v in self.rollout(x, steps)]}
        warning = band_warning(x, self.seq)
        if warning is not None:
            out["warning"] = warning
        return out

    async def warmup(self, rounds: int, min_seconds: float) -> None:
        t = np.arange(max(self.seq.min_history, 20), dtype=np.float32) * self.seq.dt
        start = time.monotonic()
        i = 0
        while i < rounds or time.monotonic() - start < min_seconds:
            await asyncio.to_thread(self.rollout, np.sin(t), 8)
            i += 1


def build_served_model(name: str, stored: Any, settings: Settings) -> ImageClassifier | Forecaster:
    """A stored model (BentoML ``Model``) served as ``name`` -> a session created, not yet warmed up."""
    spec = read_spec(stored)
    session = load_session(Path(stored.path), spec, settings.runtime, settings.precision, settings.threads)
    loaded = Loaded(name, str(stored.tag), Path(stored.path), spec, session)
    logger.info("loaded %s", loaded.describe())
    return ImageClassifier(loaded, settings) if spec.task == "classification" else Forecaster(loaded, settings)
