"""What each server worker costs in memory: start ``bentoml serve`` with 1..N workers over a model
store, wait for ``/readyz``, and read every process's RSS, PSS and USS (psutil, Linux smaps).

    python -m benchmarks.studies.worker_memory --home ~/bentoml --workers 1,2 [--models mnist-mlp,sine-rnn]

USS is what a worker alone holds (freed if it exits); PSS shares the pages it maps with others
(Python's and ONNX Runtime's code) among the processes that map them, so the PSS column sums to
the server's real footprint. Figures: service/README.md ("Workers and memory").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import httpx
import psutil

from devtools.launch import start_service


def measure(home: Path, workers: int, models: str | None, log: Path, settle_s: float = 3.0) -> dict:
    env = {"MODEL_ZOO_WORKERS": str(workers), "MODEL_ZOO_THREADS": "1"}
    if models:
        env["MODEL_ZOO_MODELS"] = models
    with start_service(home, log, env, timeout=300) as served:
        time.sleep(settle_s)  # after warm-up: the batchers' first calls have allocated their buffers
        served_models = [e["name"] for e in httpx.post(served.url + "/v2/repository/index",
                                                       json={"ready": True}).json()]
        arbiter = psutil.Process(served.proc.pid)
        rows = []
        for proc in [arbiter, *arbiter.children(recursive=True)]:
            mem = proc.memory_full_info()
            role = "worker" if "worker.service" in " ".join(proc.cmdline()) else "arbiter"
            rows.append({"pid": proc.pid, "role": role, "rss_mb": mem.rss / 2**20, "pss_mb": mem.pss / 2**20,
                         "uss_mb": mem.uss / 2**20})
    return {"workers": workers, "models": served_models, "processes": rows}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.worker_memory", description=__doc__.split("\n\n")[0])
    p.add_argument("--home", required=True, type=Path, help="BENTOML_HOME holding the models")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    p.add_argument("--models", help="MODEL_ZOO_MODELS for the run (default: every stored model of a known family)")
    p.add_argument("--log-dir", type=Path, default=Path("/tmp"), help="where the servers' logs go")
    args = p.parse_args(argv)
    print("| workers | models | process | RSS MiB | PSS MiB | USS MiB |\n| --- | --- | --- | ---: | ---: | ---: |")
    for n in (int(w) for w in args.workers.split(",")):
        res = measure(args.home, n, args.models, args.log_dir / f"worker-memory-{n}.log")
        for r in res["processes"]:
            print(f"| {n} | {', '.join(res['models'])} | {r['role']} | {r['rss_mb']:.0f} | {r['pss_mb']:.0f} | {r['uss_mb']:.0f} |")
        total = sum(r["pss_mb"] for r in res["processes"])
        print(f"| {n} | | all (PSS sum) | | {total:.0f} | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
