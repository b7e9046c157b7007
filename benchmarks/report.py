"""docs/benchmarks.md: machine, versions, commands, models, targets, tables, plots and profiles.

Everything in the document comes from the ``results`` dict one ``benchmarks.run`` produced (also
written next to the plots as ``results.json``), so the ratios always refer to one run.
"""

from __future__ import annotations

import os
import platform
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "onnx", "onnxruntime-gpu", "onnxruntime", "bentoml", "fastapi", "uvicorn",
            "aiohttp", "httpx", "numpy", "pillow")


def machine() -> dict[str, Any]:
    """CPU model, cores, memory, load, versions: what a reader needs to compare figures."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        mem_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        mem_gib = None
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "memory_gib": mem_gib, "os": platform.platform(), "python": platform.python_version(),
            "load_avg": [round(x, 2) for x in os.getloadavg()], "versions": versions,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def _f(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}" if abs(x) < 1e5 else f"{x:,.0f}"


def engine_tables(engine: dict) -> list[str]:
    rows = engine["rows"]
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        for mode, title in (("infer", "model only: a ready float32 batch through the runtime"),
                            ("pipeline", "decode + preprocess + infer + top-k from PNG bytes (the service's code)"
                             if model != "sine-rnn" else "one /forecast_sine request: history 50, 10 steps")):
            sel = [r for r in rows if r["model"] == model and r["mode"] == mode]
            if not sel:
                continue
            batches = sorted({r["batch"] for r in sel})
            out += [f"**{model}**, {title}: items/s (p50 ms per call)", "",
                    "| runtime | " + " | ".join(f"batch {b}" for b in batches) + " |",
                    "|---|" + "---:|" * len(batches)]
            for rt in dict.fromkeys(r["runtime"] for r in sel):
                cells = []
                for b in batches:
                    r = next((x for x in sel if x["runtime"] == rt and x["batch"] == b), None)
                    cells.append(f"{_f(r['items_per_s'])} ({_f(r['p50_ms'], 2)})" if r else "-")
                out.append(f"| {rt} | " + " | ".join(cells) + " |")
            out.append("")
        for rt, why in engine.get("skipped", {}).get(model, {}).items():
            out.append(f"- {model} {rt}: not measured: {why}")
    return out


HTTP_SERVERS = ("service", "service-int8", "naive-ort", "naive")


def _ratio(r: dict, peer: dict | None) -> str:
    return f"{(r['items_per_s'] or 0) / peer['items_per_s']:.2f}x" if peer and peer["items_per_s"] else "-"


def http_table(http: dict) -> list[str]:
    out = ["| level | server | req/s | items/s | vs naive-ort | vs naive | p50 ms | p90 ms | p99 ms | errors | "
           "client CPU % | server CPU % | items per model call |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    recs = http["records"]
    for key in dict.fromkeys(r["key"] for r in recs):
        at = {r["server"]: r for r in recs if r["key"] == key}
        for server in HTTP_SERVERS:
            r = at.get(server)
            if r is None:
                continue
            service = server.startswith("service")
            vs_ort = _ratio(r, at.get("naive-ort")) if server != "naive-ort" else "-"
            vs_naive = _ratio(r, at.get("naive")) if server != "naive" else "-"
            errs = ", ".join(f"{k}: {v}" for k, v in r["errors"].items()) or "0"
            out.append(f"| {key} | {server} | {_f(r['requests_per_s'])} | {_f(r['items_per_s'])} | {vs_ort} | {vs_naive} | "
                       f"{_f(r['p50_ms'])} | {_f(r['p90_ms'])} | {_f(r['p99_ms'])} | {errs} | {_f(r['client_cpu_pct'])} | "
                       f"{_f(r['server_cpu_pct'])} | {_f(r.get('mean_batch'), 2) if service else '1 request'} |")
    return out


def load_command(http: dict) -> str:
    """The load generator's command line, as the report quotes it."""
    d, w = http.get("duration_s", "-"), http.get("warmup_s", "-")
    if http.get("generator", "zoo") == "wrk":
        return (f"`wrk --threads 1 --connections C --duration {d}s --timeout 30s --script benchmarks/loadgen.lua "
                f"URL/ENDPOINT -- MANIFEST` (bodies from `clients.bench.build_bodies`), after an untimed {w} s run "
                "at the same concurrency")
    return (f"`python -m clients bench --url URL --endpoint E --concurrency C --images-per-request K --duration {d} "
            f"--warmup 0 --json FILE`, after an untimed {w} s run at the same concurrency")


