"""``zoo stats [MODEL]``: per served model, what the batcher did and where the time went.

Read from the service's own numbers, summed over its workers: the served models from Triton's
statistics extension (``GET /v2/models/stats``), the rest from ``/metrics`` (the series of
service/core/stats.py): successful requests, items per model call (mean batch size), p50/p99 of the
queue wait and of the model call each request rode in (interpolated within the histogram buckets,
as PromQL's ``histogram_quantile`` does: bucket-accurate, not exact), and failed requests by reason.
``--json`` prints ``{"models": [...]}``; ``--watch S`` redraws the table every S seconds until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from typing import Any

from clients.client import ZooClient

QUANTILES = (0.5, 0.99)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="one served model (default: every one)")
    p.add_argument("--json", action="store_true", help='print {"models": [...]} instead of a table')
    p.add_argument("--watch", type=float, metavar="S", nargs="?", const=2.0,
                   help="redraw every S seconds (default 2) until Ctrl-C")


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """``histogram_quantile``: ``buckets`` as (upper bound, cumulative count), sorted, ending at +Inf."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bucket: its bound is what is known
            return lower + (upper - lower) * ((rank - below) / (count - below) if count > below else 1.0)
        lower, below = upper, count
    return lower


def summarise(metrics_text: str, models: list[str]) -> list[dict[str, Any]]:
    """One row per model from the Prometheus text of ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    value: dict[tuple[str, str], float] = defaultdict(float)
    errors: dict[str, dict[str, int]] = defaultdict(dict)
    executions: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            model = s.labels.get("model")
            if model is None or not s.name.startswith("model_zoo_"):
                continue
            if s.name in ("model_zoo_request_queue_seconds_bucket", "model_zoo_request_inference_seconds_bucket"):
                buckets[(model, s.name)].append((float(s.labels["le"]), s.value))
            elif s.name == "model_zoo_request_seconds_count" and s.labels.get("outcome") == "success":
                value[(model, "requests")] += s.value
            elif s.name == "model_zoo_request_failures_total":
                errors[model][s.labels["reason"]] = int(s.value)
            elif s.name == "model_zoo_batch_executions_total":
                executions[model].append((int(s.labels["batch_size"]), s.value))
    rows = []
    for model in models:
        calls = sum(n for _, n in executions[model])
        row: dict[str, Any] = {"model": model, "requests": int(value[(model, "requests")]),
                               "model_calls": int(calls),
                               "mean_batch": round(sum(size * n for size, n in executions[model]) / calls, 2) if calls else None,
                               "errors": dict(sorted(errors[model].items()))}
        for key, name in (("queue", "model_zoo_request_queue_seconds_bucket"),
                          ("infer", "model_zoo_request_inference_seconds_bucket")):
            series = sorted(buckets[(model, name)])
            for q in QUANTILES:
                seconds = quantile(q, series)
                row[f"{key}_p{int(q * 100)}_ms"] = None if seconds is None else round(seconds * 1e3, 3)
        rows.append(row)
    return rows


def collect(zoo: ZooClient, model: str | None) -> list[dict[str, Any]]:
    path = "/v2/models/stats" if model is None else f"/v2/models/{model}/stats"  # 404 names an unknown model
    served = [entry["name"] for entry in zoo.request("GET", path).json()["model_stats"]]
    return summarise(zoo.request("GET", "/metrics").text, served)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = ("MODEL", "REQUESTS", "CALLS", "MEAN BATCH", "QUEUE p50/p99 ms", "INFER p50/p99 ms", "ERRORS")
    lines = [head]
    for r in rows:
        errors = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "-"
        lines.append((r["model"], str(r["requests"]), str(r["model_calls"]),
                      "-" if r["mean_batch"] is None else f"{r['mean_batch']:.2f}",
                      f"{_ms(r['queue_p50_ms'])} / {_ms(r['queue_p99_ms'])}",
                      f"{_ms(r['infer_p50_ms'])} / {_ms(r['infer_p99_ms'])}", errors))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)) + "  " + line[-1] for line in lines)


def run(args: argparse.Namespace) -> int:
    if args.watch is not None and not args.watch > 0:
        raise ValueError(f"--watch takes a positive number of seconds, got {args.watch}")
    with ZooClient(args.url, timeout=args.timeout, retries=args.retries, token=args.token) as zoo:
        while True:
            rows = collect(zoo, args.model)
            out = json.dumps({"models": rows}, indent=2) if args.json else table(rows)
            if args.watch is None:
                print(out)
                return 0
            print("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S ") + zoo.url + "\n" + out, flush=True)
            try:
                time.sleep(args.watch)
            except KeyboardInterrupt:
                return 0
