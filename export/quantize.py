"""Reduced-precision ONNX variants, made with the tools that ship with ONNX Runtime.

- ``onnx-fp16`` (GPU serving): ``onnxruntime.transformers.float16.convert_float_to_float16`` with
  ``keep_io_types=True``, so callers still feed and read float32 under the same names.
- ``onnx-int8`` (CPU serving): ``onnxruntime.quantization``. Dynamic quantisation for the MLP and the
  RNN (weights int8 offline, activations quantised per batch at run time: right for MatMul/LSTM-bound
  graphs, no calibration needed). Static QDQ quantisation for the ResNets (convolutions need fixed
  activation scales), uint8 activations + int8 per-channel weights (U8S8), calibrated on validation
  inputs, after ORT's ``quant_pre_process`` (shape inference + graph optimisation so Conv/Relu/Add
  patterns are fused before the scales are chosen).

Why U8S8 (uint8 activations, int8 weights) and not S8S8, and why ``reduce_range`` is off: the
measurements and how to rerun them are in docs/quantization.md.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_dynamic,
    quantize_static,
)

from export import ExportError
from export.artifacts import check_onnx, load_onnx, stamp_metadata
from zoo.spec import Spec

CALIBRATION_BATCH = 16  # images per calibration batch; MinMax over 8 batches is stable for ResNets


def to_fp16(src: Path, dst: Path, spec: Spec) -> Path:
    """fp16 weights and compute, float32 IO (Cast nodes at the boundary), same tensor names."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = load_onnx(src)
    try:
        half = convert_float_to_float16(model, keep_io_types=True)
        # The converter appends the IO Cast nodes at the end of the node list; ORT copes, but the
        # ONNX spec (and onnx.checker) want nodes topologically sorted.
        OnnxModel(half).topological_sort()
    except Exception as exc:
        raise ExportError(f"{dst.name}: fp16 conversion failed: {exc}") from exc
    onnx.save_model(half, str(dst))
    stamp_metadata(dst, spec)
    check_onnx(dst, full=True)
    return dst


class ArrayCalibrationReader(CalibrationDataReader):
    """ORT ``CalibrationDataReader`` over an in-memory array of real, preprocessed inputs (N, C, H, W)."""

    def __init__(self, input_name: str, inputs: np.ndarray, batch: int = CALIBRATION_BATCH) -> None:
        self.input_name = input_name
        self.batches = [inputs[i : i + batch] for i in range(0, len(inputs), batch)]
        self.position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.batches):
            return None
        self.position += 1
        return {self.input_name: np.ascontiguousarray(self.batches[self.position - 1], dtype=np.float32)}

    def rewind(self) -> None:
        self.position = 0


def to_int8(src: Path, dst: Path, spec: Spec, calibration: np.ndarray | None = None) -> Path:
    """int8 ONNX with float32 IO. ``calibration`` (real inputs, (N, C, H, W)) is needed for static."""
    static = spec.image is not None and spec.image.layout == "NCHW"  # the ResNets
    load_onnx(src)  # a corrupt source is named as such, not reported as a quantiser failure
    logging.getLogger("root").setLevel(logging.WARNING)  # ORT's quantiser logs every node at INFO
    try:
        with tempfile.TemporaryDirectory(prefix="quant-pre-") as tmp:
            # ORT's pre-processing: symbolic shape inference + graph optimisation, so the quantiser
            # sees fused patterns and known shapes (it warns when this step is skipped).
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            if not static:
                # Weights int8 offline, activations uint8 per batch: ORT's CPU kernels' combination.
                quantize_dynamic(str(pre), str(dst), weight_type=QuantType.QInt8)
            else:
                if calibration is None or len(calibration) == 0:
                    raise ExportError(f"{dst.name}: static int8 quantisation needs calibration inputs")
                # U8S8 in QDQ form: the combination ORT's x86 CPU EP fuses every Conv of, into
                # QLinearConv (S8S8 left most Convs fp32: see the module docstring). Per-channel
                # weight scales keep conv accuracy.
                quantize_static(
                    str(pre),
                    str(dst),
                    ArrayCalibrationReader("input", calibration),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                )
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{dst.name}: int8 quantisation failed: {exc}") from exc
    stamp_metadata(dst, spec)
    check_onnx(dst, full=True)
    return dst
