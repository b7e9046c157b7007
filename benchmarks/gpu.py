"""The in-process tables for GPU runtimes (run by ``benchmarks/gpu.sh`` on a machine with one NVIDIA GPU).

Every family, randomly initialised (speed does not depend on the weights, and a GPU box may have no
datasets), exported with the project's exporter (``export.pipeline.build_artifacts``: TorchScript, ONNX
fp32, ONNX fp16 with float32 IO; parity is export's own tests' job) into a temporary directory, then measured with the same
``benchmarks.engine`` loop as the CPU tables:

| runtime | what |
| --- | --- |
| eager-fp32 / eager-fp16 | the ``nn.Module`` on the device (fp16: ``.half()`` weights and inputs) |
| torchscript-fp32 / -fp16 | ``model.ts`` loaded on the device (fp16: the loaded module ``.half()``) |
| ort-cuda-fp32 / ort-cuda-fp16 | ``model.onnx`` / ``model.fp16.onnx`` on ONNX Runtime's CUDA provider |
| ort-tensorrt-fp16 | ``model.onnx`` on the TensorRT provider with fp16 enabled (when libnvinfer loads) |

Inputs start on the host and outputs come back to it (as the service does), so every call is
synchronous. ``--cpu`` runs the same code on the CPU (eager, TorchScript, ORT CPU) to check it
where there is no GPU. A time budget stops early and says so, rather than losing everything.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.engine import Budget, Target, eager_session, engine_rows
from service.config import Settings, worker_cores
from service.core.runtime import Session, cuda_device_count, io_names, tensorrt_loadable
from zoo.families import list_families

FAMILIES = tuple(list_families())
IMAGE_MAX_BATCH = 64  # TensorRT optimisation profile: batches 1..64


def build_target(family: str, root: Path) -> Target:
    """Random-init model of ``family`` -> its exported files in ``root/family``."""
    import torch

    from benchmarks.store import random_checkpoint, random_samples
    from export.pipeline import build_artifacts, model_from_checkpoint

    ckpt = random_checkpoint(family, root / f"{family}.pt")
    _, model, spec = model_from_checkpoint(ckpt, family=family)
    formats = ["torchscript", "onnx"] + ([] if spec.task == "forecast" else ["onnx-fp16"])
    out = root / family
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        build_artifacts(model, spec, formats, out, random_samples(family, 8)[0])
    (out / "spec.json").write_text(spec.to_json())
    return Target(family, spec, out, model)


def _ort_session(target: Target, artifact: str, provider: Any) -> Session | str:
    import onnxruntime as ort

    inputs, outputs = io_names(target.spec)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
        sess = ort.InferenceSession(str(target.model_dir / artifact), opts, providers=providers)
    except Exception as exc:  # noqa: BLE001 - a provider that cannot load is a row note
        return f"{artifact}: {str(exc).strip().splitlines()[0][:160]}"
    wanted = provider[0] if isinstance(provider, tuple) else provider
    used = sess.get_providers()[0]
    if used != wanted:
        return f"{wanted} not used (ONNX Runtime fell back to {used})"

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(outputs, sess.run(outputs, {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()})))

    return Session("onnx", artifact, used, inputs, outputs, run)


def _torchscript(target: Target, device: str, half: bool) -> Session:
    import torch

    inputs, outputs = io_names(target.spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(target.model_dir / "model.ts"), map_location=device).eval()
    module = module.half() if half else module
    dtype = torch.float16 if half else torch.float32

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n], np.float32)).to(device, dtype) for n in inputs]
        with torch.inference_mode():
            out = module(*args)
        out = out if isinstance(out, (tuple, list)) else (out,)
        return {n: t.float().cpu().numpy() for n, t in zip(outputs, out)}

    return Session("torchscript", "model.ts", f"torch:{device}", inputs, outputs, run)


def sessions_for(target: Target, device: str, trt_cache: Path) -> dict[str, Session | str]:
    out: dict[str, Session | str] = {}
    halves = (False, True) if device == "cuda" else (False,)
    for half in halves:
        tag = "fp16" if half else "fp32"
        for name, make in ((f"eager-{tag}", lambda h=half: eager_session(target.module, target.spec, device, h)),
                           (f"torchscript-{tag}", lambda h=half: _torchscript(target, device, h))):
            try:
                out[name] = make()
            except Exception as exc:  # noqa: BLE001 - e.g. an op without a half kernel: a note, not a crash
                out[name] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
    if device != "cuda":
        out["ort-cpu-fp32"] = _ort_session(target, "model.onnx", "CPUExecutionProvider")
        return out
    out["ort-cuda-fp32"] = _ort_session(target, "model.onnx", "CUDAExecutionProvider")
    if (target.model_dir / "model.fp16.onnx").is_file():
        out["ort-cuda-fp16"] = _ort_session(target, "model.fp16.onnx", "CUDAExecutionProvider")
    if target.spec.task == "forecast":
        out["ort-tensorrt-fp16"] = "not measured: the recurrent step graph has state inputs (no TensorRT profile here)"
    elif tensorrt_loadable():
        shape = "x".join(map(str, target.spec.image.input_shape()))
        opts = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(trt_cache),
                "trt_profile_min_shapes": f"input:1x{shape}", "trt_profile_opt_shapes": f"input:{IMAGE_MAX_BATCH}x{shape}",
                "trt_profile_max_shapes": f"input:{IMAGE_MAX_BATCH}x{shape}"}
        out["ort-tensorrt-fp16"] = _ort_session(target, "model.onnx", ("TensorrtExecutionProvider", opts))
    else:
        out["ort-tensorrt-fp16"] = "TensorRT libraries (libnvinfer) not found"
    return out


def check_sessions(target: Target, sessions: dict[str, Session | str]) -> dict[str, float]:
    """Run each session once at batch 2 against eager-fp32: a runtime that fails becomes a note (not a
    crash mid-run), and the others get their max |difference| from eager fp32 (fp16 shows its rounding)."""
    from benchmarks.engine import example_feeds

    feeds = example_feeds(target.spec, 2, np.random.default_rng(0))
    ref = sessions.get("eager-fp32")
    want = ref.run(feeds) if isinstance(ref, Session) else None
    diffs = {}
    for name, sess in list(sessions.items()):
        if isinstance(sess, str):
            continue
        try:
            got = sess.run(feeds)
        except Exception as exc:  # noqa: BLE001
            sessions[name] = f"fails at run time: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
            continue
        if want is not None:
            diffs[name] = float(max(np.abs(got[k] - want[k]).max() for k in want))
    return diffs


def device_name(device: str) -> str:
    if device != "cuda":
        import platform

        return f"CPU fallback ({platform.processor() or 'cpu'}, {worker_cores()} cores): a code-path check, not GPU figures"
    import torch

    return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__}, CUDA {torch.version.cuda})"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.splitlines()[0])
    p.add_argument("--cpu", action="store_true", help="run the same code on the CPU (no GPU here)")
    p.add_argument("--quick", action="store_true", help="seconds per model, not minutes")
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--out-dir", default=str(Path(__file__).resolve().parents[1] / "docs" / "bench"))
    p.add_argument("--budget-s", type=float, default=270.0, help="stop measuring after this many seconds")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and cuda_device_count() == 0:
        print("gpu: error: no CUDA device found (run with --cpu to check the code path on the CPU)", file=sys.stderr)
        return 2
    try:
        import onnxruntime as ort

        if device == "cuda" and hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA/cuDNN from the pip wheels torch brought, when the system has none
    except Exception as exc:  # noqa: BLE001
        print(f"gpu: warning: onnxruntime.preload_dlls failed: {exc}", file=sys.stderr)
    budget = Budget.quick() if args.quick else Budget(point_s=0.5, min_calls=5, warmup_calls=3)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    settings = Settings(threads=worker_cores())
    rows, skipped, diffs, stopped = [], {}, {}, None
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        for family in families:
            if time.monotonic() - t0 > args.budget_s:
                stopped = f"time budget of {args.budget_s:.0f} s reached before {family}"
                break
            target = build_target(family, Path(tmp))
            sess = sessions_for(target, device, Path(tmp) / "trt-cache")
            diffs[family] = check_sessions(target, sess)
            batches = (1, 8, 64)
            r, s = engine_rows(target, sess, budget, settings, batches=batches, pipeline_batches=(1, 32))
            rows += [x.to_dict() for x in r]
            if s:
                skipped[family] = s
    result = {"device": device_name(device), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "note": (f"Stopped early: {stopped}." if stopped else "") + f" Wall time {time.monotonic() - t0:.0f} s.",
              "threads": settings.threads, "rows": rows, "skipped": skipped, "max_abs_diff_vs_eager_fp32": diffs,
              "quick": args.quick}
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = "gpu" if device == "cuda" else "gpu-cpu-fallback"
    (out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    from benchmarks.report import engine_tables

    checks = [f"- {fam}: max abs difference from eager fp32 at batch 2: "
              + ", ".join(f"{rt} {d:.1e}" for rt, d in ds.items()) for fam, ds in diffs.items()]
    (out / f"{name}.md").write_text(f"# GPU runtimes: {result['device']}\n\n{result['note']}\n\n"
                                    + "\n".join(engine_tables(result) + ["", *checks]) + "\n")
    print(f"wrote {out / name}.json and .md ({result['note'].strip()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
