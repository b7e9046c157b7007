"""The fp32 serving artifacts: TorchScript and ONNX, with the tensor names of docs/contracts.md.

Exporter choice: ``torch.onnx.export(..., dynamo=False)`` (the TorchScript-based exporter), for
every family, chosen explicitly. Measured here on torch 2.14: for the sine RNN it emits one ONNX
``LSTM``/``GRU``/``RNN`` node with ``batch`` and ``seq`` dynamic on inputs *and* outputs. The dynamo
exporter (``dynamo=True``) unrolled the plain-RNN cell into per-step MatMuls with the sequence
length fixed to the traced one (a 5-step graph rejects an 11-step history) and left the LSTM/GRU
output ``y`` annotated with the traced length. For the image models both exporters give clean
graphs; one exporter for all keeps the artifacts uniform. The dynamo path also defaults to an
external-data file, which the contract forbids (one self-contained file).

TorchScript: ``torch.jit.script`` for the image models (no data-dependent Python, so the scripted
graph is the model); the RNN step wrapper is traced, because ``SineRNN.forward`` takes a variadic
state tuple that TorchScript cannot type, and its only branches depend on the config, not on the
data. The trace is checked against eager at other batch and sequence sizes (``check_inputs``).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from export import ExportError
from export.tasks import TASKS
from zoo.entry import io_names
from zoo.errors import first_line
from zoo.spec import Spec

OPSET = 17  # >= 17 per the contract; the newest opset every ORT quantiser/fp16 tool here handles


def serving_module(model: nn.Module, spec: Spec) -> nn.Module:
    """The module whose signature the artifacts carry: the model itself, or the RNN step wrapper."""
    return TASKS[spec.task].serving_module(model.eval(), spec)


def export_torchscript(model: nn.Module, spec: Spec, path: Path) -> Path:
    """Write a TorchScript file that ``torch.jit.load`` alone can run (no training code needed)."""
    module = serving_module(model, spec)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)  # "torch.jit.script is deprecated": still the
        # only way to a file that runs without Python model code (torch.export's .pt2 needs torch._export)
        scripted = TASKS[spec.task].to_torchscript(module, spec)
    # The spec rides along as an extra file: torch.jit.load(path, _extra_files={"spec.json": ""}) reads it.
    scripted.save(str(path), _extra_files={"spec.json": spec.to_json()})
    return path


def export_onnx(model: nn.Module, spec: Spec, path: Path) -> Path:
    """fp32 ONNX: named IO, dynamic batch (and seq), opset 17, one file, checked, spec in metadata."""
    module = serving_module(model, spec)
    task = TASKS[spec.task]
    inputs, outputs = io_names(spec)
    with torch.no_grad(), warnings.catch_warnings():
        # The legacy-exporter deprecation notice and tracer notes are expected (see module docstring).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            task.example_inputs(spec, 2),
            str(path),
            dynamo=False,
            input_names=inputs,
            output_names=outputs,
            dynamic_axes=task.dynamic_axes(spec),  # batch everywhere; the RNN's sequence axis too
            opset_version=OPSET,
            do_constant_folding=True,  # folds eval-mode BatchNorm into the convolutions
        )
    stamp_metadata(path, spec)
    check_onnx(path, full=True)
    return path


def stamp_metadata(path: Path, spec: Spec) -> None:
    """Put the spec JSON (and the family) in the graph's ``metadata_props`` (quantisers drop them)."""
    model = load_onnx(path)
    props = {p.key: p.value for p in model.metadata_props}
    props.update(spec=spec.to_json(), family=spec.family)
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        model.metadata_props.add(key=key, value=value)
    onnx.save_model(model, str(path))


def load_onnx(path: Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, OSError, ...
        raise ExportError(f"{Path(path).name}: not a readable ONNX model (corrupt or truncated?): {exc}") from exc


def check_onnx(path: Path, full: bool = True) -> None:
    """``onnx.checker`` (with shape inference when ``full``): a clear ExportError on failure."""
    try:
        onnx.checker.check_model(str(path), full_check=full)
    except Exception as exc:  # ValidationError, InferenceError, DecodeError
        raise ExportError(f"{Path(path).name}: failed onnx.checker: {first_line(exc)}") from exc
