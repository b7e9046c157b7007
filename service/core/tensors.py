"""Checks of a request's named tensors (OIP inputs, or any protocol's) against what a model takes;
each error names the tensor and what was expected."""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import BadRequest


def float_input(t: Any, expected: list[int]) -> np.ndarray:
    """An FP32 tensor (``.name``, ``.datatype``, ``.shape``, ``.value``) checked against an expected shape
    (-1 = any); the error names both."""
    if t.datatype != "FP32":
        raise BadRequest(f"input {t.name!r}: datatype must be FP32, got {t.datatype}")
    if len(t.shape) != len(expected) or any(e != -1 and e != s for e, s in zip(expected, t.shape)):
        raise BadRequest(f"input {t.name!r}: shape {t.shape} does not match {expected} (-1: any size)")
    if not np.isfinite(t.value).all():
        raise BadRequest(f"input {t.name!r}: contains NaN or infinite values")
    return t.value.astype(np.float32, copy=False)


def only_inputs(inputs: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(inputs) - allowed)
    if unknown:
        raise BadRequest(f"unknown input(s) {unknown}; this model takes {sorted(allowed)}")
