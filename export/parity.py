"""What "the same as eager" means: the fp32 tolerances, the batch sizes they are checked at, and
eager's side of every comparison. verify.py and each task's checks (tasks.py) share it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from zoo.spec import Spec

if TYPE_CHECKING:
    from export.runners import Runner

RTOL, ATOL = 1e-3, 1e-5  # fp32 parity tolerances (contract; as timm/torchvision use)
PARITY_BATCHES = (1, 7)  # batch sizes other than the exported one (2)


def close(actual: list[np.ndarray], expected: list[np.ndarray], names: list[str]) -> str | None:
    """None when every output matches within the fp32 tolerances, else the first mismatch's message."""
    for name, a, e in zip(names, actual, expected):
        try:
            torch.testing.assert_close(torch.from_numpy(a), torch.from_numpy(e), rtol=RTOL, atol=ATOL)
        except AssertionError as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            return f"{name}: {'; '.join(lines[:3])}"
    return None


@dataclass(frozen=True)
class Reference:
    """Eager's side of every comparison: its runner, the samples, its outputs on them, its report row."""

    spec: Spec
    eager: Runner
    inputs: np.ndarray
    outputs: list[np.ndarray]
    out_names: list[str]
    row: dict[str, Any]
