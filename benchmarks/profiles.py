"""Where the time goes, for a missed target: py-spy stacks of the service, ONNX Runtime's op profile.

- ``summarise_pyspy``: py-spy's raw (collapsed) stacks -> samples per process, per stage of the
  request path (``STAGES``: the first matching frame of a stack, innermost first, decides) and the top
  functions by self time. Only active samples are recorded (py-spy skips idle threads by default), so
  shares are of the CPU the server burnt, not of wall time.
- ``ort_op_profile``: ONNX Runtime's own profiler (``SessionOptions.enable_profiling``) over a few
  runs at one batch size -> milliseconds per run by operator type (e.g. ``Conv`` vs ``QLinearConv``
  vs ``QuantizeLinear``), which shows why int8 is or is not faster than fp32.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# (stage, frame substrings): a sample's stage is that of its innermost frame matching any substring.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model inference (runtime.run)", ("onnxruntime/", "service/core/runtime.py", "torch/jit")),
    ("decode + preprocess (PIL, numpy)", ("service/core/preprocess.py", "PIL/")),
    ("softmax / top-k / JSON response", ("service/core/classifier.py", "json/", "pydantic", "_bentoml_sdk/io_models")),
    ("multipart parsing (uploads)", ("multipart", "formparsers", "service/http/uploads.py")),
    ("adaptive batcher (dispatcher)", ("marshal/dispatcher", "service/core/batching.py")),
    ("BentoML middlewares: metrics, tracing, logging", ("prometheus", "opentelemetry", "logging/", "bentoml/_internal/server/http/")),
    ("HTTP server + event loop (uvicorn, h11, starlette, asyncio)", ("uvicorn", "h11", "starlette", "asyncio", "anyio", "httptools")),
)
OTHER = "other"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short(path: str) -> str:
    """site-packages/onnxruntime/x.py -> onnxruntime/x.py; /repo/service/x.py -> service/x.py."""
    for marker in ("site-packages/", "/lib/python3", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return re.sub(r"^\.?\d+/", "", path)


def parse_stack(line: str) -> tuple[list[str], int] | None:
    stack, _, count = line.rstrip().rpartition(" ")
    if not stack or not count.isdigit():
        return None
    return stack.split(";"), int(count)


def summarise_pyspy(path: Path, top: int = 12) -> dict[str, Any]:
    """Raw py-spy output -> {"samples", "processes": {name: n}, "stages": {stage: share}, "self": [(func, share)]}."""
    processes: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    selftime: Counter[str] = Counter()
    total = 0
    for line in Path(path).read_text(errors="replace").splitlines():
        parsed = parse_stack(line)
        if parsed is None:
            continue
        frames, n = parsed
        total += n
        if frames and frames[0].startswith("process "):
            proc = frames.pop(0)
            processes["bentoml worker" if "_bentoml_impl" in proc or "worker" in proc else proc[:60]] += n
        names = []
        for fr in frames:
            m = _FRAME.match(fr.strip())
            names.append((m.group("func"), _short(m.group("file"))) if m else (fr.strip(), ""))
        stage = OTHER
        for func, file in reversed(names):  # innermost first
            hit = next((s for s, keys in STAGES if any(k in file for k in keys)), None)
            if hit is not None:
                stage = hit
                break
        stages[stage] += n
        if names:
            func, file = names[-1]
            selftime[f"{func} ({file})"] += n
    share = (lambda c: round(100.0 * c / total, 1)) if total else (lambda c: 0.0)
    return {
        "samples": total,
        "processes": dict(processes.most_common()),
        "stages": {k: share(v) for k, v in stages.most_common()},
        "self": [(k, share(v)) for k, v in selftime.most_common(top)],
    }


def ort_op_profile(model_path: Path, feeds: dict[str, np.ndarray], threads: int, out_dir: Path, runs: int = 3,
                   top: int = 8) -> dict[str, Any]:
    """ms per run by ONNX operator type, from ORT's profiler (CPU EP, the service's thread setting).

    The first run (allocations) is left out: kernel events before the end of the first ``model_run``.
    """
    import onnxruntime as ort

    out_dir.mkdir(parents=True, exist_ok=True)
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(out_dir / f"ort_{model_path.stem.replace('.', '_')}")
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        sess.run(None, feeds)
    events = json.loads(Path(sess.end_profiling()).read_text())
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    cutoff = model_runs[0]["ts"] + model_runs[0]["dur"] if model_runs else 0
    by_op: Counter[str] = Counter()
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time") and ev.get("ts", 0) >= cutoff:
            by_op[ev.get("args", {}).get("op_name", "?")] += ev.get("dur", 0)  # microseconds
    total = sum(by_op.values()) or 1
    rows = [(op, round(us / runs / 1000.0, 2), round(100.0 * us / total, 1)) for op, us in by_op.most_common(top)]
    wall = [e["dur"] for e in model_runs[1:]]
    return {"file": model_path.name, "runs": runs, "kernel_ms_per_run": round(total / runs / 1000.0, 2),
            "wall_ms_per_run": round(float(np.mean(wall)) / 1000.0, 2) if wall else None, "ops": rows}
