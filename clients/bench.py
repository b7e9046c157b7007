"""``zoo bench``: a closed-loop load generator for the benchmark harness.

Each concurrency level runs ``c`` simulated users; each user has its own
``aiohttp.ClientSession`` holding one connection, sends a pre-encoded body, waits for
the answer and sends the next (closed loop), until ``--requests`` have been sent
across users or ``--duration`` seconds have passed. Bodies are encoded once before
timing starts, so the client spends its CPU on HTTP, not on PNG encoding; the
client's own CPU time is reported to show whether the generator is the bottleneck
(if it nears 100 % of a core, use ``--processes N``: users are split over N
processes that start together).

No retries here: a 503 is a measurement, counted under ``errors``.

Why aiohttp for the timed loop (httpx elsewhere): on a 2-core machine the generator shares the CPU
with the server it measures, so its cost per request is taken from the server. aiohttp parses
responses in C (llhttp); measured against /classify_digit at 32 users it needed about a third of
the client CPU per request that httpx.AsyncClient did (0.20-0.25 ms vs ~0.77 ms; client CPU % and
requests/s of both servers, python -m benchmarks.run --parts http --levels classify_digit:32).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import aiohttp
import httpx
import numpy as np

from zoo.families import FAMILIES
from clients.discover import find_images
from clients.forecast import read_history_csv
from clients.media import to_upload
from clients.transport import base_headers, check, transport_error

ENDPOINTS = tuple(f.route for f in FAMILIES.values())  # the family routes (zoo/families.py)
FORECAST_ENDPOINT = next(f.route for f in FAMILIES.values() if f.decoder == "history")
# Generated inputs match what each model takes (H, W, PIL mode), so preprocessing cost is realistic.
_GENERATED = {"classify_digit": (28, 28, "L"), "classify_cifar10": (32, 32, "RGB"), "classify_image": (224, 224, "RGB")}
BODY_POOL = 8  # distinct request bodies cycled through, so no single body is special


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoint", choices=ENDPOINTS, required=True)
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated levels of simultaneous users (default 1,8,32)")
    p.add_argument("--requests", type=int, default=200, help="requests per level (default 200)")
    p.add_argument("--duration", type=float, help="seconds per level (instead of --requests)")
    p.add_argument("--images-per-request", type=int, default=1, help="images per classify request (batch mode)")
    p.add_argument("--inputs", nargs="*", default=[], metavar="PATH",
                   help="image files/folders (or one CSV history for forecast_sine); default: generated inputs")
    p.add_argument("--history-len", type=int, default=50, help="generated forecast history length")
    p.add_argument("--steps", type=int, default=10, help="forecast steps per request")
    p.add_argument("--warmup", type=int, default=5, help="untimed requests before the first level")
    p.add_argument("--processes", type=int, default=1, help="load-generator processes (default 1)")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--seed", type=int, default=0)


def _generated_image(rng: np.random.Generator, endpoint: str) -> bytes:
    from PIL import Image

    h, w, mode = _GENERATED[endpoint]
    shape = (h, w) if mode == "L" else (h, w, 3)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode).save(buf, format="PNG")
    return buf.getvalue()


def build_bodies(args: argparse.Namespace) -> list[tuple[bytes, dict[str, str]]]:
    """BODY_POOL encoded request bodies with their Content-Type headers."""
    rng = np.random.default_rng(args.seed)
    bodies = []
    if args.endpoint == FORECAST_ENDPOINT:
        if args.inputs:
            history = read_history_csv(args.inputs[0])
        for i in range(BODY_POOL):
            if not args.inputs:  # a sine of the kind the default recipe trains on: 2.04 rad/unit +-0.25%, dt 0.1
                t = np.arange(args.history_len) * 0.1
                history = (np.sin(t * rng.uniform(2.035, 2.045) + rng.uniform(0, 2 * math.pi))).tolist()
            content = json.dumps({"history": history, "steps": args.steps}).encode()
            bodies.append((content, {"Content-Type": "application/json"}))
        return bodies
    k = args.images_per_request
    if k < 1:
        raise ValueError("--images-per-request must be at least 1")
    if args.inputs:
        uploads = [to_upload(f.path) for f in find_images(args.inputs).images]
        if not uploads:
            raise ValueError(f"no images found under {' '.join(args.inputs)}")
    else:
        uploads = [to_upload(_generated_image(rng, args.endpoint), i) for i in range(BODY_POOL * k)]
    for i in range(BODY_POOL):
        files = [uploads[(i * k + j) % len(uploads)].part() for j in range(k)]
        request = httpx.Request("POST", "http://bench/", files=files)  # httpx does the multipart encoding, once
        bodies.append((request.read(), {"Content-Type": request.headers["Content-Type"]}))
    return bodies


async def _users(url: str, path: str, bodies, users: int, requests: int | None, duration: float | None,
                 timeout: float, token: str | None, start_at: float) -> dict[str, Any]:
    """Run ``users`` closed-loop users; raw latencies (s) of 2xx answers and counts by status."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    issued = 0
    headers = base_headers(token)

    # Sessions are made before the clock starts (building one costs client CPU that would otherwise
    # count against the first requests of every user); one connection each, kept alive.
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    clients = [aiohttp.ClientSession(base_url=url, timeout=client_timeout, headers=headers,
                                     connector=aiohttp.TCPConnector(limit=1)) for _ in range(users)]

    async def user(n: int) -> None:
        nonlocal issued
        client = clients[n]
        i = n
        while True:
            if duration is not None:
                if time.perf_counter() >= deadline:
                    return
            elif issued >= requests:
                return
            issued += 1
            content, hdrs = bodies[i % len(bodies)]
            i += 1
            t0 = time.perf_counter()
            try:
                async with client.post(path, data=content, headers=hdrs) as r:
                    await r.read()
                    key = str(r.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                key = type(exc).__name__
                await asyncio.sleep(0.01)  # a refused connection would otherwise spin
            if key.startswith("2"):
                latencies.append(time.perf_counter() - t0)
            statuses[key] = statuses.get(key, 0) + 1

    await asyncio.sleep(max(0.0, start_at - time.time()))  # processes start together
    cpu0, wall0 = time.process_time(), time.perf_counter()
    deadline = wall0 + (duration or 0.0)
    try:
        await asyncio.gather(*(user(n) for n in range(users)))
    finally:
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        await asyncio.gather(*(c.close() for c in clients))
    return {"latencies": latencies, "statuses": statuses, "wall": wall, "cpu": cpu}


def _worker(kwargs: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_users(**kwargs))


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_level(args, bodies, concurrency: int, pool: ProcessPoolExecutor | None) -> dict[str, Any]:
    path = f"/{args.endpoint}"
    common = dict(url=args.url, path=path, bodies=bodies, duration=args.duration, timeout=args.timeout,
                  token=args.token, start_at=time.time() + (0.5 if pool else 0.0))
    procs = max(1, min(args.processes, concurrency))
    users, reqs = _split(concurrency, procs), _split(args.requests, procs)
    jobs = [dict(common, users=u, requests=None if args.duration else r) for u, r in zip(users, reqs) if u]
    raws = list(pool.map(_worker, jobs)) if pool and len(jobs) > 1 else [_worker(j) for j in jobs]
    lat = np.array([x for raw in raws for x in raw["latencies"]]) * 1000.0  # ms
    statuses: dict[str, int] = {}
    for raw in raws:
        for k, v in raw["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    wall = max(raw["wall"] for raw in raws)
    cpu = sum(raw["cpu"] for raw in raws)
    ok = int(lat.size)
    pct = (lambda q: round(float(np.percentile(lat, q)), 3)) if ok else (lambda q: None)
    k = 1 if args.endpoint == FORECAST_ENDPOINT else args.images_per_request
    return {
        "concurrency": concurrency, "requests": sum(statuses.values()), "ok": ok,
        "errors": {s: n for s, n in sorted(statuses.items()) if not s.startswith("2")},
        "wall_s": round(wall, 3), "requests_per_s": round(ok / wall, 2) if wall else None,
        "items_per_s": round(ok * k / wall, 2) if wall else None,
        "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
        "mean_ms": round(float(lat.mean()), 3) if ok else None, "max_ms": round(float(lat.max()), 3) if ok else None,
        "client_cpu_s": round(cpu, 3), "client_cpu_pct": round(100.0 * cpu / wall, 1) if wall else None,
    }


def markdown_table(result: dict[str, Any]) -> str:
    head = ("| concurrency | requests | ok | errors | req/s | items/s | p50 ms | p90 ms | p99 ms | client CPU % |\n"
            "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for lv in result["levels"]:
        errs = ", ".join(f"{k}: {v}" for k, v in lv["errors"].items()) or "0"
        rows.append(f"| {lv['concurrency']} | {lv['requests']} | {lv['ok']} | {errs} | {lv['requests_per_s']} | "
                    f"{lv['items_per_s']} | {lv['p50_ms']} | {lv['p90_ms']} | {lv['p99_ms']} | {lv['client_cpu_pct']} |")
    return "\n".join([head, *rows])


def _warmup(args, bodies) -> None:
    """A few untimed requests; the first failure is fatal with the server's message."""
    with httpx.Client(base_url=args.url, timeout=args.timeout, headers=base_headers(args.token)) as client:
        for i in range(args.warmup):
            content, hdrs = bodies[i % len(bodies)]
            try:
                check(client.post(f"/{args.endpoint}", content=content, headers=hdrs))
            except httpx.TransportError as exc:
                raise transport_error(exc, args.url) from None


def run(args: argparse.Namespace) -> int:
    try:
        levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--concurrency takes comma-separated integers, got {args.concurrency!r}") from None
    if not levels or min(levels) < 1 or args.requests < 1 or args.processes < 1:
        raise ValueError("--concurrency levels, --requests and --processes must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise ValueError("--duration must be positive")
    bodies = build_bodies(args)
    _warmup(args, bodies)
    result: dict[str, Any] = {
        "url": args.url, "endpoint": args.endpoint, "images_per_request": args.images_per_request,
        "processes": args.processes, "cpu_count": os.cpu_count(), "body_bytes": len(bodies[0][0]),
        "mode": f"{args.duration}s per level" if args.duration else f"{args.requests} requests per level",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "levels": [],
    }
    pool = ProcessPoolExecutor(args.processes) if args.processes > 1 else None
    try:
        for c in levels:
            result["levels"].append(level := run_level(args, bodies, c, pool))
            print(f"concurrency {c}: {level['requests_per_s']} req/s, p50 {level['p50_ms']} ms, "
                  f"p99 {level['p99_ms']} ms, errors {level['errors'] or 0}", file=sys.stderr)
    finally:
        if pool:
            pool.shutdown()
    print(markdown_table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0
