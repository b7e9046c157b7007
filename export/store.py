"""Registration in the BentoML model store, and the model card.

One export = one versioned BentoML model (``bentoml.models.create``) holding every verified file.
All files are produced and verified in a staging directory first; only then is the model created
and the files copied in. ``bentoml.models.create`` (1.4.40) builds the model in a temporary
directory and saves it into the store only when the ``with`` block exits without an exception, so
a failure while copying leaves nothing in the store either (tests check ``bentoml models list``).
The store location is BentoML's own: ``$BENTOML_HOME/models`` (default ``~/bentoml``), read when
bentoml first resolves it in the process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from export import FORMAT_FILES, ExportError
from export.tasks import TASKS
from zoo.families import FAMILIES, InvalidName, check_model_name
from zoo.spec import Spec


def check_name(name: str) -> str:
    """A store name the service can route (zoo/families.py: no '.', unlike BentoML's own rule)."""
    try:
        return check_model_name(name)
    except InvalidName as exc:
        raise ExportError(str(exc)) from None


def _without_none(data: Any) -> Any:
    """BentoML metadata rejects None; every None in a spec is a field default, so dropping the key
    round-trips (``Spec.from_dict(metadata["spec"]) == spec``)."""
    if isinstance(data, dict):
        return {k: _without_none(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_without_none(v) for v in data]
    return data


def register(name: str, spec: Spec, formats: list[str], opset: int, stage: Path) -> str:
    """Create the store entry from the staged files; returns the tag, e.g. ``my-flowers:abc123``."""
    import bentoml

    labels = {"family": spec.family, "task": spec.task}
    metadata = {
        "spec": _without_none(json.loads(spec.to_json())),  # lists, not tuples: written as YAML
        "formats": list(formats),
        "opset": int(opset),
    }
    files = sorted(p for p in stage.iterdir() if p.is_file())
    try:
        with bentoml.models.create(name, labels=labels, metadata=metadata) as model:
            for f in files:
                shutil.copy2(f, model.path_of(f.name))
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"could not register {name!r} in the BentoML model store: {exc}") from exc
    return str(model.tag)


def model_card(name: str, spec: Spec, ckpt: dict[str, Any], formats: list[str], table: str,
               n_params: int | None = None) -> str:
    """README.md stored with the model: what it is (its config and size), its data, its metrics, its parity."""
    cfg = ckpt["config"]
    train = cfg.get("train") or {}
    metrics = ckpt.get("metrics") or {}
    data = FAMILIES[spec.family].data if spec.family in FAMILIES else spec.family
    task = TASKS[spec.task]
    if task.data_from_dir and train.get("data_dir"):
        data += f", from `{train['data_dir']}`"
    io = task.card_io(spec)
    metric_lines = "\n".join(  # scalars only: per-epoch history lives in metrics.json / TensorBoard
        f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}"
        for k, v in metrics.items() if isinstance(v, (int, float, str))
    )
    files = "\n".join(f"- `{FORMAT_FILES[f]}` ({f})" for f in formats)
    return (
        f"# {name}\n\n"
        f"Family `{spec.family}` ({spec.task}), exported from a training checkpoint "
        f"(epoch {ckpt.get('epoch')}).\n\n"
        f"## Model and data\n\n- model config `{json.dumps(cfg.get('model') or {}, sort_keys=True)}`"
        f"{f', {n_params:,} parameters' if n_params is not None else ''}\n{io}"
        f"- data: {data}\n\n"
        f"## Training metrics (from the checkpoint)\n\n{metric_lines or '- none recorded'}\n\n"
        f"## Files\n\n{files}\n- `spec.json` (the preprocessing contract), `report.json` (below, as data)\n\n"
        f"## Parity and accuracy of the artifacts (validation data, CPU)\n\n```\n{table}\n```\n"
    )
