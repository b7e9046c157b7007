"""The forecaster behind the served-model interface (service/core/interface.py).

REST: ``{"history": [...], "steps": n}`` -> the step graph rolled out ``steps`` times, with a warning
when the history lies outside the band the model was trained on (service/core/band.py). OIP: the step
graph itself, ``x`` (N, T, 1), ``h`` [, ``c``] -> ``y``, ``h_out`` [, ``c_out``]; omitted states start
at zero. Validation uses the limits of the model's ``SequenceSpec``.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.config import Settings
from service.core import limits
from service.core.band import band_warning
from service.core.interface import Loaded, ServedModel, Tensors
from service.core.tensors import float_input, only_inputs
from service.errors import BadRequest, ServiceError


@dataclass
class Series:
    """A validated forecast request."""

    history: np.ndarray  # (T,) float32
    steps: int


class Forecaster(ServedModel):
    verb = "forecast"
    payload = "history"

    def __init__(self, loaded: Loaded, settings: Settings) -> None:
        super().__init__(loaded, settings)
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
        sess = self.session
        feeds = {"x": history.reshape(1, -1, 1), **self.zero_state(1)}  # x (1, T, 1)
        out = np.empty(steps, np.float32)
        for t in range(steps):
            res = sess.run(feeds)
            out[t] = res["y"][0, -1, 0]  # the prediction of the next value
            feeds = {"x": res["y"][:, -1:, :], **{s: res[f"{s}_out"] for s in self.seq.state_names}}
        return out

    def forecast(self, history: list[float], steps: int) -> list[float]:
        return [float(v) for v in self.rollout(self.validate(history, steps), steps)]

    def answer(self, series: Series) -> dict[str, Any]:
        """``{"forecast": [...]}`` plus ``"warning"`` when the history lies outside the trained band."""
        out: dict[str, Any] = {"forecast": [float(v) for v in self.rollout(series.history, series.steps)]}
        warning = band_warning(series.history, self.seq)
        if warning is not None:
            out["warning"] = warning
        return out

    # ------------------------------------------------------------------ REST: history -> forecast

    async def decode(self, payload: Any) -> Series:
        """A parsed body (``.history``, ``.steps``), or the ``ServiceError`` its parser raised."""
        if isinstance(payload, ServiceError):
            raise payload
        return Series(self.validate(payload.history, payload.steps), payload.steps)

    async def predict(self, item: Series) -> dict[str, Any]:
        return await asyncio.to_thread(self.answer, item)  # a rollout is `steps` sequential model calls

    def encode(self, item: Series, output: dict[str, Any]) -> dict[str, Any]:
        return output

    # ------------------------------------------------------------------ OIP: the step graph

    def tensor_metadata(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        sq = self.seq
        state = [sq.num_layers, -1, sq.hidden_size]  # (layers, N, hidden)
        inputs = [{"name": "x", "datatype": "FP32", "shape": [-1, -1, 1]},
                  *({"name": n, "datatype": "FP32", "shape": state} for n in sq.state_names)]
        outputs = [{"name": "y", "datatype": "FP32", "shape": [-1, -1, 1]},
                   *({"name": f"{n}_out", "datatype": "FP32", "shape": state} for n in sq.state_names)]
        return inputs, outputs

    async def decode_tensors(self, request: Any) -> dict[str, np.ndarray]:
        sq = self.seq
        only_inputs(request.inputs, {"x", *sq.state_names})
        if "x" not in request.inputs:
            raise BadRequest("input 'x' (FP32, shape [N, T, 1]) is required")
        x = float_input(request.inputs["x"], [-1, -1, 1])
        n, steps = x.shape[0], x.shape[1]
        if n == 0 or not 1 <= steps <= sq.max_history:
            raise BadRequest(f"input 'x': need N >= 1 and 1 <= T <= {sq.max_history}, got shape {list(x.shape)}")
        limits.series(n, steps, self.settings)
        feeds = {"x": x, **self.zero_state(n)}
        for s in sq.state_names:
            if s in request.inputs:
                feeds[s] = float_input(request.inputs[s], [sq.num_layers, n, sq.hidden_size])
        return feeds

    async def predict_tensors(self, feeds: dict[str, np.ndarray]) -> Tensors:
        return await asyncio.to_thread(self.session.run, feeds)

    # ------------------------------------------------------------------ lifecycle

    async def warmup(self, rounds: int, min_seconds: float) -> None:
        t = np.arange(max(self.seq.min_history, 20), dtype=np.float32) * self.seq.dt
        start = time.monotonic()
        i = 0
        while i < rounds or time.monotonic() - start < min_seconds:
            await asyncio.to_thread(self.rollout, np.sin(t), 8)
            i += 1

    def close(self) -> None:
        """Unloaded or replaced, with no request in flight: release the session."""
        self.session.close()