def profile_sections(profiles: list[dict], cpus: int) -> list[str]:
    out = []
    for p in profiles:
        out += [f"### Profile: {p['title']}", ""]
        if p.get("error"):
            out += [f"Profile not taken: {p['error']}", ""]
            continue
        if p["kind"] == "ort":
            for prof in p["ort"]:
                out += [f"`{prof['file']}`, batch {p['batch']}: {prof['wall_ms_per_run']} ms per run "
                        f"({prof['kernel_ms_per_run']} ms in kernels), by operator type:", "",
                        "| operator | ms per run | share % |", "|---|---:|---:|"]
                out += [f"| {op} | {ms} | {pct} |" for op, ms, pct in prof["ops"]] + [""]
            continue
        s = p["pyspy"]
        rec = p["record"]
        busy = 100.0 * cpus
        if rec.get("server_cpu_pct") is not None and rec["server_cpu_pct"] < 0.7 * busy:
            out += [f"The service used {rec['server_cpu_pct']} % CPU of the {busy:.0f} % the cores offer: it was "
                    "waiting more than computing (batching window, thread hand-offs, the event loop) or, on a busy "
                    "machine, kept off the cores by other processes; the shares below are of the CPU it did use.", ""]
        out += [f"py-spy on the service's processes while `zoo bench` ran {rec['key']} for {rec['wall_s']:.0f} s "
                f"({rec['requests_per_s']} req/s while sampled; server CPU {rec['server_cpu_pct']} %, "
                f"client CPU {rec['client_cpu_pct']} %, items per model call {rec.get('mean_batch')}). "
                f"{s['samples']} active samples; share of them by stage of the request path:", "",
                "| stage | share of server CPU samples % |", "|---|---:|"]
        out += [f"| {k} | {v} |" for k, v in s["stages"].items()]
        out += ["", "Top functions by own (self) time:", "", "| function (file) | share % |", "|---|---:|"]
        out += [f"| `{k}` | {v} |" for k, v in s["self"]] + [""]
    return out


def gpu_section(gpu: dict | None) -> list[str]:
    if not gpu:
        return ["Not run: this machine has no GPU. On a machine with one NVIDIA GPU, `bash benchmarks/gpu.sh` "
                "(under 5 minutes) writes `docs/bench/gpu.json` and `docs/bench/gpu.md`; the next `make bench` "
                "includes them here.", ""]
    head = (f"Device: **{gpu['device']}**; run {gpu['date']}; {gpu.get('note', '')} "
            f"Models are randomly initialised (speed does not depend on the weights).")
    return [head, "", *engine_tables(gpu), ""]


def _origins(models: list[dict]) -> list[str]:
    rand = [m["name"] for m in models if m["origin"] == "random init"]
    quick = [m["name"] for m in models if m["origin"] != "random init"]
    out = []
    if rand:
        out.append(f"{', '.join(rand)}: **randomly initialised** models of the real architecture, exported with the "
                   "real exporter (no data for them here, e.g. CIFAR-10 cannot be downloaded; labels are placeholders). "
                   "They serve the timing parts only: speed does not depend on the weights.")
    if quick:
        out.append(f"{', '.join(quick)}: trained by the quick recipes (`python -m export.bootstrap --quick`).")
    out.append("transfer-resnet18 (224x224 inputs, ~1.8 GFLOPs per image) is left out of the CPU run: it has no data "
               "here and would take most of the time budget on 2 cores; `benchmarks/gpu.sh` measures it.")
    return [" ".join(out)]


def portable(command: str, results: dict[str, Any]) -> str:
    """A command as anyone can rerun it from the repository root: no absolute paths of the machine that
    ran it (its venv, its work and data directories) and no port numbers."""
    for m in results.get("models", []):
        command = command.replace(str(Path(m["checkpoint"]).parents[2]), "<work>")  # <work>/checkpoints/<family>/x.pt
    command = re.sub(r"\S*/bin/(python3?|bentoml)\b", r"\1", command)
    command = re.sub(r"--data-dir \S+", "--data-dir $DATA_DIR", command)
    return re.sub(r"--port \d+", "--port PORT", command)


