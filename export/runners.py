"""Running an artifact: eager / TorchScript / ONNX Runtime behind one ``Runner`` signature.

A runner maps the graph's inputs (numpy, in contract order) to its outputs (numpy, in contract
order). ONNX Runtime runs on the CPU execution provider: that is what this machine and CI have.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from torch import nn

from export import ExportError
from export.tasks import TASKS
from zoo.spec import Spec

CHUNK = 64  # samples per forward pass over the validation set

Runner = Callable[[list[np.ndarray]], list[np.ndarray]]


def torch_runner(module: nn.Module) -> Runner:
    """Eager or TorchScript module -> runner over numpy inputs; outputs always a list."""

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs))
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [o.numpy() for o in out]

    return run


def ort_runner(path: Path, input_names: list[str], level: str = "ORT_ENABLE_ALL") -> Runner:
    """ONNX Runtime, CPU execution provider, at graph optimisation ``level`` (ORT's default: ALL)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; shape-hint warnings are not failures
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if names != input_names:
        raise ExportError(f"{path.name}: inputs are {names}, the contract says {input_names}")

    def run(inputs: list[np.ndarray]) -> list[np.ndarray]:
        return session.run(None, {n: np.ascontiguousarray(a, dtype=np.float32) for n, a in zip(names, inputs)})

    return run


_PROBE = (
    "import sys, onnxruntime as ort\n"
    "o = ort.SessionOptions()\n"
    "o.graph_optimization_level = getattr(ort.GraphOptimizationLevel, sys.argv[2])\n"
    "ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])\n"
)


def cpu_load_failure(path: Path, level: str = "ORT_ENABLE_ALL") -> str | None:
    """Create an ORT CPU session for ``path`` in a child process; None if that works, else why not.

    A child, because ORT 1.31 does not raise on an fp16 LSTM/GRU/RNN graph: at the default
    ``ORT_ENABLE_ALL`` level its CPU provider dies with SIGSEGV while optimising the graph
    (``ORT_ENABLE_EXTENDED`` loads and runs it), which would take the exporter down with it.
    """
    try:
        proc = subprocess.run([sys.executable, "-I", "-c", _PROBE, str(path), level],
                              capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return f"ONNX Runtime's CPU execution provider did not load it within 300 s at {level}"
    if proc.returncode == 0:
        return None
    ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node} & {"LSTM", "GRU", "RNN"})
    reason = "crashed (SIGSEGV)" if proc.returncode == -signal.SIGSEGV else f"failed (exit {proc.returncode})"
    what = f" (fp16 {'/'.join(ops)})" if ops else ""
    tail = (proc.stderr.strip().splitlines() or [""])[-1][:160]
    return f"ONNX Runtime {ort_version()} CPU EP {reason} loading it{what} at {level}" + (f": {tail}" if tail else "")


def ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def jit_load(path: Path) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated" (torch 2.14)
        return torch.jit.load(str(path), map_location="cpu")


def run_all(run: Runner, spec: Spec, x: np.ndarray) -> list[np.ndarray]:
    """Forward the whole sample set in chunks; concatenate along the batch axis of each output."""
    model_inputs = TASKS[spec.task].model_inputs  # the RNN gets a zero initial state
    parts = [run(model_inputs(spec, x[i : i + CHUNK])) for i in range(0, len(x), CHUNK)]
    batch_axis = [0] + [1] * (len(parts[0]) - 1)  # y: (N, T, 1); states: (layers, N, hidden)
    return [np.concatenate([p[k] for p in parts], axis=ax) for k, ax in enumerate(batch_axis)]
