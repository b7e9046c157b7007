"""Parts 2 and 3: the service and its peers over HTTP, driven by the same load generator.

The servers (``SERVERS``): ``service`` (``bentoml serve`` with its defaults), ``naive-ort`` (FastAPI,
one request at a time, the service's ONNX file and preprocessing: benchmarks/baselines/naive_ort_server.py),
``naive`` (FastAPI + eager PyTorch: naive_server.py), and at /classify_cifar10 c=32 ``service-int8``
(the service with ``MODEL_ZOO_PRECISION=int8``). naive-ort serves the classifiers only.

Fairness rules:
- one server runs at a time: start it, measure, stop it, so an idle one steals no CPU;
- the order alternates per level (A B C | C B A | ...), so a slow drift of the shared machine hits all
  and the server measured last in one level is measured first in the next without a restart;
- every point is preceded by an untimed warm-up run at the same concurrency;
- the load generator (``wrk`` by default, benchmarks/loadgen.py) reports its own CPU use; the server's
  CPU use over the same window is read from its process tree, and for the service the mean items
  per model call from its ``/metrics``.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import httpx

from benchmarks.loadgen import drain, run_wrk, write_bodies, zoo_bench
from benchmarks.servers import Profiler, Server, start_naive, start_naive_ort, start_service
from benchmarks.store import StoredModel

MODEL_OF = {"classify_digit": "mnist-mlp", "classify_cifar10": "cifar10-resnet18", "forecast_sine": "sine-rnn"}
SERVERS = ("service", "naive-ort", "naive")
INT8_ENV = {"MODEL_ZOO_PRECISION": "int8"}


@dataclass(frozen=True)
class Level:
    endpoint: str
    concurrency: int
    images: int = 1  # images per request (classify endpoints)

    @property
    def key(self) -> str:
        what = f"{self.images} img/req" if self.endpoint != "forecast_sine" else "history 50, 10 steps"
        return f"/{self.endpoint} ({what}) c={self.concurrency}"

    def servers(self) -> tuple[str, ...]:
        """Who is measured at this level: naive-ort serves classifiers; int8 where its target is."""
        kinds = SERVERS if self.endpoint != "forecast_sine" else ("service", "naive")
        if (self.endpoint, self.concurrency, self.images) == ("classify_cifar10", 32, 1):
            kinds += ("service-int8",)
        return kinds


# The workload, in the order it is run.
LEVELS = (
    Level("classify_digit", 1), Level("classify_digit", 8), Level("classify_digit", 32),
    Level("classify_cifar10", 1, 32), Level("classify_cifar10", 4, 32),
    Level("classify_cifar10", 32, 1),
    Level("forecast_sine", 8),
)


def load(server: Server, level: Level, duration: float, work: Path, tag: str, generator: str,
         warmup_requests: int = 0) -> dict[str, Any]:
    """One timed closed-loop run against ``server`` at ``level``; the record of benchmarks/loadgen.py."""
    if generator == "zoo":
        return zoo_bench(server.url, level.endpoint, level.concurrency, level.images, duration,
                         work / f"{tag}.json", warmup_requests)
    items = 1 if level.endpoint == "forecast_sine" else level.images
    manifest = write_bodies(level.endpoint, level.images, work / f"bodies-{level.endpoint}-k{level.images}")
    rec = run_wrk(server.url, f"/{level.endpoint}", level.concurrency, duration, manifest, items)
    if warmup_requests:  # a warm-up: its leftovers must not run into the timed window that follows
        drain(server.url, f"/{level.endpoint}", manifest)
    return rec


def batch_stats(url: str, model: str) -> tuple[float, float]:
    """(sum of items, model calls) so far from the service's ``model_zoo_batch_size`` histogram."""
    try:
        text = httpx.get(url + "/metrics", timeout=5).text
    except httpx.TransportError:
        return 0.0, 0.0
    found = {}
    for suffix in ("sum", "count"):
        m = re.search(rf'^model_zoo_batch_size_{suffix}\{{[^}}]*model="{re.escape(model)}"[^}}]*\}} (\S+)', text, re.M)
        found[suffix] = float(m.group(1)) if m else 0.0
    return found["sum"], found["count"]