def render(results: dict[str, Any], out_md: Path, plots: dict[str, Path]) -> str:
    m = results["machine"]
    rel = {k: os.path.relpath(v, out_md.parent) for k, v in plots.items()}
    lines = [
        "# Benchmarks", "",
        f"Generated by `{results['command']}` on {m['date']} in {results['wall_s']:.0f} s "
        f"({'quick mode: seconds per point, for development only' if results['quick'] else 'full run'}). "
        "All figures below come from this one run, so the ratios compare like with like.", "",
    ]
    if m["load_avg"][0] > 0.5 * m["usable_cpus"]:
        lines += [f"> **The machine was busy when this run started** (load average {m['load_avg'][0]} on "
                  f"{m['usable_cpus']} CPUs: other jobs were running), so these figures are noisy; rerun "
                  "`make bench` on a quiet machine for figures to quote.", ""]
    v = m["versions"]
    lines += [
        "## Machine", "",
        f"- CPU: {m['cpu']}, {m['usable_cpus']} usable of {m['logical_cpus']} logical CPUs; memory {m['memory_gib']} GiB; "
        f"load average at start {m['load_avg']}, at end {results.get('load_avg_end')}",
        f"- {m['os']}, Python {m['python']}",
        "- " + ", ".join(f"{k} {val}" for k, val in v.items()), "",
        "## Commands", "",
        f"- this document: `{portable(results['command'], results)}`",
        *[f"- models: `{portable(c, results)}`" for c in results["store_commands"]],
        *[f"- {s['server']} server: `{portable(s['command'], results)}`"
          for s in {s["server"]: s for s in reversed(results.get("http", {}).get("starts", []))}.values()],
        *([f"- load: {load_command(results['http'])}"] if "http" in results else []), "",
        "## Models", "",
        "| model | store tag | weights | eager weights from |", "|---|---|---|---|",
        *[f"| {x['name']} | `{x['tag']}` | {x['origin']} | `{Path(x['checkpoint']).name}` |" for x in results["models"]], "",
        *_origins(results["models"]), "",
        "## Targets", "",
        "| target | figures | ratio | bound | verdict |", "|---|---|---:|---|---|",
        *[f"| {t['name']} | {t['measured']} | {_f(t['ratio'], 2)} | {t['bound']} | "
          f"{'**met**' if t['met'] else t['verdict'] if t['met'] is None else '**' + t['verdict'] + '**'} |"
          for t in results["targets"]], "",
    ]
    if results.get("profiles"):
        lines += ["Missed targets are profiled below (section *Profiles*).", ""]
    if "engine" in results:
        e = results["engine"]
        lines += ["## 1. In-process engine (no HTTP)", "",
                  f"{e['threads']} intra-op threads (the service's default: the cores of its worker). Each point: "
                  f"{e['budget']['warmup_calls']} untimed calls, then at least {e['budget']['min_calls']} calls and "
                  f"{e['budget']['point_s']} s. Runtimes open the store entry's files with the service's own "
                  "`service.core.runtime.load_session`; `eager` is the checkpoint's `nn.Module`.", "",
                  f"![engine]({rel['engine']})", "", *engine_tables(e)]
    if "http" in results:
        generator = ("`wrk` (C, one thread, requests pre-formatted by benchmarks/loadgen.lua, one connection per "
                     "simulated user, closed loop)" if results["http"].get("generator") == "wrk" else
                     "`zoo bench` (clients/bench.py: one aiohttp connection per simulated user, pre-encoded bodies, "
                     "closed loop)")
        lines += ["## 2-3. Over HTTP: the service vs naive FastAPI servers", "",
                  "service: `bentoml serve service.app:ModelZoo` with its defaults (one worker per core, "
                  "ONNX Runtime fp32 on CPU, adaptive batching); service-int8: the same with "
                  "`MODEL_ZOO_PRECISION=int8`. naive-ort: `benchmarks/baselines/naive_ort_server.py`, FastAPI, one "
                  "process, one request at a time, the service's own `model.onnx` and preprocessing, so the ratio "
                  "over it is what the service adds beyond the runtime. naive: `benchmarks/baselines/naive_server.py`, "
                  "FastAPI + eager PyTorch from the checkpoint, one request at a time. One server runs at a time; "
                  "the order reverses every level; each point follows an untimed warm-up run. The load generator "
                  f"is {generator}. `client CPU %` is the load generator's own use (100 % = "
                  "one core), `server CPU %` the server's process tree over the same window (200 % = both cores). "
                  "Errors are answers other than 2xx (a 503 is the batcher shedding load) and are not counted "
                  "in the throughput.", "",
                  f"![throughput]({rel['http_throughput']})", "", f"![latency]({rel['http_latency']})", "",
                  *http_table(results["http"]), ""]
    if results.get("profiles"):
        lines += ["## Profiles", "", *profile_sections(results["profiles"], m["usable_cpus"])]
    lines += ["## GPU", "", *gpu_section(results.get("gpu"))]
    text = "\n".join(lines).rstrip() + "\n"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    return text
