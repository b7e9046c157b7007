"""Per-model request statistics: Prometheus series, and Triton's statistics extension read from them.

Every number lives in one place: the Prometheus series below, created with ``prometheus_client`` (what
``bentoml.metrics`` hands out, and what BentoML 1.4.40 deprecates it for) in a worker, so they land in
BentoML's multiprocess registry (each worker writes its own memory-mapped file in
``PROMETHEUS_MULTIPROC_DIR``; ``/metrics`` merges them). Triton's statistics (``model_statistics``)
are read back from the same files, merged over every worker (and over workers that were replaced:
the counts are cumulative since the server started, as Triton's are). So the hot path adds no file
writes and no state of its own: a request's phases (service/core/timing.py) become histogram
observations on children looked up once per model, and each model call becomes one increment per
compute phase of its batch size.

Series (``model``: a served model's name; ``batch_size``: 1..``MODEL_ZOO_MAX_BATCH``; ``reason``: an
error class of service/errors.py, snake_case; ``phase``: input, infer, output; ``outcome``: success, failure):

    model_zoo_request_preprocess_seconds{model}      decode (histogram, per successful request)
    model_zoo_request_queue_seconds{model}           queue wait before the request's batch started
    model_zoo_request_inference_seconds{model}       the model call(s) the request rode in
    model_zoo_request_postprocess_seconds{model}     encode
    model_zoo_request_batch_size{model}              items in the model call the request rode in
    model_zoo_request_seconds{model,outcome}         whole request, success or failure
    model_zoo_request_failures_total{model,reason}   refused, shed, timed out ... by reason
    model_zoo_batch_executions_total{model,batch_size}               model calls of each size
    model_zoo_batch_compute_seconds_total{model,batch_size,phase}    their time per phase
    model_zoo_last_inference_timestamp_seconds{model}                (the largest over workers)
    model_zoo_model_load_seconds{model}              load + warm-up, per worker (histogram)

``model_statistics`` is the function both protocols answer with (OIP REST here, gRPC's
``ModelStatistics`` from the same dicts: the field names are the proto's).
"""

from __future__ import annotations

import functools
import os
import re
import time
from collections import defaultdict
from typing import Any, Iterable

from service.core.timing import RequestTiming

