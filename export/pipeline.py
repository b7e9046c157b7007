"""``export_checkpoint``: checkpoint -> verified artifacts -> one BentoML model. Used by the CLI and bootstrap.

Steps: load the checkpoint (``weights_only``) and rebuild the model from its config; take real
validation inputs (``training.data.eval_samples``); write every format into a staging directory;
verify them all against eager; write ``spec.json``, ``report.json`` and ``README.md``; only then
register. Any failure raises ``ExportError`` (or ``CheckpointError``) and leaves the store untouched.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from export import FORMAT_FILES, ExportError, parse_formats
from export.artifacts import OPSET, export_onnx, export_torchscript
from export.quantize import to_fp16, to_int8
from export.store import check_name, model_card, register
from export.tasks import TASKS
from export.verify import format_table, verify
from zoo.errors import first_line
from zoo.spec import Spec
from training.checkpoint import load_checkpoint
from training.models import MODELS, build_model

EVAL_SAMPLES = 512  # validation samples for top-1 parity and the accuracy figures
CALIBRATION_SAMPLES = 128  # of those, used to calibrate static int8 (ResNets)


def model_from_checkpoint(checkpoint_path: str | Path,
                          family: str | None = None) -> tuple[dict[str, Any], torch.nn.Module, Spec]:
    """Checkpoint -> (checkpoint dict, eval-mode model with its weights, spec)."""
    ckpt = load_checkpoint(checkpoint_path, family=family)
    spec = Spec.from_dict(ckpt["spec"])
    found = ckpt["config"].get("family")
    if found not in MODELS:
        raise ExportError(f"{checkpoint_path}: unknown model family {found!r}; known: {', '.join(MODELS)}")
    if spec.family != found:
        raise ExportError(f"{checkpoint_path}: config says family {found!r} but the spec says {spec.family!r}")
    try:
        model = build_model(found, ckpt["config"].get("model") or {})
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise ExportError(f"{checkpoint_path}: the weights do not fit a {found} model: {first_line(exc)}") from exc
    return ckpt, model.eval(), spec


def validation_samples(ckpt: dict[str, Any], spec: Spec, n: int, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Real preprocessed validation inputs and targets, shaped as the exported graph takes them.

    Images: (n, C, H, W) or (n, C*H*W) for the MLP, targets (n,) class indices.
    RNN: x (n, T, 1) and the next-value targets (n, T, 1).
    """
    from training.data import DataError, eval_samples

    try:
        inputs, targets = eval_samples(ckpt, n=n, data_dir=data_dir)
    except DataError as exc:  # MissingDataError names the folder searched and how to get the data
        raise ExportError(f"no validation data to verify against: {exc}") from exc
    if len(inputs) == 0:
        raise ExportError(f"no validation data to verify against: the {spec.family} validation split is empty")
    x = torch.as_tensor(inputs).float()
    y = torch.as_tensor(targets)
    x, y = TASKS[spec.task].shape_samples(spec, x, y)
    return x.numpy(), y.numpy()


def build_artifacts(model, spec: Spec, formats: list[str], stage: Path, calibration: np.ndarray) -> dict[str, Path]:
    """Write each requested format into ``stage``; returns format -> path (fp32 ONNX first: the others derive from it)."""
    files: dict[str, Path] = {}
    if "torchscript" in formats:
        files["torchscript"] = export_torchscript(model, spec, stage / FORMAT_FILES["torchscript"])
    if "onnx" in formats:
        files["onnx"] = export_onnx(model, spec, stage / FORMAT_FILES["onnx"])
    if "onnx-fp16" in formats:
        files["onnx-fp16"] = to_fp16(files["onnx"], stage / FORMAT_FILES["onnx-fp16"], spec)
    if "onnx-int8" in formats:
        files["onnx-int8"] = to_int8(files["onnx"], stage / FORMAT_FILES["onnx-int8"], spec, calibration)
    return files


def export_checkpoint(
    checkpoint_path: str | Path,
    name: str | None = None,
    formats: str | list[str] | None = None,
    data_dir: str | None = None,
    out_dir: str | Path | None = None,
    samples: tuple[np.ndarray, np.ndarray] | None = None,
    family: str | None = None,
    echo: Callable[[str], None] = print,
) -> str:
    """Export, verify and register one checkpoint; returns the BentoML tag (``name:version``).

    ``formats``: comma string or list (default: all). ``data_dir``: where the validation data is
    (default: the one recorded in the checkpoint). ``out_dir``: also keep a copy of the verified
    files there. ``samples``: ``(inputs, targets)`` to verify on instead of reading the data
    (already preprocessed, as ``validation_samples`` returns them). ``family``: refuse a
    checkpoint of another family.
    """
    parse_formats(formats)  # an unknown format fails before any work is done
    ckpt, model, spec = model_from_checkpoint(checkpoint_path, family=family)
    fmts = parse_formats(formats, TASKS[spec.task].formats)
    name = check_name(name or spec.family)
    if name in MODELS and name != spec.family:
        # The service serves a family's own name on its alias route: another family's model there would break it.
        raise ExportError(f"name {name!r} belongs to the {name} family, but {checkpoint_path} is a {spec.family} checkpoint")
    inputs, targets = samples if samples is not None else validation_samples(ckpt, spec, EVAL_SAMPLES, data_dir)
    inputs, targets = np.asarray(inputs, dtype=np.float32), np.asarray(targets)
    echo(f"exporting {checkpoint_path} ({spec.family}) as {name!r}: {', '.join(fmts)}; verifying on {len(inputs)} samples")
    with tempfile.TemporaryDirectory(prefix=f"export-{name}-") as tmp:
        stage = Path(tmp)
        files = build_artifacts(model, spec, fmts, stage, inputs[:CALIBRATION_SAMPLES])
        report = verify(model, spec, files, inputs, targets)
        report.update(family=spec.family, name=name, checkpoint=str(checkpoint_path), opset=OPSET,
                      torch=torch.__version__, epoch=ckpt.get("epoch"))
        table = format_table(report)
        echo(table)
        (stage / "spec.json").write_text(spec.to_json() + "\n")
        (stage / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        n_params = sum(p.numel() for p in model.parameters())
        (stage / "README.md").write_text(model_card(name, spec, ckpt, fmts, table, n_params))
        if out_dir is not None:
            dest = Path(out_dir)
            dest.mkdir(parents=True, exist_ok=True)
            for f in stage.iterdir():
                shutil.copy2(f, dest / f.name)
        if report["failures"]:
            raise ExportError(f"verification failed for {name}: " + " | ".join(report["failures"]))
        tag = register(name, spec, fmts, OPSET, stage)
    echo(f"registered {tag}")
    return tag
