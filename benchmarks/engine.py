"""Part 1, the in-process engine: every model x runtime x batch size, no HTTP.

Runtimes on CPU: eager PyTorch (the checkpoint's module), TorchScript (``model.ts``), ONNX Runtime
fp32 (``model.onnx``) and int8 (``model.int8.onnx``). The last three are opened with the service's
own ``service.core.runtime.load_session``, so threads and session options are exactly what the service
uses; eager gets the same thread count. ``benchmarks/gpu.py`` feeds its CUDA sessions through the
same ``measure``/``engine_rows``.

Two kinds of rows:
- ``infer``: a ready float32 batch through the runtime (images: random ``(N, *input_shape)``;
  sine-rnn: N windows of 50 points with zero state, one call).
- ``pipeline``: what one request costs minus HTTP, with the service's code: image models decode N
  PNG files with ``service.core.preprocess.preprocess_many``, run the batch, then softmax + top-k
  (``service.core.served``); sine-rnn runs ``service.core.served.Forecaster.forecast`` (history 50, 10 steps),
  the body ``zoo bench`` sends to ``/forecast_sine``. This is the limit the service can approach.
"""

from __future__ import annotations

import copy
import io
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from service.config import Settings, worker_cores
from service.core.classifier import softmax, top_k
from service.core.forecaster import Forecaster
from service.core.interface import Loaded
from service.core.preprocess import preprocess_many
from service.core.runtime import ARTIFACTS, Session, io_names, load_session
from zoo.spec import Spec

BATCHES = (1, 8, 64)
PIPELINE_BATCHES = (1, 8, 32, 64)  # 32: the /classify_cifar10 request size of part 2
HISTORY_LEN, FORECAST_STEPS = 50, 10  # what `zoo bench` sends to /forecast_sine by default
CPU_RUNTIMES = ("eager", "torchscript", "onnx-fp32", "onnx-int8")


@dataclass
class Target:
    """One model to measure: its spec, its store directory (exported files) and the eager module."""

    name: str
    spec: Spec
    model_dir: Path
    module: nn.Module  # eval mode, on CPU


@dataclass
class Row:
    model: str
    runtime: str
    mode: str  # "infer" | "pipeline"
    batch: int  # items per call
    items_per_s: float
    p50_ms: float  # per call
    p90_ms: float
    calls: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Budget:
    """How long each point runs: at least ``point_s`` seconds and ``min_calls`` timed calls."""

    point_s: float = 1.5
    min_calls: int = 3
    warmup_calls: int = 2

    @classmethod
    def quick(cls) -> "Budget":
        return cls(point_s=0.1, min_calls=2, warmup_calls=1)


def measure(call: Callable[[], Any], batch: int, budget: Budget) -> tuple[float, float, float, int, float]:
    """Closed loop of ``call()``; returns (items/s, p50 ms, p90 ms, calls, seconds) after warm-up calls."""
    for _ in range(budget.warmup_calls):
        call()
    lat: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        call()
        now = time.perf_counter()
        lat.append(now - t0)
        if len(lat) >= budget.min_calls and now - start >= budget.point_s:
            break
    total = time.perf_counter() - start
    ms = np.asarray(lat) * 1000.0
    return batch * len(lat) / total, float(np.percentile(ms, 50)), float(np.percentile(ms, 90)), len(lat), total


