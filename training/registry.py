"""The training side of each family, registered by its recipe module next to the code it names.

Like torchvision's ``register_model`` (``torchvision/models/_api.py``): each recipe in
training/recipes/ ends with one ``register_training(TrainingFamily(...))`` call naming its model
builder and config, its spec builder, its ``main`` and its data hooks, and every other table is
derived from these entries: ``build_model``/``model_config`` (training/models.py), ``make_spec``
(training/specs.py), ``python -m training FAMILY``, ``data_available``/``eval_samples``
(training/data.py), the bootstrap's data source and export's int8 bound. ``get_training`` and
``list_training`` are the only doors; the first call imports every module of training/recipes/ and
the plugins named in ``$MODEL_ZOO_FAMILIES`` (zoo/families.py ``load_plugins``).

A training entry needs the family's serving facts (``zoo.families.register_family``) first: the
service, which never imports training, learns the family from those alone.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from zoo.families import FAMILIES, UnknownFamily, get_family, load_plugins
from zoo.spec import Spec


@dataclass(frozen=True)
class BootstrapPlan:
    """What ``python -m export.bootstrap`` trains a family from."""

    data_dir: str | None  # None: no data source configured; ``missing`` says how to give one
    extra: tuple[str, ...] = ()  # more ``python -m training`` arguments
    missing: str | None = None


def _shared_data(args: argparse.Namespace) -> BootstrapPlan:
    return BootstrapPlan(args.data_dir)


def _always_available(data_dir: Path) -> str | None:
    return None


@dataclass(frozen=True)
class TrainingFamily:
    name: str
    config: type  # the model's config dataclass, saved as plain data in the checkpoint
    builder: Callable[[Any], Any]  # config -> nn.Module (logits or the raw regression value out)
    spec: Callable[..., Spec]  # keyword arguments -> the spec its checkpoints carry
    main: Callable[[Any], dict[str, Any]]  # the recipe: argv list or Namespace -> {"checkpoint", "metrics"}
    # (checkpoint dict, n, data_dir) -> n held-out inputs exactly as the model takes them, and their targets
    eval_samples: Callable[[dict[str, Any], int, str], tuple[Any, Any]]
    data_available: Callable[[Path], str | None] = _always_available  # None, or what is missing and how to get it
    bootstrap: Callable[[argparse.Namespace], BootstrapPlan] = _shared_data  # export.bootstrap's source
    int8_bounded: bool = False  # export holds its int8 copy to export/verify.py's accuracy bound


_TRAINING: dict[str, TrainingFamily] = {}
_discovered = False


def register_training(entry: TrainingFamily) -> TrainingFamily:
    """Add a family's training entry; its serving facts must be registered (zoo.families) first."""
    get_family(entry.name)  # UnknownFamily names the known ones
    known = _TRAINING.get(entry.name)
    if known is not None:
        # the same recipe file imported twice (``python -m training.recipes.x`` runs it as __main__ too)
        if known.main.__code__.co_filename == entry.main.__code__.co_filename:
            return known
        raise ValueError(f"family {entry.name!r} has a training entry already (in {known.main.__module__})")
    _TRAINING[entry.name] = entry
    return entry


def _discover() -> None:
    """Import every recipe module (each registers its family) and the plugins, once."""
    global _discovered
    if not _discovered:
        _discovered = True
        import training.recipes as recipes

        for module in pkgutil.iter_modules(recipes.__path__):
            importlib.import_module(f"{recipes.__name__}.{module.name}")
    load_plugins()


def list_training() -> list[str]:
    """Trainable families, in the family table's order."""
    _discover()
    return [name for name in FAMILIES if name in _TRAINING]


def get_training(name: str) -> TrainingFamily:
    _discover()
    try:
        return _TRAINING[name]
    except KeyError:
        raise UnknownFamily(f"unknown model family {name!r}; choose one of {', '.join(list_training())}") from None
