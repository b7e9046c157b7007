"""Verification: every artifact against eager PyTorch on real validation inputs.

fp32 (TorchScript, ONNX): ``torch.testing.assert_close`` (rtol 1e-3, atol 1e-5) at batch sizes 1 and 7
(neither is the size the graphs were traced/exported at: 2), and on all samples top-1 identical
(classifiers) or every output within the same tolerance (the RNN, which has no top-1).
fp16/int8: top-1 agreement with eager and accuracy (classifiers) or MSE on the next value (RNN); only
a family whose training entry says ``int8_bounded`` (the MNIST MLP) holds int8 to a bound (at most
0.5 accuracy points lost). An fp16 graph that the CPU
execution provider cannot run is reported as skipped, not failed: it is meant for the GPU.
Failures are collected, so the report shows every problem at once; the caller raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from export import ExportError
from export.artifacts import serving_module
from export.parity import ATOL, PARITY_BATCHES, RTOL, Reference, close
from export.runners import Runner, cpu_load_failure, jit_load, ort_runner, run_all, torch_runner
from export.tasks import TASKS
from zoo.entry import io_names
from zoo.errors import first_line
from zoo.spec import Spec

INT8_MAX_DROP = 0.5  # accuracy points
INT8_MIN_ACCURACY = 50.0  # percent: the bound applies to a model that has learned something


def _max_diff(actual: list[np.ndarray], expected: list[np.ndarray]) -> float:
    return float(max(np.abs(a.astype(np.float64) - e).max() for a, e in zip(actual, expected)))


def verify(
    model: nn.Module, spec: Spec, files: dict[str, Path], inputs: np.ndarray, targets: np.ndarray
) -> dict[str, Any]:
    """Compare each artifact in ``files`` (format -> path) with eager; returns the report dict.

    ``report["failures"]`` lists every failed check (empty when all passed).
    """
    task = TASKS[spec.task]
    in_names, out_names = io_names(spec)
    eager = torch_runner(serving_module(model, spec))
    reference = run_all(eager, spec, inputs)
    report: dict[str, Any] = {
        "samples": int(len(inputs)),
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "parity_batches": list(PARITY_BATCHES),
        "formats": {"eager": {"status": "reference", **task.quality(reference, targets)}},
        "failures": [],
    }
    ref = Reference(spec, eager, inputs, reference, out_names, report["formats"]["eager"])
    failures: list[str] = report["failures"]
    for fmt, path in files.items():
        row: dict[str, Any] = {"file": path.name}
        report["formats"][fmt] = row
        try:
            if fmt == "torchscript":
                run = torch_runner(jit_load(path))
            elif fmt == "onnx-fp16":  # meant for CUDA; probe the CPU EP in a child first (see runners.py)
                run = _fp16_cpu_runner(path, in_names, row)
                if run is None:
                    continue
            else:
                run = ort_runner(path, in_names)
        except ExportError:
            raise
        except Exception as exc:
            loader = "torch.jit" if fmt == "torchscript" else "ONNX Runtime"
            raise ExportError(f"{path.name}: cannot be loaded by {loader}: {first_line(exc)}") from exc
        outputs = run_all(run, spec, inputs)
        row.update(task.quality(outputs, targets))
        row["max_abs_diff"] = _max_diff(outputs, reference)
        row.update(task.agreement(outputs, reference))
        problems = _check(fmt, run, outputs, row, ref)
        row["status"] = "ok" if not problems else "FAILED"
        failures += [f"{fmt}: {p}" for p in problems]
    return report


def _fp16_cpu_runner(path: Path, in_names: list[str], row: dict[str, Any]) -> Runner | None:
    """The fp16 graph on the CPU EP at the highest optimisation level that loads it; None = skipped."""
    crash = cpu_load_failure(path)
    if crash is None:
        return ort_runner(path, in_names)
    if cpu_load_failure(path, "ORT_ENABLE_EXTENDED") is None:
        row["note"] = f"{crash}; verified at ORT_ENABLE_EXTENDED, which loads it"
        return ort_runner(path, in_names, level="ORT_ENABLE_EXTENDED")
    row["status"] = f"skipped: {crash}"
    return None


def _check(fmt: str, run: Runner, outputs: list[np.ndarray], row: dict[str, Any], ref: Reference) -> list[str]:
    """Problems of one format's ``outputs`` against eager (fills ``row`` with the drop it shows)."""
    problems: list[str] = []
    task = TASKS[ref.spec.task]
    if fmt in ("torchscript", "onnx"):  # fp32: must match eager
        for b in PARITY_BATCHES:
            x = ref.inputs[:b]
            got, want = run(task.model_inputs(ref.spec, x)), ref.eager(task.model_inputs(ref.spec, x))
            if (msg := close(got, want, ref.out_names)) is not None:
                problems.append(f"batch {b} differs from eager beyond rtol {RTOL}/atol {ATOL}: {msg}")
        problems += task.fp32_problems(run, outputs, row, ref)  # on all samples: top-1, or every output
    if fmt in ("onnx-fp16", "onnx-int8"):  # reported for every family, bounded where its entry says int8_bounded
        row.update(task.reduced_precision(row, ref.row))
    if fmt == "onnx-int8" and _int8_bounded(ref.spec.family):
        drop = row["accuracy_drop"]
        if ref.row["accuracy"] < INT8_MIN_ACCURACY:  # an untrained MLP: accuracy is chance, the drop noise
            row["note"] = f"int8 drop not bounded: eager accuracy {ref.row['accuracy']:.1f}% is an untrained model's"
        elif drop > INT8_MAX_DROP:
            problems.append(f"int8 loses {drop:.2f} accuracy points on {ref.spec.family} (limit {INT8_MAX_DROP})")
    return problems


def _int8_bounded(family: str) -> bool:
    """The family's training entry asks for the int8 bound (training/registry.py ``int8_bounded``)."""
    from training.registry import get_training

    try:
        return get_training(family).int8_bounded
    except KeyError:  # a spec of a family this checkout cannot train: report, do not bound
        return False


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width table of the report, one row per format."""
    forecast = any("mse" in r for r in report["formats"].values())
    cols = ["format", "status", "max|diff| vs eager", "mse" if forecast else "top-1 agree %", "" if forecast else "accuracy %"]
    rows = [cols]
    for fmt, r in report["formats"].items():
        diff = f"{r['max_abs_diff']:.2e}" if "max_abs_diff" in r else "-"
        if forecast:
            rows.append([fmt, r.get("status", ""), diff, f"{r['mse']:.5f}" if "mse" in r else "-", ""])
        else:
            agree = f"{r['top1_agreement']:.2f}" if "top1_agreement" in r else "-"
            acc = f"{r['accuracy']:.2f}" if "accuracy" in r else "-"
            rows.append([fmt, r.get("status", ""), diff, agree, acc])
    notes = [f"{row[0]}: {row[1]}" for row in rows[1:] if row[1].startswith("skipped")]
    notes += [f"{fmt}: {r['note']}" for fmt, r in report["formats"].items() if r.get("note")]
    for row in rows[1:]:
        row[1] = "skipped" if row[1].startswith("skipped") else row[1]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    lines.append(f"({report['samples']} validation samples; fp32 tolerance rtol {RTOL}, atol {ATOL})")
    return "\n".join(lines + notes + [f"FAILED {f}" for f in report["failures"]])
