"""Export: checkpoint -> TorchScript + ONNX (+fp16, +int8), verified, registered in the BentoML store.

Entry points: ``python -m export CHECKPOINT ...`` and ``export.pipeline.export_checkpoint``.
This package file stays import-light (no torch, no bentoml) so the error type and the
format names can be used anywhere.
"""

from __future__ import annotations

from zoo.entry import FORMAT_FILES

FORMATS = tuple(FORMAT_FILES)  # every format the exporter can produce, in the order they are built


class ExportError(RuntimeError):
    """An export that cannot be produced or that failed verification; the message names the problem."""


def default_formats(task: str) -> list[str]:
    """All formats, except fp16 for the forecaster: a 16-unit RNN gains nothing from fp16, and ONNX
    Runtime 1.31's CPU provider crashes (SIGSEGV) loading an fp16 LSTM/GRU/RNN graph with its default
    optimisation level, so a CPU service that picked it up would die. It can still be asked for."""
    return [f for f in FORMATS if not (task == "forecast" and f == "onnx-fp16")]


def parse_formats(formats: str | list[str] | tuple[str, ...] | None, task: str = "classification") -> list[str]:
    """``"torchscript,onnx"`` or a list -> validated list in canonical order; None -> the defaults.

    The quantised ONNX variants are derived from the fp32 graph, so asking for one of them
    implies ``onnx`` (it is built and shipped too: the service needs the fp32 graph as the
    reference and the fallback).
    """
    if formats is None:
        return default_formats(task)
    items = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else [str(f).strip() for f in formats]
    items = [f for f in items if f]
    if not items:
        raise ExportError(f"no formats given; choose from {', '.join(FORMATS)}")
    unknown = [f for f in items if f not in FORMAT_FILES]
    if unknown:
        raise ExportError(f"unknown format(s) {', '.join(map(repr, unknown))}; choose from {', '.join(FORMATS)}")
    wanted = set(items)
    if wanted & {"onnx-fp16", "onnx-int8"}:
        wanted.add("onnx")
    return [f for f in FORMATS if f in wanted]
