"""The image classifier behind the served-model interface (service/core/interface.py).

Requests are encoded image files (multipart uploads, or OIP ``images`` BYTES) or a preprocessed FP32
``input`` tensor; every request joins the model's adaptive batcher. Post-processing lives here
(DESIGN.md: models return logits; softmax, top-k and labels belong to the service).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np

from service.config import Settings
from service.core import limits
from service.core.batching import Batcher
from service.core.deadlines import QueuePolicy
from service.core.interface import Loaded, ServedModel, Tensors
from service.core.preprocess import describe, measure, preprocess_many
from service.core.runtime import load_session
from service.core.tensors import float_input, only_inputs
from service.errors import BadRequest, DeadlineExceeded, Overloaded, QueueFull, TooLarge

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


def full_batch_seconds(fastest: dict[int, float], max_batch: int) -> float:
    """A call of ``max_batch`` items, from the fastest warm-up call of each (small) size: a fixed cost per
    call plus a cost per item, fitted by least squares, and never less than the largest size's own call.

    Warm-up runs batches of 1-8 items only (a full batch of a large model would take seconds). Dividing
    the largest call by its items counted the fixed cost of a call (ORT's dispatch) into a tiny model's
    cost per item, so ``max_batch`` of them overstated its full batch several-fold: the MNIST MLP's landed
    either side of ``INLINE_BATCH_S`` from one start to the next (its log line says which), and a start
    that put it in a worker thread answered a lone request markedly slower.
    """
    sizes = np.array(sorted(fastest), dtype=np.float64)
    times = np.array([fastest[int(n)] for n in sizes])
    largest = times[-1] * max_batch / sizes[-1]  # the old estimate, for a single size
    if len(sizes) < 2:
        return largest
    per_item, fixed = np.polyfit(sizes, times, 1)
    return float(max(times[-1], max(fixed, 0.0) + max(per_item, 0.0) * max_batch))


class ImageClassifier(ServedModel):
    verb = "classify"
    payload = "images"

    def __init__(self, loaded: Loaded, settings: Settings) -> None:
        super().__init__(loaded, settings)
        self.batcher = Batcher(loaded.name, self.logits_sync, settings.max_batch, settings.max_latency_ms,
                               policy=QueuePolicy.for_model(loaded.name, settings), max_wait_ms=settings.batch_wait_ms)

    def logits_sync(self, x: np.ndarray) -> np.ndarray:
        """(N, *input_shape) float32 -> (N, num_classes) logits, straight through the session."""
        return self.session.run({"input": x})["logits"]

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

    # ------------------------------------------------------------------ REST: uploads -> labels

    async def decode(self, payload: Any) -> np.ndarray:
        """Parsed uploads (service/http/uploads.py ``Uploads``, whose ``error`` is a parse failure) -> (N, C, H, W)."""
        if payload.error is not None:
            raise payload.error
        return await self.prepare(payload.files)

    async def predict(self, item: np.ndarray) -> np.ndarray:
        return await self.logits(item)

    def encode(self, item: np.ndarray, output: np.ndarray) -> list[dict[str, Any]]:
        return self.postprocess(output)

    # ------------------------------------------------------------------ OIP: input / images -> logits

    def tensor_metadata(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        shape = self.spec.image.input_shape()
        inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, *shape]},
                  {"name": "images", "datatype": "BYTES", "shape": [-1]}]
        outputs = [{"name": "logits", "datatype": "FP32", "shape": [-1, self.spec.num_classes]}]
        return inputs, outputs

    async def decode_tensors(self, request: Any) -> np.ndarray:
        only_inputs(request.inputs, {"input", "images"})
        if len(request.inputs) != 1:
            raise BadRequest("send exactly one of 'input' (FP32 tensor) or 'images' (BYTES, encoded image files)")
        limit = self.settings.max_images
        if "images" in request.inputs:
            t = request.inputs["images"]
            if t.datatype != "BYTES" or len(t.shape) != 1:
                raise BadRequest(f"input 'images': must be BYTES of shape [N], got {t.datatype} {t.shape}")
            if len(t.value) > limit:
                raise TooLarge(f"input 'images': {len(t.value)} images is over the cap of {limit} (MODEL_ZOO_MAX_IMAGES)")
            if not t.value:
                raise BadRequest("input 'images': no images")
            x = await self.prepare([(None, b) for b in t.value])  # pixel caps per image and per request
        else:
            x = float_input(request.inputs["input"], [-1, *self.spec.image.input_shape()])
            if len(x) == 0:
                raise BadRequest("input 'input': batch of 0 items")
            limits.items(len(x), "input 'input'", self.settings)
        return np.ascontiguousarray(x)

    async def predict_tensors(self, feeds: np.ndarray) -> Tensors:
        return {"logits": await self.logits(feeds)}

    def classification(self, output: str, value: np.ndarray, k: Any) -> list[list[dict[str, Any]]]:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise BadRequest(f"output {output!r}: 'classification' must be a positive integer, got {k!r}")
        return top_k(softmax(value), self.spec.labels, min(k, self.spec.num_classes))

    # ------------------------------------------------------------------ lifecycle

    def _single_threaded(self) -> None:
        """A model cheap enough to run on the event loop also runs on one ORT thread: handing so small a
        call to ORT's pool costs more than it saves, and the pool thread competes for the core the event
        loop needs (service/README.md, "Per-request overhead")."""
        session = self.session
        if session.runtime != "onnx" or session.provider != "CPUExecutionProvider" or self.settings.threads == 1:
            return
        self.session = load_session(self.path, self.spec, "onnx", self.settings.precision, threads=1)
        x = np.zeros((1, *self.spec.image.input_shape()), np.float32)
        for _ in range(8):
            self.logits_sync(x)
        logger.info("%s: cheap enough for the event loop; its session now runs on one thread", self.name)
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

        i, fastest = 0, {}  # batch size -> its fastest call, seconds
        while i < rounds or time.monotonic() - start < min_seconds:
            x = rng.standard_normal(((1, 2, 4, 8)[i % 4], *shape), dtype=np.float32)
            seconds = await asyncio.to_thread(timed, x)
            fastest[len(x)] = min(seconds, fastest.get(len(x), seconds))
            i += 1
        per_item = full_batch_seconds(fastest, self.settings.max_batch) / self.settings.max_batch
        budget = self.batcher.calibrate(per_item)
        if self.batcher.inline:
            await asyncio.to_thread(self._single_threaded)
        logger.info("%s: %.3f ms per image; batching up to %d images, latency budget %.0f ms, model calls %s",
                    self.name, per_item * 1e3, self.settings.max_batch, budget * 1e3,
                    "on the event loop (cheap)" if self.batcher.inline else "in a worker thread")
        for i in range(rounds):
            try:
                await self.logits(rng.standard_normal((1 + i % 4, *shape), dtype=np.float32))
            except (Overloaded, QueueFull, DeadlineExceeded):  # MODEL_ZOO_MAX_QUEUE*, DEFAULT_TIMEOUT_MS
                pass

    def close(self) -> None:
        """Unloaded or replaced, with no request in flight: stop the batcher and release the session.
        Breaks the model <-> batcher cycle so the model's memory returns by reference counting, not at
        the next full collection (rare under service/control/manager.py's ``settle_heap``)."""
        self.batcher.shutdown()
        self.session.close()
