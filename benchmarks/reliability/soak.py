"""Soak: minutes of mixed traffic at high concurrency; errors and worker memory (RSS) over time.

    python -m benchmarks.reliability.soak --minutes 10 --home ~/bentoml [--json soak.json]

Starts ``bentoml serve`` on the store in ``--home`` (``make models`` / ``python -m export.bootstrap
--quick`` fill it) and runs, at the same time, for the whole run:

- ``clients.bench`` closed-loop users (the project's load generator), in windows of ``--window`` s:
  /classify_digit with 1 image (48 users), with 16 images (8 users), /forecast_sine (16 users);
- OIP JSON inference on mnist-mlp (8 users) and deliberately bad requests (4 users: a truncated PNG),
  whose 400s are the designed answer.

Pass criteria (exit status 0): every answer is 2xx, a designed 429/503, or the designed 400 of the bad
stream; no worker restarted; worker RSS at the end is less than 10 % above RSS at the end of warm-up.

Warm-up (``--warmup-s``, default 150 s) must outlast BentoML's request timeout (``traffic.timeout``,
120 s in service/app.py): BentoML 1.4.40's ``TimeoutMiddleware`` schedules a ``call_later(timeout)``
per request and never cancels it, so each request's future, context and OpenTelemetry span (~5 KB)
stay alive for 120 s. RSS therefore climbs linearly for the first 120 s of traffic (by about
rate x 120 s x 5 KB) and then levels off; measured here, that is the whole of the early growth.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from devtools.launch import ONE_WORKER, Server, start_service
from devtools.load import Load, bodies_for
from clients.bench import run_level

# (endpoint, images per request, users): the clients.bench streams
BENCH_STREAMS = [("classify_digit", 1, 48), ("classify_digit", 16, 8), ("forecast_sine", 1, 16)]
OIP_USERS, BAD_USERS = 8, 4
DESIGNED = {"429", "503"}
RSS_LIMIT = 0.10
WARMUP_S = 150.0  # > traffic.timeout (120 s): see the module docstring


def oip_bodies(n: int = 8) -> list[tuple[bytes, dict[str, str]]]:
    """OIP JSON requests for mnist-mlp: (4, 784) float tensors in the model's normalised range."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        x = rng.standard_normal((4, 784)).astype(np.float32)
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 784], "data": x.ravel().tolist()}],
                "outputs": [{"name": "logits", "parameters": {"classification": 3}}]}
        out.append((json.dumps(body).encode(), {"Content-Type": "application/json"}))
    return out


