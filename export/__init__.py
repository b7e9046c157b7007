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


def parse_formats(formats: str | list[str] | tuple[str, ...] | None, defaults: tuple[str, ...] = FORMATS) -> list[str]:
    """``"torchscript,onnx"`` or a list -> validated list in canonical order; None -> ``defaults`` (all, or
    the task's: export/tasks.py, where the forecaster leaves out fp16).

    The quantised ONNX variants are derived from the fp32 graph, so asking for one of them
    implies ``onnx`` (it is built and shipped too: the service needs the fp32 graph as the
    reference and the fallback).
    """
    if formats is None:
        return list(defaults)
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