SECONDS = 1e-9  # per ns
# Request phases, seconds: 10 us .. 10 s (an MLP's decode .. a ResNet batch on CPU)
PHASE_BUCKETS = (1e-5, 2.5e-5, 5e-5, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = tuple(float(2**i) for i in range(0, 13))  # items per model call
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
PHASES = ("input", "infer", "output")


@functools.cache
def _metrics() -> dict[str, Any]:
    """The series, created once per process (after BentoML set the multiprocess directory)."""
    import prometheus_client as m  # imported late: BentoML sets PROMETHEUS_MULTIPROC_DIR as a worker starts

    def hist(name: str, doc: str, buckets: tuple[float, ...] = PHASE_BUCKETS, labels: tuple[str, ...] = ("model",)) -> Any:
        return m.Histogram(name=name, documentation=doc, labelnames=list(labels), buckets=buckets)

    return {
        "decode": hist("model_zoo_request_preprocess_seconds", "Decoding a request (body parsed, images decoded), seconds"),
        "queue": hist("model_zoo_request_queue_seconds", "Wait in the adaptive batcher until the request's batch started, seconds"),
        "infer": hist("model_zoo_request_inference_seconds", "The model call(s) a request rode in, seconds"),
        "encode": hist("model_zoo_request_postprocess_seconds", "Encoding a request's answer, seconds"),
        "batch": hist("model_zoo_request_batch_size", "Items in the model call each request rode in", BATCH_BUCKETS),
        "total": hist("model_zoo_request_seconds", "Whole inference request by outcome (success, failure), seconds",
                      labels=("model", "outcome")),
        "failures": m.Counter(name="model_zoo_request_failures", labelnames=["model", "reason"],
                              documentation="Inference requests refused, shed or timed out, by reason"),
        "executions": m.Counter(name="model_zoo_batch_executions", labelnames=["model", "batch_size"],
                                documentation="Model calls (executions) by batch size"),
        "compute": m.Counter(name="model_zoo_batch_compute_seconds", labelnames=["model", "batch_size", "phase"],
                             documentation="Time in model calls by batch size and phase (input, infer, output), seconds"),
        "last": m.Gauge(name="model_zoo_last_inference_timestamp_seconds", labelnames=["model"],
                        documentation="Unix time of the model's last call", multiprocess_mode="max"),
        "load": hist("model_zoo_model_load_seconds", "Loading and warming up a model in one worker, seconds", LOAD_BUCKETS),
    }


class _ModelSeries:
    """One model's labelled children, looked up once (a ``labels()`` call takes a lock and a dict lookup)."""

    def __init__(self, model: str) -> None:
        m = _metrics()
        self.model = model
        self.decode, self.queue = m["decode"].labels(model), m["queue"].labels(model)
        self.infer, self.encode = m["infer"].labels(model), m["encode"].labels(model)
        self.batch, self.success = m["batch"].labels(model), m["total"].labels(model, "success")
        self.failure = m["total"].labels(model, "failure")
        self.last = m["last"].labels(model)
        self.sizes: dict[int, tuple[Any, Any, Any, Any]] = {}
        self.reasons: dict[str, Any] = {}

    def size(self, n: int) -> tuple[Any, Any, Any, Any]:
        children = self.sizes.get(n)
        if children is None:
            m, size = _metrics(), str(n)
            children = self.sizes[n] = (m["executions"].labels(self.model, size),
                                        *(m["compute"].labels(self.model, size, p) for p in PHASES))
        return children


_SERIES: dict[str, _ModelSeries] = {}  # served model names only: a name gets here after routing found it


def _series(model: str) -> _ModelSeries:
    s = _SERIES.get(model)
    if s is None:
        s = _SERIES[model] = _ModelSeries(model)
    return s


# ---------------------------------------------------------------------------- recording (hot path)

def executed(model: str, batch: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
    """One model call of ``batch`` items (the batcher's, or an unbatched model's request)."""
    s = _series(model)
    count, c_input, c_infer, c_output = s.size(batch)
    count.inc()
    c_input.inc(input_ns * SECONDS)
    c_infer.inc(infer_ns * SECONDS)
    c_output.inc(output_ns * SECONDS)
    s.last.set(time.time())


def succeeded(model: str, t: RequestTiming) -> None:
    """A request answered 200: its phases into the histograms."""
    s = _series(model)
    if not t.batched:  # the model has no batcher: the request was one execution of its own rows
        executed(model, t.rows, 0, t.infer_ns, 0)
    s.decode.observe(t.decode_ns * SECONDS)
    s.queue.observe(t.queue_ns * SECONDS)
    s.infer.observe(t.infer_ns * SECONDS)
    s.encode.observe(t.encode_ns * SECONDS)
    s.batch.observe(t.batch)
    s.success.observe(t.total_ns() * SECONDS)


def failed(model: str, t: RequestTiming, reason: str) -> None:
    """A request for a served model that got an error answer (``reason``: from ``reason_of``)."""
    s = _series(model)
    child = s.reasons.get(reason)
    if child is None:
        child = s.reasons[reason] = _metrics()["failures"].labels(model, reason)
    child.inc()
    s.failure.observe(t.total_ns() * SECONDS)


def loaded(model: str, seconds: float) -> None:
    _metrics()["load"].labels(model).observe(seconds)


@functools.cache
def reason_of(kind: type) -> str:
    """An exception class -> its ``reason`` label: ``Overloaded`` -> ``overloaded``, ``TooLarge`` ->
    ``too_large`` (bounded: the classes of the code base)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", kind.__name__).lower()


# ---------------------------------------------------------------------------- reading (Triton's extension)

def _collect() -> Iterable[Any]:
    """Every metric family of this server: merged from every worker's files in multiprocess mode."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return REGISTRY.collect()  # a single process (a test calling the service in-process)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    return registry.collect()


def _read() -> dict[str, dict[str, Any]]:
    """model -> its merged numbers."""
    out: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(float))
    sums = {"model_zoo_request_preprocess_seconds": "compute_input", "model_zoo_request_queue_seconds": "queue",
            "model_zoo_request_inference_seconds": "compute_infer", "model_zoo_request_postprocess_seconds": "compute_output"}
    for family in _collect():
        if not family.name.startswith("model_zoo_"):
            continue
        for sample in family.samples:
            labels, name, value = sample.labels, sample.name, sample.value
            model = labels.get("model")
            if model is None:
                continue
            numbers = out[model]
            base, _, part = name.rpartition("_")
            if base in sums and part in ("count", "sum"):
                numbers[(sums[base], part)] += value
            elif base == "model_zoo_request_seconds" and part in ("count", "sum"):
                numbers[("success" if labels.get("outcome") == "success" else "fail", part)] += value
            elif name == "model_zoo_batch_executions_total":
                numbers[("executions", int(labels["batch_size"]))] += value
            elif name == "model_zoo_batch_compute_seconds_total":
                numbers[(labels["phase"], int(labels["batch_size"]))] += value
            elif name == "model_zoo_last_inference_timestamp_seconds":
                numbers["last"] = max(numbers["last"], value)
    return out


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(round(count)), "ns": int(round(seconds * 1e9))}


def model_statistics(models: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """Triton's ``model_stats`` entries for ``(name, version)`` pairs, summed over every worker.

    ``inference_count`` counts items in model calls made for requests, ``execution_count`` the model
    calls (warm-up calls are not counted); a model that does not batch makes one call per request.
    """
    numbers = _read()
    entries = []
    for name, version in models:
        n = numbers.get(name, {})
        sizes = sorted(k[1] for k in n if isinstance(k, tuple) and k[0] == "executions")
        batch_stats = [{"batch_size": size,
                        **{f"compute_{phase}": _duration(n[("executions", size)], n.get((phase, size), 0.0))
                           for phase in PHASES}} for size in sizes]
        stats = {key: _duration(n.get((key, "count"), 0.0), n.get((key, "sum"), 0.0))
                 for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")}
        stats["cache_hit"] = stats["cache_miss"] = {"count": 0, "ns": 0}
        entries.append({
            "name": name, "version": version,
            "last_inference": int(n.get("last", 0.0) * 1000),  # ms since the epoch, as Triton
            "inference_count": int(sum(size * n[("executions", size)] for size in sizes)),
            "execution_count": int(sum(n[("executions", size)] for size in sizes)),
            "inference_stats": stats, "batch_stats": batch_stats, "memory_usage": [],
        })
    return entries
