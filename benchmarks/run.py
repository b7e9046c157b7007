"""``make bench``: one benchmark run, all parts, written to docs/benchmarks.md with PNG plots.

    python -m benchmarks.run            # full: ~10-15 min on 2 cores (10-20 s per HTTP point)
    python -m benchmarks.run --quick    # seconds per point, for development and tests

Steps: fill a BentoML store of its own (benchmarks/store.py) -> part 1, the in-process engine
(benchmarks/engine.py) -> parts 2-3, the service and its naive peers over HTTP, driven by ``wrk``
(benchmarks/http_bench.py, benchmarks/loadgen.py) -> gRPC against OIP REST binary, h2load and wrk
(benchmarks/grpc_bench.py; in results.json) -> the targets as ratios (benchmarks/targets.py) -> a profile for every
missed target (benchmarks/profiles.py) -> plots and the document (benchmarks/plots.py, report.py).
GPU figures come from ``benchmarks/gpu.sh`` (docs/bench/gpu.json), included when present.
Any failure ends the command with one line naming the step, and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.store import ROOT, BenchError, use_home
from zoo.datadir import default_data_dir

PARTS = ("engine", "http", "grpc")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="seconds per point (development, tests); figures are rough")
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of parts to run: engine, http, grpc (default all)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"), help="the document to write")
    p.add_argument("--plots-dir", default=None, help="where the PNGs and results.json go (default: OUT's dir/bench)")
    p.add_argument("--keep", metavar="DIR", help="work directory to keep and reuse (store, checkpoints, logs); "
                                                 "default: a temporary one, removed at the end")
    p.add_argument("--data-dir", default=default_data_dir(), help="datasets root (zoo.datadir's rule: $DATA_DIR, ...)")
    p.add_argument("--duration", type=float, help="seconds per HTTP point (default 15; --quick 2)")
    p.add_argument("--warmup", type=float, help="seconds of untimed load before each HTTP point (default 3; --quick 1)")
    p.add_argument("--levels", help="HTTP levels as ENDPOINT:CONCURRENCY[:IMAGES],... (default: the issue's workload)")
    p.add_argument("--generator", choices=("wrk", "zoo"), default="wrk",
                   help="HTTP load generator: wrk (default; a few %% of a core) or zoo bench (Python, aiohttp)")
    p.add_argument("--no-profile", action="store_true", help="do not profile missed targets")
    p.add_argument("--families", default="mnist-mlp,sine-rnn,cifar10-resnet18", help="models to measure (comma list)")
    p.add_argument("--random-weights", action="store_true",
                   help="randomly initialise every model instead of training the quick recipes (tests, no data)")
    return p


def parse_levels(text: str | None):
    from benchmarks.http_bench import LEVELS, MODEL_OF, Level

    if not text:
        return LEVELS
    levels = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            if parts[0] not in MODEL_OF or len(parts) not in (2, 3):
                raise ValueError
            levels.append(Level(parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else 1))
        except ValueError:
            raise BenchError(f"--levels: {item!r} is not ENDPOINT:CONCURRENCY[:IMAGES] with ENDPOINT one of "
                             f"{', '.join(MODEL_OF)}") from None
    return tuple(levels)


def run(args: argparse.Namespace, argv: list[str], work: Path) -> dict:
    t0 = time.monotonic()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        raise BenchError(f"--parts takes a comma list of {', '.join(PARTS)}; got {args.parts!r}")
    levels = parse_levels(args.levels)
    home = use_home(work)  # before anything imports bentoml

    from benchmarks.engine import Budget, run_engine
    from benchmarks.http_bench import run_http
    from benchmarks.report import machine
    from benchmarks.store import fill_store, load_target
    from benchmarks.targets import evaluate

    results: dict = {"command": "python -m benchmarks.run" + (" " + " ".join(argv) if argv else ""),
                     "quick": args.quick, "machine": machine()}
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    models, results["store_commands"] = fill_store(work, args.data_dir, families, args.random_weights)
    served = {m.name for m in models}
    if "http" in parts:
        from benchmarks.http_bench import MODEL_OF

        absent = [lv.key for lv in levels if MODEL_OF[lv.endpoint] not in served]
        if absent:
            raise BenchError(f"HTTP levels {absent} need models not in --families {args.families}")
    results["models"] = [m.to_dict() for m in models]
    engine = http = None
    if "engine" in parts:
        budget = Budget.quick() if args.quick else Budget()
        engine = run_engine([load_target(m) for m in models], budget)
        engine["budget"] = asdict(budget)
        results["engine"] = engine
    duration = args.duration or (2.0 if args.quick else 15.0)
    warm_s = args.warmup or (1.0 if args.quick else 3.0)
    if "http" in parts:
        http = run_http(models, home, work / "http", levels, duration, warm_s, generator=args.generator)
        results["http"] = http
    if "grpc" in parts:
        from benchmarks.grpc_bench import MODEL, run_grpc

        if MODEL not in served:
            raise BenchError(f"the grpc part needs {MODEL} in --families {args.families}")
        results["grpc"] = run_grpc(home, work / "grpc", duration, warm_s)
    targets = evaluate(engine, http)
    results["targets"] = [t.to_dict() for t in targets]
    if not args.no_profile:
        results["profiles"] = profiles(targets, models, home, work, duration, warm_s, engine, args.generator)
    results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    results["wall_s"] = time.monotonic() - t0
    return results


def profiles(targets, models, home: Path, work: Path, duration: float, warm_s: float, engine,
             generator: str = "wrk") -> list[dict]:
    """One profile per distinct thing a missed target points at (an HTTP level or the int8 graph)."""
    import numpy as np

    from benchmarks.http_bench import Level, profile_level
    from benchmarks.profiles import ort_op_profile, summarise_pyspy

    out, seen = [], set()
    for t in targets:
        what = t.profile
        key = what.key if isinstance(what, Level) else what
        if what is None or key in seen:
            continue
        seen.add(key)
        if isinstance(what, Level):
            entry = {"kind": "pyspy", "title": f"the service at {what.key}"}
            rec = profile_level(home, work / "http", what, duration, warm_s, generator=generator)
            entry["record"] = rec
            if rec.get("profile_error") or not rec.get("profile"):
                entry["error"] = rec.get("profile_error", "py-spy wrote no output")
            else:
                entry["pyspy"] = summarise_pyspy(Path(rec["profile"]))
        else:
            cifar = next(m for m in models if m.name == "cifar10-resnet18")
            x = {"input": np.random.default_rng(0).standard_normal((64, 3, 32, 32), dtype=np.float32)}
            threads = engine["threads"] if engine else 2
            entry = {"kind": "ort", "title": "ONNX Runtime fp32 vs int8, cifar10-resnet18, batch 64", "batch": 64,
                     "ort": [ort_op_profile(cifar.model_dir / f, x, threads, work / "ort-profile")
                             for f in ("model.onnx", "model.int8.onnx")]}
        out.append(entry)
    return out


def write(results: dict, out_md: Path, plots_dir: Path) -> None:
    from benchmarks.plots import engine_plot, http_latency_plot, http_throughput_plot
    from benchmarks.report import render

    gpu_json = plots_dir / "gpu.json"
    if gpu_json.is_file():
        results["gpu"] = json.loads(gpu_json.read_text())
    plots = {}
    if "engine" in results:
        plots["engine"] = engine_plot(results["engine"]["rows"], plots_dir / "engine.png")
    if "http" in results:
        plots["http_throughput"] = http_throughput_plot(results["http"]["records"], plots_dir / "http_throughput.png")
        plots["http_latency"] = http_latency_plot(results["http"]["records"], plots_dir / "http_latency.png")
    render(results, out_md, plots)
    (plots_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = get_args_parser().parse_args(argv)
    out_md = Path(args.out).resolve()
    plots_dir = Path(args.plots_dir).resolve() if args.plots_dir else out_md.parent / "bench"
    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="model-zoo-bench-"))
    try:
        work.mkdir(parents=True, exist_ok=True)
        results = run(args, argv, work)
        write(results, out_md, plots_dir)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - export/checkpoint/OS errors: one line, not a traceback
        hint = f" (logs in {work})" if args.keep else " (rerun with --keep DIR to keep the logs)"
        print(f"bench: error: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}{hint}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for t in results["targets"]:
        print(f"[target] {t['verdict']:<32} {t['name']}: {t['measured']}")
    print(f"wrote {out_md} and {plots_dir}/ in {results['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
