"""Checkpoints are plain dicts, never pickled modules.

Format (every key always present; ``optimizer``/``scheduler`` may be None):
    model      state_dict of the model
    optimizer  optimizer state_dict (for --resume)
    scheduler  LR scheduler state_dict or None
    epoch      last finished epoch (int, 1-based)
    config     {"family": str, "model": asdict(model config), "train": vars(args) made JSON-able}
    spec       zoo.spec.Spec.to_dict()
    metrics    {"val_loss": ..., "val_acc"/"val_mse": ..., "test_...": ...}
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from zoo.spec import Spec, SpecError

REQUIRED_KEYS = ("model", "optimizer", "scheduler", "epoch", "config", "spec", "metrics")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not have the expected content."""


def not_a_checkpoint(path: Path, why: str) -> CheckpointError:
    """One line: what ``path`` is not, why, and what a checkpoint holds."""
    return CheckpointError(f"{path}: not a model zoo checkpoint: {why}; a checkpoint is the plain dict "
                           f"`python -m training` writes (checkpoints/FAMILY/best.pt) of tensors and plain data "
                           f"under {', '.join(REQUIRED_KEYS)}")


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write atomically: a crash mid-save never leaves a truncated best.pt behind."""
    missing = [k for k in REQUIRED_KEYS if k not in checkpoint]
    if missing:
        raise CheckpointError(f"refusing to save a checkpoint without {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, family: str | None = None) -> dict[str, Any]:
    """Load with ``weights_only=True`` (no arbitrary unpickling) and check the contract.

    ``family``, when given, must match the checkpoint's; the error names both.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":  # torch.save has written zip files since PyTorch 1.6
            raise not_a_checkpoint(path, "not a file torch.save wrote")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False, i.e. running whatever the file holds: never relayed
        found = re.findall(r"GLOBAL ([\w.]+)", str(exc))
        raise not_a_checkpoint(path, "it holds pickled Python objects" + (f" ({found[0]})" if found else "")
                               + ": refused to load, since unpickling them could run any code") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - a damaged file can fail the unpickler in many ways
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(ckpt, dict):
        raise not_a_checkpoint(path, f"it holds a {type(ckpt).__name__}, not a dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        bare = ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values())
        raise not_a_checkpoint(path, f"missing keys {missing}" + (" (a bare state_dict?)" if bare else ""))
    try:
        Spec.from_dict(ckpt["spec"])
    except SpecError as exc:
        raise CheckpointError(f"{path}: invalid spec: {exc}") from exc
    found = ckpt["config"].get("family")
    if family is not None and found != family:
        raise CheckpointError(f"{path}: checkpoint is for family {found!r}, expected {family!r}")
    return ckpt


def checkpoint_spec(ckpt: dict[str, Any]) -> Spec:
    return Spec.from_dict(ckpt["spec"])
