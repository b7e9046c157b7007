"""Parts 2 and 3: the service and the naive server over HTTP, driven by the same ``zoo bench``.

Fairness rules (issue 8):
- one server runs at a time: start it, measure, stop it, so the idle one steals no CPU;
- the servers alternate within each level, in ABBA order (service, naive | naive, service | ...), so
  a slow drift of the shared machine hits both and each server starts only about once per two levels;
- every point is preceded by an untimed warm-up run at the same concurrency;
- the load generator (``python -m clients bench``: one connection per simulated user, pre-encoded
  bodies) reports its own CPU use; the server's CPU use over the same window is read from its
  process tree, and for the service the mean items per model call from its ``/metrics``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import httpx

from benchmarks.servers import Profiler, Server, start_naive, start_service
from benchmarks.store import ROOT, BenchError, StoredModel

MODEL_OF = {"classify_digit": "mnist-mlp", "classify_cifar10": "cifar10-resnet18", "forecast_sine": "sine-rnn"}
SERVERS = ("service", "naive")


@dataclass(frozen=True)
class Level:
    endpoint: str
    concurrency: int
    images: int = 1  # images per request (classify endpoints)

    @property
    def key(self) -> str:
        what = f"{self.images} img/req" if self.endpoint != "forecast_sine" else "history 50, 10 steps"
        return f"/{self.endpoint} ({what}) c={self.concurrency}"

    def bench_args(self) -> list[str]:
        return ["--endpoint", self.endpoint, "--concurrency", str(self.concurrency),
                "--images-per-request", str(self.images)]


# The workload, in the order it is run.
LEVELS = (
    Level("classify_digit", 1), Level("classify_digit", 8), Level("classify_digit", 32),
    Level("classify_cifar10", 1, 32), Level("classify_cifar10", 4, 32),
    Level("classify_cifar10", 32, 1),
    Level("forecast_sine", 8),
)


def zoo_bench(url: str, level: Level, duration: float, out: Path, warmup_requests: int) -> dict[str, Any]:
    """One ``python -m clients bench`` run at one level; returns its level record (see clients/bench.py)."""
    cmd = [sys.executable, "-m", "clients", "bench", "--url", url, *level.bench_args(),
           "--duration", f"{duration:g}", "--warmup", str(warmup_requests), "--json", str(out)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=duration * 4 + 120)
    except subprocess.TimeoutExpired:
        raise BenchError(f"zoo bench did not finish: {' '.join(cmd[1:])}") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise BenchError(f"zoo bench failed at {level.key}: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return json.loads(out.read_text())["levels"][0]


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
            profiler_out: Path | None = None) -> dict[str, Any]:
    """Warm up, then one timed run; the record adds server CPU and (service) mean items per model call."""
    tag = f"{server.kind}-{level.endpoint}-k{level.images}-c{level.concurrency}"
    zoo_bench(server.url, level, warm_s, work / f"{tag}.warmup.json", warmup_requests=2)
    model = MODEL_OF[level.endpoint]
    items0, calls0 = batch_stats(server.url, model) if server.kind == "service" else (0.0, 0.0)
    cpu0 = server.cpu_seconds()
    profile_error = None
    if profiler_out is not None:
        with Profiler(server, duration, profiler_out) as prof:
            time.sleep(0.3)  # py-spy attaches before the load starts
            rec = zoo_bench(server.url, level, duration, work / f"{tag}.profiled.json", warmup_requests=0)
        profile_error = prof.error
    else:
        rec = zoo_bench(server.url, level, duration, work / f"{tag}.json", warmup_requests=0)
    cpu = server.cpu_seconds() - cpu0
    rec = dict(rec, server=server.kind, level=asdict(level), key=level.key,
               server_cpu_pct=round(100.0 * cpu / rec["wall_s"], 1) if rec["wall_s"] else None)
    if server.kind == "service":
        items1, calls1 = batch_stats(server.url, model)
        rec["mean_batch"] = round((items1 - items0) / (calls1 - calls0), 2) if calls1 > calls0 else None
    if profile_error is not None:
        rec["profile_error"] = profile_error
    return rec


def run_http(models: list[StoredModel], home: Path, work: Path, levels: tuple[Level, ...], duration: float,
             warm_s: float, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Every level on both servers (ABBA order, one server up at a time); returns records and start-up info."""
    work.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []
    current: Server | None = None
    try:
        for i, level in enumerate(levels):
            for kind in (SERVERS if i % 2 == 0 else SERVERS[::-1]):
                if current is None or current.kind != kind:
                    if current is not None:
                        current.stop()
                    current = start_server(kind, models, home, work, len(starts))
                    starts.append({"server": kind, "ready_s": round(current.start_s, 1), "command": current.command})
                    echo(f"[http] {kind} ready in {current.start_s:.1f} s at {current.url}")
                rec = measure(current, level, duration, warm_s, work)
                records.append(rec)
                echo(f"[http] {kind:<7} {level.key:<48} {rec['requests_per_s']:>8} req/s {rec['items_per_s']:>8} items/s "
                     f"p50 {rec['p50_ms']} p99 {rec['p99_ms']} ms; errors {rec['errors'] or 0}; "
                     f"CPU client {rec['client_cpu_pct']}% server {rec['server_cpu_pct']}%")
    finally:
        if current is not None:
            current.stop()
    return {"records": records, "starts": starts, "duration_s": duration, "warmup_s": warm_s}


def start_server(kind: str, models: list[StoredModel], home: Path, work: Path, n: int) -> Server:
    log = work / f"{kind}-{n}.log"
    return start_service(home, log) if kind == "service" else start_naive(models, log)


def profile_level(home: Path, work: Path, level: Level, duration: float, warm_s: float,
                  echo: Callable[[str], None] = print) -> dict[str, Any]:
    """The service alone at ``level`` with py-spy attached; returns the record with ``profile`` (raw stacks path)."""
    server = start_service(home, work / f"profile-{level.endpoint}-c{level.concurrency}.log")
    out = work / f"profile-{level.endpoint}-k{level.images}-c{level.concurrency}.txt"
    try:
        rec = measure(server, level, duration, warm_s, work, profiler_out=out)
    finally:
        server.stop()
    rec["profile"] = str(out) if out.is_file() else None
    echo(f"[profile] {level.key}: {rec['requests_per_s']} req/s while profiled; stacks in {out}")
    return rec