def eager_session(module: nn.Module, spec: Spec, device: str = "cpu", half: bool = False) -> Session:
    """The eager module behind the ``Session`` interface (contract tensor names, numpy in and out)."""
    from export.artifacts import serving_module

    mod = copy.deepcopy(serving_module(module, spec)).to(device)  # a copy: .to()/.half() work in place
    mod = mod.half() if half else mod
    inputs, outputs = io_names(spec)
    dtype = torch.float16 if half else torch.float32

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n], dtype=np.float32)).to(device, dtype) for n in inputs]
        with torch.inference_mode():
            out = mod(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {n: t.float().cpu().numpy() for n, t in zip(outputs, out)}

    return Session("eager", "checkpoint", f"torch:{device}", inputs, outputs, run)


def cpu_sessions(target: Target, threads: int, runtimes: tuple[str, ...] = CPU_RUNTIMES) -> dict[str, Session | str]:
    """runtime -> Session, or the reason it is not available (a missing artifact is a note, not a crash)."""
    torch.set_num_threads(threads)
    out: dict[str, Session | str] = {}
    for rt in runtimes:
        if rt == "eager":
            out[rt] = eager_session(target.module, target.spec)
            continue
        kind, precision = ("torchscript", "fp32") if rt == "torchscript" else ("onnx", rt.split("-")[1])
        artifact = ARTIFACTS["torchscript" if kind == "torchscript" else precision]
        if not (target.model_dir / artifact).is_file():
            out[rt] = f"no {artifact} in {target.model_dir.name}"
            continue
        sess = load_session(target.model_dir, target.spec, kind, precision, threads)
        if sess.artifact != artifact:  # load_session falls back to fp32 with a warning; a row must be honest
            out[rt] = f"load_session picked {sess.artifact} instead of {artifact}"
            continue
        out[rt] = sess
    return out


def example_feeds(spec: Spec, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Model inputs by contract name: images (N, *input_shape) normal noise; RNN N sine windows + zero state."""
    if spec.task == "forecast":
        sq = spec.sequence
        t = np.arange(HISTORY_LEN, dtype=np.float32) * sq.dt
        x = np.sin(t[None, :] * rng.uniform(*sq.freq_range, (batch, 1)) + rng.uniform(0, 2 * math.pi, (batch, 1)))
        zeros = np.zeros((sq.num_layers, batch, sq.hidden_size), np.float32)
        return {"x": x[..., None].astype(np.float32), **{s: zeros for s in sq.state_names}}  # x (N, T, 1)
    return {"input": rng.standard_normal((batch, *spec.image.input_shape()), dtype=np.float32)}


def png_pool(spec: Spec, n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``n`` PNG files of the model's own size and colour mode, uniform random pixels (as `zoo bench` sends)."""
    rng = np.random.default_rng(seed)
    im = spec.image
    shape = (im.height, im.width) if im.color_mode == "L" else (im.height, im.width, 3)
    files = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), im.color_mode).save(buf, format="PNG")
        files.append((f"bench{i}.png", buf.getvalue()))
    return files


def pipeline_call(target: Target, session: Session, batch: int, settings: Settings) -> Callable[[], Any]:
    """One request's work with the service's code (see module docstring)."""
    spec = target.spec
    if spec.task == "forecast":
        loaded = Loaded(target.name, "bench", target.model_dir, spec, session)
        forecaster = Forecaster(loaded, settings)
        history = example_feeds(spec, 1, np.random.default_rng(0))["x"].reshape(-1).tolist()
        return lambda: forecaster.forecast(history, FORECAST_STEPS)
    files = png_pool(spec, batch, seed=batch)
    k = min(5, spec.num_classes)

    def call() -> list:
        x = preprocess_many(files, spec.image, settings.max_pixels)  # (N, *input_shape)
        return top_k(softmax(session.run({"input": x})["logits"]), spec.labels, k)

    return call


def engine_rows(target: Target, sessions: dict[str, Session | str], budget: Budget, settings: Settings,
                batches: tuple[int, ...] = BATCHES, pipeline_batches: tuple[int, ...] = PIPELINE_BATCHES,
                echo: Callable[[str], None] = print) -> tuple[list[Row], dict[str, str]]:
    """Measure every available runtime of ``target``; returns the rows and {runtime: why skipped}."""
    rows: list[Row] = []
    skipped = {rt: s for rt, s in sessions.items() if isinstance(s, str)}
    rng = np.random.default_rng(0)
    for rt, sess in sessions.items():
        if isinstance(sess, str):
            continue
        plan = [("infer", b) for b in batches]
        plan += [("pipeline", 1)] if target.spec.task == "forecast" else [("pipeline", b) for b in pipeline_batches]
        for mode, b in plan:
            if mode == "infer":
                feeds = example_feeds(target.spec, b, rng)
                call = (lambda s=sess, f=feeds: s.run(f))
            else:
                call = pipeline_call(target, sess, b, settings)
            ips, p50, p90, calls, secs = measure(call, b, budget)
            rows.append(Row(target.name, rt, mode, b, ips, p50, p90, calls, secs))
            echo(f"[engine] {target.name:<17} {rt:<12} {mode:<8} batch {b:>3}: {ips:10.1f} items/s, p50 {p50:8.3f} ms")
    return rows, skipped


def run_engine(targets: list[Target], budget: Budget, threads: int | None = None,
               echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Part 1 on CPU for every target: {"threads", "rows": [...], "skipped": {model: {runtime: why}}}."""
    threads = threads or worker_cores()
    settings = Settings(threads=threads)
    rows: list[Row] = []
    skipped: dict[str, dict[str, str]] = {}
    for target in targets:
        sessions = cpu_sessions(target, threads)
        r, s = engine_rows(target, sessions, budget, settings, echo=echo)
        rows += r
        if s:
            skipped[target.name] = s
    return {"threads": threads, "rows": [r.to_dict() for r in rows], "skipped": skipped}
