"""PNG plots for docs/benchmarks.md (matplotlib, Agg backend: no display needed).

- ``engine.png``: items/s vs batch size per runtime, one panel per model (solid: model only,
  dashed: decode + preprocess + infer from PNG bytes / a whole forecast request).
- ``http_throughput.png``: items/s vs concurrency, service vs its naive peers, per endpoint and request size.
- ``http_latency.png``: p50 / p90 / p99 per level and server (log scale).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend

COLORS = {"service": "tab:blue", "service-int8": "tab:cyan", "naive-ort": "tab:green", "naive": "tab:orange"}


def engine_plot(rows: list[dict], path: Path) -> Path:
    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        series: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
        for r in rows:
            if r["model"] == model:
                series[(r["runtime"], r["mode"])].append((r["batch"], r["items_per_s"]))
        for i, runtime in enumerate(dict.fromkeys(rt for rt, _ in series)):
            for mode, style in (("infer", "-o"), ("pipeline", "--s")):
                pts = sorted(series.get((runtime, mode), []))
                if pts:
                    ax.plot(*zip(*pts), style, color=f"C{i}", label=f"{runtime} ({'model' if mode == 'infer' else 'pipeline'})")
        ax.set(title=model, xlabel="batch size (items per call)", ylabel="items/s", xscale="log", yscale="log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("In-process engine (solid: model only; dashed: from PNG bytes / whole forecast request)")
    return _save(fig, path)


def http_throughput_plot(records: list[dict], path: Path) -> Path:
    groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["level"]["endpoint"], r["level"]["images"])].append(r)
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), squeeze=False)
    for ax, ((endpoint, images), recs) in zip(axes[0], groups.items()):
        levels = sorted({r["level"]["concurrency"] for r in recs})
        servers = [k for k in COLORS if any(r["server"] == k for r in recs)]
        for j, server in enumerate(servers):
            pts = sorted((r["level"]["concurrency"], r["items_per_s"] or 0) for r in recs if r["server"] == server)
            if pts and len(levels) > 1:
                ax.plot(*zip(*pts), "-o", color=COLORS[server], label=server)
            elif pts:  # one level only: side-by-side bars read better than two lone dots
                ax.bar([j], [pts[0][1]], 0.6, color=COLORS[server], label=server)
        unit = "requests/s" if endpoint == "forecast_sine" else "images/s"
        ax.set(title=f"/{endpoint}" + (f" ({images} img/req)" if endpoint != "forecast_sine" else ""), ylabel=unit)
        if len(levels) > 1:
            ax.set(xlabel="concurrency (closed-loop users)", xscale="log")
            ax.set_xticks(levels, [str(c) for c in levels])
            ax.minorticks_off()
        else:
            ax.set_xticks(range(len(servers)), servers, fontsize=7)
            ax.set_xlabel(f"concurrency {levels[0]}")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("Throughput vs concurrency: service (BentoML) vs naive FastAPI servers (ONNX Runtime, eager PyTorch)")
    return _save(fig, path)


def http_latency_plot(records: list[dict], path: Path) -> Path:
    keys = list(dict.fromkeys(r["key"] for r in records))
    fig, ax = plt.subplots(figsize=(max(8, 1.7 * len(keys)), 4.5))
    servers = [k for k in COLORS if any(r["server"] == k for r in records)]
    width = 0.8 / (3 * len(servers))
    for j, server in enumerate(servers):
        for k, (pct, alpha) in enumerate((("p50_ms", 1.0), ("p90_ms", 0.65), ("p99_ms", 0.35))):
            xs, ys = [], []
            for i, key in enumerate(keys):
                rec = next((r for r in records if r["key"] == key and r["server"] == server), None)
                if rec and rec[pct]:
                    xs.append(i + (j * 3 + k - (3 * len(servers) - 1) / 2) * width)
                    ys.append(rec[pct])
            ax.bar(xs, ys, width, color=COLORS[server], alpha=alpha, label=f"{server} {pct[:3]}")
    ax.set_xticks(range(len(keys)), [k.replace(" (", "\n(") for k in keys], fontsize=7)
    ax.set(ylabel="latency per request, ms", yscale="log", title="Latency percentiles per level")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tail_plot(records: list[dict], path: Path, title: str = "") -> Path:
    """benchmarks/studies/tail.py: client latency histograms, one panel per level, one outline per variant
    (all its rounds pooled), log-spaced bins so the p50 and the tail both show."""
    levels = list(dict.fromkeys(r["level"] for r in records))
    variants = list(dict.fromkeys(r["variant"] for r in records))
    fig, axes = plt.subplots(1, len(levels), figsize=(4.2 * len(levels), 3.6), squeeze=False)
    for ax, level in zip(axes[0], levels):
        pooled = {v: [x for r in records if r["level"] == level and r["variant"] == v for x in r.get("latencies_ms", [])]
                  for v in variants}
        values = [x for xs in pooled.values() for x in xs if x > 0]
        if not values:
            continue
        bins = np.geomspace(min(values), max(values), 60)
        for i, (v, xs) in enumerate(pooled.items()):
            if xs:
                p50, p99 = np.percentile(xs, [50, 99])
                ax.hist(xs, bins=bins, histtype="step", color=f"C{i}", label=f"{v}: p50 {p50:.1f}, p99 {p99:.1f} ms")
                ax.axvline(p99, color=f"C{i}", linestyle=":", linewidth=1)
        ax.set(title=level, xlabel="client latency, ms (dotted: p99)", ylabel="requests", xscale="log", yscale="log")
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)
