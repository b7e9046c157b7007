"""Start-up check of the model store: refuse to serve a broken entry instead of half-starting.

Without it, a store entry whose ``model.onnx`` is missing or corrupt, or that holds another family's
model, lets ``bentoml serve`` start: ``/livez`` answers 200, ``/readyz`` stays 503 forever, and the
broken endpoint either answers 503 or (a wrong family) hits an assertion -- a half-ready server. An
exception in the worker does not help either: BentoML's arbiter restarts a crashing worker forever.

So ``check_or_exit()`` runs where ``bentoml serve`` imports the service (the arbiter process, before any
worker starts) and does what a worker would do with every entry it is asked to serve: read the spec,
check the family against the entry's name and labels, and create the runtime session with the
service's own loader. Any problem ends the process with status 1 and one line per broken model,
naming the model, its store tag and the file. ``MODEL_ZOO_MODELS`` set explicitly also makes a model
missing from the store an error (the operator asked for it); by default a missing family is a 503
that says how to add it, as before.

    python -m service.preflight     # the same check as a command (exit 0: every entry would load)

Wiring (service/service.py, after the imports, before the class body reads the settings)::

    check_or_exit()

``MODEL_ZOO_SKIP_PREFLIGHT=1`` turns it off (start anyway; broken models then answer 503).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from service.config import Settings
from service.spec import Spec


IMAGE_FAMILIES = ("mnist-mlp", "cifar10-resnet18", "transfer-resnet18")


class PreflightError(SystemExit):
    """Ends start-up with status 1; the message (one line per problem) is what gets printed."""

    def __init__(self, problems: list[str]) -> None:
        # A str code: Python prints it to stderr and exits with status 1 (setting code = 1 would
        # silence the message).
        super().__init__("model_zoo: cannot start:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


def in_worker() -> bool:
    """True in a BentoML worker process (``python -m _bentoml_impl.worker.service``): the arbiter
    already checked the store before starting it."""
    main = sys.modules.get("__main__")
    return "_bentoml_impl" in (getattr(main, "__spec__", None) and main.__spec__.name or "")


def check_entry(name: str, stored: Any, settings: Settings) -> str | None:
    """The problem with one stored model (BentoML ``Model``), or None when it would load."""
    from service.runtime import load_session

    tag = str(stored.tag)
    path = Path(stored.path)
    family = (stored.info.labels or {}).get("family")
    if family is not None and family != name:
        return f"model {name!r} ({tag}): the store entry holds a {family!r} model (labels in {path / 'model.yaml'})"
    spec_file = path / "spec.json"
    try:
        spec = Spec.from_json(spec_file.read_text()) if spec_file.is_file() else Spec.from_dict(stored.info.metadata["spec"])
    except Exception as exc:  # noqa: BLE001 - unreadable JSON, a SpecError, a missing metadata key
        return f"model {name!r} ({tag}): {spec_file}: unreadable spec: {_first_line(exc)}"
    if spec.family != name:
        return f"model {name!r} ({tag}): {spec_file} describes a {spec.family!r} model"
    expected_task = "classification" if name in IMAGE_FAMILIES else "forecast"
    if spec.task != expected_task:
        return f"model {name!r} ({tag}): {spec_file} says task {spec.task!r}, expected {expected_task!r}"
    try:
        load_session(path, spec, settings.runtime, settings.precision, 1)
    except Exception as exc:  # noqa: BLE001 - RuntimeLoadError names the file; anything else too
        return f"model {name!r} ({tag}): {_first_line(exc)}"
    return None


def check(settings: Settings, explicit: bool | None = None) -> list[str]:
    """Problems with every family this instance would serve (empty: all good)."""
    from service.registry import store_entry

    if explicit is None:
        explicit = bool(os.environ.get("MODEL_ZOO_MODELS", "").strip())
    problems = []
    for name in settings.models:
        try:
            stored = store_entry(name)
        except Exception as exc:  # noqa: BLE001 - a corrupt model.yaml makes the store lookup itself fail
            problems.append(f"model {name!r}: the model store entry cannot be read: {_first_line(exc)}")
            continue
        if stored is None:
            if explicit:
                problems.append(f"model {name!r} is named in MODEL_ZOO_MODELS but is not in the model store "
                                f"({os.environ.get('BENTOML_HOME', '~/bentoml')}/models)")
            continue
        problem = check_entry(name, stored, settings)
        if problem:
            problems.append(problem)
    return problems


def check_or_exit() -> None:
    """Raise ``PreflightError`` (exit status 1, one line per problem) unless the settings parse and
    every entry would load. Call it at import of the service module, before anything reads settings."""
    from service.config import ConfigError
    from service.uploads import settings

    try:
        current = settings()
    except ConfigError as exc:  # a malformed MODEL_ZOO_* variable: one line, not a 70-line traceback
        raise PreflightError([str(exc)]) from None
    if os.environ.get("MODEL_ZOO_SKIP_PREFLIGHT") == "1" or in_worker():
        return
    problems = check(current)
    if problems:
        raise PreflightError(problems)  # SystemExit: its message goes to stderr, status 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main() -> int:
    try:
        check_or_exit()
    except PreflightError as exc:
        print(exc.args[0], file=sys.stderr)
        return 1
    print("model store OK: every served model loads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
