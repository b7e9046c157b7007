"""The HTTP part's load generators: ``wrk`` (default) or ``zoo bench``, one level each, same record.

On 2 cores the generator shares the CPU with the server it measures, so what it spends is taken
from the server. ``wrk`` (C, epoll, one thread here) sends pre-formatted requests through
``loadgen.lua`` and spends a few percent of a core where ``zoo bench`` (Python, aiohttp) spends a
third to a half; each record says what its generator used (``client_cpu_pct``, from the kernel's
rusage of the wrk process). Both are closed loops: ``c`` connections, each sends its next request
when the answer to the last arrives. The bodies are ``zoo bench``'s (``clients.bench.build_bodies``:
generated PNGs of the model's size, or sine histories), so both generators send the same bytes.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.store import ROOT, BenchError

GENERATORS = ("wrk", "zoo")
LUA = Path(__file__).with_name("loadgen.lua")
TIMEOUT_S = 30  # per request: a slow answer is a measurement, not a socket error


def write_bodies(endpoint: str, images: int, out: Path, seed: int = 0) -> Path:
    """``zoo bench``'s request bodies as files plus a manifest ``CONTENT_TYPE<TAB>FILE`` for the Lua script."""
    from clients.bench import build_bodies

    manifest = out / "manifest.tsv"
    if manifest.is_file():  # encoded once per run: every server and level with these bodies reuses them
        return manifest
    args = argparse.Namespace(endpoint=endpoint, images_per_request=images, inputs=[], history_len=50, steps=10,
                              seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (body, headers) in enumerate(build_bodies(args)):
        path = out / f"body-{i}.bin"
        path.write_bytes(body)
        lines.append(f"{headers['Content-Type']}\t{path}")
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def wrk_binary() -> str:
    exe = shutil.which("wrk")
    if exe is None:
        raise BenchError("wrk is not installed: `make bench` installs it (apt-get install wrk), "
                         "or pass --generator zoo")
    return exe


def run_wrk(url: str, path: str, concurrency: int, duration: float, manifest: Path, items_per_request: int,
            token: str | None = None) -> dict[str, Any]:
    """One closed-loop wrk run; the record ``zoo bench`` writes per level (clients/bench.py) plus ``generator``."""
    secs = max(1, math.ceil(duration))  # wrk takes whole seconds
    cmd = [wrk_binary(), "--threads", "1", "--connections", str(concurrency), "--duration", f"{secs}s",
           "--timeout", f"{TIMEOUT_S}s", "--script", str(LUA), url.rstrip("/") + path, "--", str(manifest),
           f"Bearer {token}" if token else ""]
    t0, cpu0 = time.monotonic(), _children_cpu_s()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + TIMEOUT_S + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish: {' '.join(cmd)}") from None
    cpu = _children_cpu_s() - cpu0  # wrk is the only child reaped in between (servers live on)
    out, err = proc.stdout, proc.stderr
    line = next((ln for ln in out.splitlines() if ln.startswith('{"wrk"')), None)
    if proc.returncode != 0 or line is None:
        lines = (err or out).strip().splitlines()
        raise BenchError(f"wrk failed (exit {proc.returncode}) at {url}{path} c={concurrency}: "
                         f"{lines[-1] if lines else 'no output'}")
    s = json.loads(line)
    wall = s["duration_us"] / 1e6 or (time.monotonic() - t0)
    errors = {k: s[k] for k in ("status", "timeout", "connect", "read", "write") if s[k]}
    ok = max(0, s["requests"] - s["status"])  # wrk counts an answer >= 400 under "status"
    return {
        "concurrency": concurrency, "requests": s["requests"], "ok": ok,
        "errors": {("non-2xx" if k == "status" else k): v for k, v in errors.items()},
        "wall_s": round(wall, 3), "requests_per_s": round(ok / wall, 2), "items_per_s": round(ok * items_per_request / wall, 2),
        "p50_ms": s["p50_us"] / 1e3, "p90_ms": s["p90_us"] / 1e3, "p99_ms": s["p99_us"] / 1e3,
        "mean_ms": round(s["mean_us"] / 1e3, 3), "max_ms": s["max_us"] / 1e3,
        "client_cpu_s": round(cpu, 3), "client_cpu_pct": round(100.0 * cpu / wall, 1),
        "generator": "wrk",
    }


def drain(url: str, path: str, manifest: Path, timeout: float = 300.0) -> None:
    """Send one request and wait for its answer. wrk drops its connections with requests in flight when
    its time is up; a one-request-at-a-time server still computes those, so without this the next
    timed window would start behind the warm-up's leftovers (observed: 0 answers in 10 s)."""
    import httpx

    ctype, body_file = manifest.read_text().splitlines()[0].split("\t")
    try:
        httpx.post(url.rstrip("/") + path, content=Path(body_file).read_bytes(), headers={"Content-Type": ctype},
                   timeout=timeout)
    except httpx.TransportError as exc:
        raise BenchError(f"the server at {url} did not answer after the warm-up: {exc}") from None


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def zoo_bench(url: str, endpoint: str, concurrency: int, images: int, duration: float, out: Path,
              warmup_requests: int) -> dict[str, Any]:
    """One ``python -m clients bench`` run at one level; returns its level record (see clients/bench.py)."""
    cmd = [sys.executable, "-m", "clients", "bench", "--url", url, "--endpoint", endpoint, "--concurrency",
           str(concurrency), "--images-per-request", str(images), "--duration", f"{duration:g}",
           "--warmup", str(warmup_requests), "--json", str(out)]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=duration * 4 + 120)
    except subprocess.TimeoutExpired:
        raise BenchError(f"zoo bench did not finish: {' '.join(cmd[1:])}") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise BenchError(f"zoo bench failed at /{endpoint} c={concurrency}: {lines[-1] if lines else f'exit {proc.returncode}'}")
    return dict(json.loads(out.read_text())["levels"][0], generator="zoo")