def bad_bodies() -> list[tuple[bytes, dict[str, str]]]:
    """A corrupt PNG upload (half a real one): answered 400 by design, naming the file."""
    png = bodies_for("classify_digit")[0]
    return [(png[0][: len(png[0]) // 2], png[1])]


class RssSampler(threading.Thread):
    def __init__(self, served: Server, every: float) -> None:
        super().__init__(daemon=True)
        self.served, self.every = served, every
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while not self.stop_event.is_set():
            self.samples.append((time.monotonic() - self.t0, self.served.worker_rss()))
            self.stop_event.wait(self.every)


def bench_args(url: str, endpoint: str, images: int, seconds: float, token: str | None) -> argparse.Namespace:
    return argparse.Namespace(url=url, endpoint=endpoint, images_per_request=images, duration=seconds, requests=1,
                              processes=1, timeout=60.0, token=token, inputs=[], history_len=50, steps=10, seed=0)


def run_windows(url: str, minutes: float, window: float, token: str | None) -> list[dict[str, Any]]:
    """Run the bench streams side by side, window after window; one result per stream and window."""
    bodies = {(e, k): bodies_for(e, k) for e, k, _ in BENCH_STREAMS}
    results: list[dict[str, Any]] = []
    deadline = time.monotonic() + minutes * 60
    while (left := deadline - time.monotonic()) > 1:
        seconds = min(window, left)
        threads = []
        for endpoint, k, users in BENCH_STREAMS:
            def one(e=endpoint, k=k, users=users):
                level = run_level(bench_args(url, e, k, seconds, token), bodies[(e, k)], users, None)
                results.append({"stream": f"{e} x{k}", "t": round(time.monotonic(), 1), **level})
            threads.append(threading.Thread(target=one))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return results


def summarise(windows, oip: Load, bad: Load, sampler: RssSampler, warmup_s: float, served: Server,
              first_pids: set[int]) -> dict[str, Any]:
    streams: dict[str, dict[str, Any]] = {}
    for w in windows:
        s = streams.setdefault(w["stream"], {"requests": 0, "ok": 0, "errors": {}, "p99_ms": []})
        s["requests"] += w["requests"]
        s["ok"] += w["ok"]
        s["p99_ms"].append(w["p99_ms"])
        for k, v in w["errors"].items():
            s["errors"][k] = s["errors"].get(k, 0) + v
    for s in streams.values():
        p99 = [x for x in s.pop("p99_ms") if x is not None]
        s["worst_window_p99_ms"] = max(p99) if p99 else None
    for name, load, expected in (("oip infer", oip, {"200"}), ("bad input", bad, {"400"})):
        outcomes: dict[str, int] = {}
        for r in load.records:
            outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
        streams[name] = {"requests": len(load.records), "ok": sum(v for k, v in outcomes.items() if k in expected),
                         "errors": {k: v for k, v in outcomes.items() if k not in expected}}
    undesigned = {f"{name}: {k}": v for name, s in streams.items() for k, v in s["errors"].items() if k not in DESIGNED}
    designed = sum(v for s in streams.values() for k, v in s["errors"].items() if k in DESIGNED)
    totals = [(t, sum(rss.values())) for t, rss in sampler.samples if rss]
    base = next((r for t, r in totals if t >= warmup_s), None)
    end = totals[-1][1] if totals else None
    growth = (end - base) / base if base and end else math.nan
    pids = {p for _, rss in sampler.samples for p in rss}
    return {
        "streams": streams, "requests": sum(s["requests"] for s in streams.values()),
        "undesigned_errors": undesigned, "designed_429_503": designed,
        "rss_mib": {"start": round(totals[0][1] / 2**20, 1) if totals else None,
                    "end_of_warmup": round(base / 2**20, 1) if base else None,
                    "end": round(end / 2**20, 1) if end else None,
                    "max": round(max(r for _, r in totals) / 2**20, 1) if totals else None,
                    "growth_after_warmup_pct": round(100 * growth, 2),
                    "samples": [(round(t), round(r / 2**20, 1)) for t, r in totals[:: max(1, len(totals) // 40)]]},
        "worker_pids": sorted(pids), "worker_restarted": pids != first_pids,
        "passed": not undesigned and growth < RSS_LIMIT and pids == first_pids,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reliability.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--home", default=os.environ.get("BENTOML_HOME", "~/bentoml"), help="BENTOML_HOME with the models")
    p.add_argument("--warmup-s", type=float, default=WARMUP_S,
                   help="RSS baseline taken after this long (default 150: past the 120 s request timeout)")
    p.add_argument("--window", type=float, default=30.0, help="seconds per clients.bench window")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    home = Path(args.home).expanduser()
    if args.minutes <= 0 or not (home / "models" / "mnist-mlp").is_dir() or not (home / "models" / "sine-rnn").is_dir():
        print(f"soak: need --minutes > 0 and mnist-mlp + sine-rnn in {home}/models "
              "(python -m export.bootstrap --quick)", file=sys.stderr)
        return 2
    warmup = args.warmup_s
    if warmup >= args.minutes * 60 - 30:
        print(f"soak: --minutes {args.minutes:g} leaves under 30 s after the {warmup:g} s warm-up", file=sys.stderr)
        return 2
    token = os.environ.get("MODEL_ZOO_API_TOKEN") or None
    # the server's log goes next to --json, else to the temp dir (not into the working tree)
    log = Path(args.json).with_suffix(".server.log") if args.json else Path(tempfile.gettempdir()) / "zoo-soak.log"
    with start_service(home, log, {**ONE_WORKER, "MODEL_ZOO_MODELS": "mnist-mlp,sine-rnn"}) as served:
        first = set(served.worker_rss())
        sampler = RssSampler(served, every=5.0)
        sampler.start()
        oip = Load(served.url, "/v2/models/mnist-mlp/infer", oip_bodies(), OIP_USERS, token=token).start()
        bad = Load(served.url, "/classify_digit", bad_bodies(), BAD_USERS, token=token).start()
        t0 = time.time()
        windows = run_windows(served.url, args.minutes, args.window, token)
        oip.stop(), bad.stop()
        sampler.stop_event.set()
        sampler.join()
        result = summarise(windows, oip, bad, sampler, warmup, served, first)
        result.update(minutes=args.minutes, warmup_s=warmup, wall_s=round(time.time() - t0, 1), cpu_count=os.cpu_count())
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    print(f"soak: {'PASSED' if result['passed'] else 'FAILED'}: {result['requests']} requests, undesigned errors "
          f"{result['undesigned_errors'] or 0}, designed 429/503 {result['designed_429_503']}, RSS "
          f"{result['rss_mib']['end_of_warmup']} -> {result['rss_mib']['end']} MiB "
          f"({result['rss_mib']['growth_after_warmup_pct']} %)", file=sys.stderr)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
