"""The BentoML model store as the service sees it: look up, list, read a spec, check an entry.

Serving a bento, BentoML points its model store at the bento's own, so the same calls find the
models the bento packed. The lookup of one entry by tag, ``get_entry``, is in zoo/entry.py (export uses it too).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zoo.errors import first_line
from zoo.families import FAMILIES
from zoo.spec import Spec


@dataclass(frozen=True)
class BrokenEntry:
    """A store entry BentoML cannot read (a corrupt or crafted ``model.yaml``): listed, never served."""

    name: str
    version: str
    reason: str  # names the file


def scan_store() -> tuple[list[Any], list[BrokenEntry]]:
    """Every readable stored model (every version, by name), and every entry that cannot be read: one
    corrupt ``model.yaml`` made ``bentoml.models.list()`` (the index, the UI, start-up) fail as a whole."""
    import bentoml

    from service.adapters import model_store_dir

    root = model_store_dir()
    entries, broken = [], []
    if not root.is_dir():
        return entries, broken
    for name_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for version_dir in sorted(p for p in name_dir.iterdir() if p.is_dir()):
            info = version_dir / "model.yaml"
            try:
                mode = os.stat(info).st_mode
                if not stat.S_ISREG(mode):  # a FIFO would block BentoML's read for ever
                    raise ValueError("not a regular file")
                entries.append(bentoml.models.get(f"{name_dir.name}:{version_dir.name}"))
            except Exception as exc:  # noqa: BLE001 - YAML, schema, tag and OS errors alike
                broken.append(BrokenEntry(name_dir.name, version_dir.name,
                                          f"{info}: unreadable store entry, not served: {first_line(exc)}"))
    return entries, broken


def list_entries() -> list[Any]:
    """Every readable stored model, every version (unreadable ones: ``scan_store``)."""
    return scan_store()[0]


def latest_entries(entries: list[Any] | None = None) -> dict[str, Any]:
    """name -> its newest stored version (by creation time), sorted by name: what start-up serves."""
    latest: dict[str, Any] = {}
    for entry in list_entries() if entries is None else entries:
        name = entry.tag.name
        if name not in latest or entry.creation_time > latest[name].creation_time:
            latest[name] = entry
    return dict(sorted(latest.items()))


def read_spec(entry: Any) -> Spec:
    """The entry's spec: ``spec.json`` when present, else the copy in its BentoML metadata."""
    spec_file = Path(entry.path) / "spec.json"
    if spec_file.is_file():
        return Spec.from_json(spec_file.read_text())
    return Spec.from_dict(entry.info.metadata["spec"])


def entry_family(entry: Any) -> str | None:
    """The family a stored model declares (its ``family`` label), None for other BentoML models."""
    return (entry.info.labels or {}).get("family")


def check_entry(entry: Any, runtime: str, precision: str) -> str | None:
    """Why this stored model cannot be served (spec, family, graph), or None when it would load."""
    from service.core.runtime import load_session

    tag, path = str(entry.tag), Path(entry.path)
    labelled = entry_family(entry)
    try:
        spec = read_spec(entry)
    except Exception as exc:  # noqa: BLE001 - unreadable JSON, a SpecError, a missing metadata key
        return f"model {entry.tag.name!r} ({tag}): {path / 'spec.json'}: unreadable spec: {first_line(exc)}"
    family = FAMILIES.get(spec.family)
    if family is None:
        return (f"model {entry.tag.name!r} ({tag}): unknown family {spec.family!r} in its spec; "
                f"this server knows {', '.join(FAMILIES)}")
    if labelled is not None and labelled != spec.family:
        return (f"model {entry.tag.name!r} ({tag}): labelled family {labelled!r} (model.yaml) but "
                f"{path / 'spec.json'} describes a {spec.family!r} model")
    if entry.tag.name in FAMILIES and entry.tag.name != spec.family:  # the family's own name: its alias route
        return f"model {entry.tag.name!r} ({tag}): the store entry holds a {spec.family!r} model ({path / 'spec.json'})"
    if spec.task != family.task:
        return f"model {entry.tag.name!r} ({tag}): its spec says task {spec.task!r}, a {family.name} has {family.task!r}"
    try:
        load_session(path, spec, runtime, precision, 1)
    except Exception as exc:  # noqa: BLE001 - RuntimeLoadError names the file; anything else too
        return f"model {entry.tag.name!r} ({tag}): {first_line(exc)}"
    return None
