"""Where the slowest requests' time goes: per-request latency, matched to its own ``Server-Timing`` (issue 31).

    python -m benchmarks.studies.tail [--route oip|digit] [--levels 32,64] [--duration 10] [--rounds 2]
                                      [--variant NAME=DIR ...] [--out docs/bench/tail.json]
                                      [--plot docs/bench/tail.png]

One closed-loop ``wrk`` run per level (benchmarks/trace.lua: each request carries its send time as its
``X-Request-Id``, so every answer's client latency is matched to its own ``Server-Timing`` phases).
Per server start: c=1 fresh, then each level (after an untimed 2 s warm-up at that level), then c=1
again right after the load, which shows whatever the load left behind. ``--variant NAME=DIR`` serves
the code in DIR (a checkout of another commit: ``git archive COMMIT | tar -x -C DIR``) with this
repository's environment; several variants alternate, their order reversed every round, so a
before/after compares runs made minutes apart on the same machine.

Attribution of the slowest 1% against the middle (p40-p60) requests, in ms: ``decode``, ``queue``,
``infer``, ``encode`` (service/core/timing.py), ``handler`` (the rest of the server's ``total``:
middlewares, hand-offs between phases) and ``outside`` (client latency minus ``total``: the request
waiting in socket buffers for an event loop that was busy, and the answer's way back). Each run also
records the load average, ``Connection: close`` answers (service/http/balance.py), wrk's CPU and each
worker's CPU (imbalance). Figures and the plot belong in docs/benchmarks.md next to this command.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.store import ROOT, BenchError

LUA = ROOT / "benchmarks" / "trace.lua"
PHASES = ("decode", "queue", "infer", "encode")
MODEL = "mnist-mlp"
ROUTES = {"oip": f"/v2/models/{MODEL}/infer", "digit": "/classify_digit"}


def oip_body(url: str, work: Path) -> Path:
    """A [1, 784] FP32 tensor in the binary tensor extension; the manifest line carries its header length."""
    import httpx

    meta = httpx.get(f"{url}/v2/models/{MODEL}", timeout=10).json()
    name = meta["inputs"][0]["name"]
    x = np.random.default_rng(0).random((1, 784), dtype=np.float32)
    header = json.dumps({"inputs": [{"name": name, "shape": [1, 784], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}]}).encode()
    (work / "oip.bin").write_bytes(header + x.astype("<f4").tobytes())
    manifest = work / "oip.tsv"
    manifest.write_text(f"application/octet-stream\t{work / 'oip.bin'}\tInference-Header-Content-Length: {len(header)}\n")
    return manifest


def digit_body(work: Path) -> Path:
    from benchmarks.goodput import BOUNDARY, image_body

    (work / "digit.bin").write_bytes(image_body(28, 28, 1))
    manifest = work / "digit.tsv"
    manifest.write_text(f"multipart/form-data; boundary={BOUNDARY}\t{work / 'digit.bin'}\n")
    return manifest


def parse_trace(path: Path) -> list[dict[str, float]]:
    rows = []
    for line in path.read_text().splitlines():
        latency, status, close, sent, timing = (line.split("\t") + [""] * 5)[:5]
        row: dict[str, float] = {"latency": int(latency) / 1e3, "status": int(status), "close": int(close),
                                 "sent": int(sent) / 1e3}
        for item in filter(None, (p.strip() for p in timing.split(","))):
            key, _, value = item.partition(";")
            if value.startswith("dur="):
                row[key] = float(value[4:])
            elif value.startswith("desc="):
                row[key] = float(value[5:].strip('"'))
        rows.append(row)
    return rows


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def wrk(url: str, path: str, concurrency: int, seconds: int, manifest: Path, trace: Path) -> dict[str, Any]:
    cmd = ["wrk", "--threads", "1", "--connections", str(concurrency), "--duration", f"{seconds}s", "--timeout", "30s",
           "--script", str(LUA), url + path, "--", str(manifest), str(trace)]
    cpu0, t0 = _children_cpu_s(), time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0:
        raise BenchError(f"wrk failed at c={concurrency}: {proc.stderr.strip() or proc.stdout.strip()}")
    return {"client_cpu_pct": round(100 * (_children_cpu_s() - cpu0) / (time.monotonic() - t0), 1)}


def _workers_cpu(server: Any) -> list[float]:
    out = []
    for p in server.workers():
        t = p.cpu_times()
        out.append(t.user + t.system)
    return out


def summarize(rows: list[dict[str, float]], seconds: float) -> dict[str, Any]:
    ok = [r for r in rows if 200 <= r["status"] < 300 and r["latency"] >= 0 and "total" in r]
    if not ok:
        return {"answers": len(rows), "ok": 0}
    lat = np.array([r["latency"] for r in ok])
    p40, p50, p60, p90, p99 = np.percentile(lat, [40, 50, 60, 90, 99])

    def mean_phases(group: list[dict[str, float]]) -> dict[str, float]:
        out = {k: float(np.mean([r.get(k, 0.0) for r in group])) for k in (*PHASES, "total", "latency", "batch")}
        out["handler"] = out["total"] - sum(out[k] for k in PHASES)
        out["outside"] = out["latency"] - out["total"]
        return {k: round(v, 3) for k, v in out.items()}

    slow = [r for r in ok if r["latency"] >= p99]
    middle = [r for r in ok if p40 <= r["latency"] <= p60]
    return {
        "answers": len(rows), "ok": len(ok), "requests_per_s": round(len(ok) / seconds, 1),
        "p50_ms": round(p50, 3), "p90_ms": round(p90, 3), "p99_ms": round(p99, 3), "max_ms": round(lat.max(), 3),
        "p99_over_p50": round(p99 / p50, 2), "closes": sum(r["close"] for r in rows),
        "slowest_1pct": mean_phases(slow), "middle": mean_phases(middle),
        "latencies_ms": [round(v, 3) for v in lat.tolist()],
    }


def run_level(server: Any, path: str, concurrency: int, seconds: int, manifest: Path, work: Path,
              warmup: bool, keep: Path | None = None) -> dict[str, Any]:
    if warmup:
        wrk(server.url, path, concurrency, 2, manifest, work / "warmup.trace")
    trace = work / f"c{concurrency}.trace"
    load0, cpu0 = os.getloadavg(), _workers_cpu(server)
    record = wrk(server.url, path, concurrency, seconds, manifest, trace)
    cpu = [round(b - a, 2) for a, b in zip(cpu0, _workers_cpu(server))]
    record.update(summarize(parse_trace(trace), seconds), concurrency=concurrency, load_avg=[round(v, 2) for v in load0],
                  workers_cpu_s=cpu)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        n = len(list(keep.glob(f"*-c{concurrency}-*.trace")))
        trace.rename(keep / f"{time.strftime('%H%M%S')}-c{concurrency}-{n}.trace")
    return record


def measure_variant(name: str, code: Path, args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    from devtools.launch import home_over, spawn_service

    home = home_over(Path(args.store_home), Path(tempfile.mkdtemp(dir=work)))
    server = spawn_service(home, work / f"{name}.log", cwd=code).wait_ready()
    records = []
    try:
        path = ROUTES[args.route]
        manifest = oip_body(server.url, work) if args.route == "oip" else digit_body(work)
        plan = [("c1-fresh", 1, True), *((f"c{c}", c, True) for c in args.levels), ("c1-after", 1, False)]
        for label, c, warm in plan:
            seconds = args.duration if c > 1 else max(3, args.duration // 2)
            rec = run_level(server, path, c, seconds, manifest, work, warm, args.traces and args.traces / name)
            rec.update(variant=name, level=label)
            records.append(rec)
            print(_line(rec), flush=True)
    finally:
        server.stop()
    return records


def _line(r: dict[str, Any]) -> str:
    if not r.get("ok"):
        return f"{r['variant']:>8} {r['level']:>9}: no 2xx answers ({r['answers']} in all)"
    s, m = r["slowest_1pct"], r["middle"]
    parts = " ".join(f"{k} {m[k]:.2f}/{s[k]:.2f}" for k in (*PHASES, "handler", "outside"))
    return (f"{r['variant']:>8} {r['level']:>9}: {r['requests_per_s']:>7.1f} req/s p50 {r['p50_ms']:.2f} "
            f"p99 {r['p99_ms']:.2f} ({r['p99_over_p50']:.1f}x) closes {r['closes']} batch {m['batch']:.1f}/"
            f"{s['batch']:.1f} | middle/slowest-1% ms: {parts} | wrk {r['client_cpu_pct']}% workers cpu "
            f"{r['workers_cpu_s']} load {r['load_avg']}")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--route", choices=sorted(ROUTES), default="oip")
    p.add_argument("--levels", type=lambda s: [int(c) for c in s.split(",")], default=[32, 64])
    p.add_argument("--duration", type=int, default=10, help="seconds per level (c=1: half)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variant", action="append", default=[], metavar="NAME=DIR",
                   help="serve the code in DIR under NAME (default: this checkout as 'current')")
    p.add_argument("--store-home", default=os.environ.get("BENTOML_HOME", str(Path.home() / "bentoml")),
                   help="a BENTOML_HOME whose store holds mnist-mlp (make models fills one)")
    p.add_argument("--out", type=Path, default=None, help="JSON with every run (latencies included)")
    p.add_argument("--traces", type=Path, default=None, help="keep every run's trace.lua lines under DIR/VARIANT/")
    p.add_argument("--plot", type=Path, default=None, help="PNG: latency histograms per variant and level")
    return p


def main(args: argparse.Namespace) -> int:
    variants = [tuple(v.split("=", 1)) for v in args.variant] or [("current", str(ROOT))]
    records = []
    with tempfile.TemporaryDirectory(prefix="zoo-tail-") as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            for name, code in (variants if r % 2 == 0 else variants[::-1]):
                records.extend(measure_variant(name, Path(code), args, work))
    result = {"command": " ".join(["python -m benchmarks.studies.tail", *sys.argv[1:]]), "route": ROUTES[args.route],
              "records": records}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result))
    if args.plot:
        from benchmarks.plots import tail_plot

        tail_plot(records, args.plot, title=f"{ROUTES[args.route]} ({MODEL}, one item per request)")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