def measure(server: Server, level: Level, duration: float, warm_s: float, work: Path,
            profiler_out: Path | None = None, generator: str = "wrk") -> dict[str, Any]:
    """Warm up, then one timed run; the record adds server CPU and (service) mean items per model call."""
    tag = f"{server.kind}-{level.endpoint}-k{level.images}-c{level.concurrency}"
    load(server, level, warm_s, work, f"{tag}.warmup", generator, warmup_requests=2)
    model = MODEL_OF[level.endpoint]
    service = server.kind.startswith("service")
    items0, calls0 = batch_stats(server.url, model) if service else (0.0, 0.0)
    cpu0 = server.cpu_seconds()
    profile_error = None
    if profiler_out is not None:
        with Profiler(server, duration, profiler_out) as prof:
            time.sleep(0.3)  # py-spy attaches before the load starts
            rec = load(server, level, duration, work, f"{tag}.profiled", generator)
        profile_error = prof.error
    else:
        rec = load(server, level, duration, work, tag, generator)
    cpu = server.cpu_seconds() - cpu0
    rec = dict(rec, server=server.kind, level=asdict(level), key=level.key,
               server_cpu_pct=round(100.0 * cpu / rec["wall_s"], 1) if rec["wall_s"] else None)
    if service:
        items1, calls1 = batch_stats(server.url, model)
        rec["mean_batch"] = round((items1 - items0) / (calls1 - calls0), 2) if calls1 > calls0 else None
    if profile_error is not None:
        rec["profile_error"] = profile_error
    return rec


def run_http(models: list[StoredModel], home: Path, work: Path, levels: tuple[Level, ...], duration: float,
             warm_s: float, echo: Callable[[str], None] = print, generator: str = "wrk") -> dict[str, Any]:
    """Every level on its servers (order reversed every other level, one server up at a time)."""
    work.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []
    current: Server | None = None
    try:
        order: tuple[str, ...] = ()
        for level in levels:
            kinds = level.servers()
            # start with the server already up when it is measured here; alternate the rest
            order = tuple(sorted(kinds, key=lambda k: (order[::-1] + kinds).index(k)))
            for kind in order:
                if current is None or current.kind != kind:
                    if current is not None:
                        current.stop()
                    current = start_server(kind, models, home, work, len(starts))
                    starts.append({"server": kind, "ready_s": round(current.start_s, 1), "command": current.command})
                    echo(f"[http] {kind} ready in {current.start_s:.1f} s at {current.url}")
                rec = measure(current, level, duration, warm_s, work, generator=generator)
                records.append(rec)
                echo(f"[http] {kind:<12} {level.key:<48} {rec['requests_per_s']:>8} req/s {rec['items_per_s']:>8} items/s "
                     f"p50 {rec['p50_ms']} p99 {rec['p99_ms']} ms; errors {rec['errors'] or 0}; "
                     f"CPU client {rec['client_cpu_pct']}% server {rec['server_cpu_pct']}%")
    finally:
        if current is not None:
            current.stop()
    return {"records": records, "starts": starts, "duration_s": duration, "warmup_s": warm_s, "generator": generator}


def start_server(kind: str, models: list[StoredModel], home: Path, work: Path, n: int) -> Server:
    log = work / f"{kind}-{n}.log"
    if kind == "service":
        return start_service(home, log)
    if kind == "service-int8":
        server = start_service(home, log, env_extra=INT8_ENV)
        server.kind = kind
        server.command = " ".join(f"{k}={v}" for k, v in INT8_ENV.items()) + " " + server.command
        return server
    return start_naive_ort(models, log) if kind == "naive-ort" else start_naive(models, log)


def profile_level(home: Path, work: Path, level: Level, duration: float, warm_s: float,
                  echo: Callable[[str], None] = print, generator: str = "wrk") -> dict[str, Any]:
    """The service alone at ``level`` with py-spy attached; returns the record with ``profile`` (raw stacks path)."""
    server = start_service(home, work / f"profile-{level.endpoint}-c{level.concurrency}.log")
    out = work / f"profile-{level.endpoint}-k{level.images}-c{level.concurrency}.txt"
    try:
        rec = measure(server, level, duration, warm_s, work, profiler_out=out, generator=generator)
    finally:
        server.stop()
    rec["profile"] = str(out) if out.is_file() else None
    echo(f"[profile] {level.key}: {rec['requests_per_s']} req/s while profiled; stacks in {out}")
    return rec
