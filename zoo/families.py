"""The model families: the torch-free serving facts of each, registered once, next to the spec contract.

Training, export, the service, the clients and the benchmarks ask this table what families exist,
what task each has, which route serves the model stored under the family's own name, how its
requests are decoded, which demo panel the browser page shows for it, and what a user must do to
get one. ``FAMILIES``, ``get_family`` and ``list_families`` are the only doors; ``register_family``
adds an entry. Standard library only: a torch-free serving image imports it.

The training side of a family (model builder, config, spec builder, recipe, data hooks) registers in
training/registry.py, from the family's recipe module. Adding a family touches its model, its recipe
(with its ``register_training`` call) and one ``register_family`` entry: here for the built-in ones,
or in a plugin module of your own.

Plugins: ``MODEL_ZOO_FAMILIES=module[:function],...`` names modules that register more families.
``load_plugins()`` imports each (and calls ``function`` when given); the service, ``python -m
training`` and ``python -m export`` call it at start, so a family registered in a plugin reaches
every process, a ``bentoml serve`` worker included. A plugin the service imports must be torch-free
(a ``register_family`` call); one that training and export import also calls ``register_training``.

A *stored model* is served under its store name (``my-flowers``); its family comes from its spec
(``spec.family``), so several models of one family can be served side by side.
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import dataclass
from typing import Literal

from zoo.datadir import TRANSFER_DATA_RULE
from zoo.spec import Task

Decoder = Literal["images", "history"]  # multipart image files / JSON {"history", "steps"}
Panel = Literal["digit", "photo", "forecast"]  # the browser demo's input: draw a digit / drop a photo / plot a forecast
PLUGINS_ENV = "MODEL_ZOO_FAMILIES"


# What a task is at the HTTP edge: the per-model route's last segment (``/models/{name}/classify``)
# and the demo panel a family of that task gets unless it names its own.
VERBS: dict[str, str] = {"classification": "classify", "forecast": "forecast"}
DEFAULT_PANELS: dict[str, Panel] = {"classification": "photo", "forecast": "forecast"}


@dataclass(frozen=True)
class Family:
    name: str
    task: Task
    route: str  # the REST alias for the model stored under the family's own name
    decoder: Decoder
    summary: str  # one line for route docs and listings
    data: str  # what it trains and is verified on (model card)
    how_to_get: str  # the command that puts one in the store (missing-model answers)
    panel: Panel | None = None  # the demo's input panel; None: the task's default (DEFAULT_PANELS)

    def __post_init__(self) -> None:
        if self.panel is None:
            object.__setattr__(self, "panel", DEFAULT_PANELS[self.task])

    @property
    def verb(self) -> str:
        """The per-model route's last segment: ``/models/{name}/classify`` or ``/models/{name}/forecast``."""
        return VERBS[self.task]


# In the order make serve trains missing ones: the quick families first (register_family keeps order).
FAMILIES: dict[str, Family] = {}


class FamilyError(ValueError):
    """A registration that contradicts the table (a name or route taken), or a plugin that cannot be loaded."""


def register_family(family: Family) -> Family:
    """Add ``family`` to the table; registering the same entry again is a no-op (a module imported twice)."""
    known = FAMILIES.get(family.name)
    if known is not None:
        if known != family:
            raise FamilyError(f"family {family.name!r} is registered already with other facts")
        return known
    taken = next((f.name for f in FAMILIES.values() if f.route == family.route), None)
    if taken is not None:
        raise FamilyError(f"family {family.name!r}: route /{family.route} belongs to {taken!r} already")
    FAMILIES[family.name] = family
    return family


_loaded: set[str] = set()


def load_plugins(spec: str | None = None) -> list[str]:
    """Import the modules named in ``$MODEL_ZOO_FAMILIES`` (``module[:function],...``) once each;
    returns the entries loaded by this call. A module that cannot be imported is a ``FamilyError``."""
    raw = os.environ.get(PLUGINS_ENV, "") if spec is None else spec
    done = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry or entry in _loaded:
            continue
        module, _, function = entry.partition(":")
        try:
            loaded = importlib.import_module(module)
            if function:
                getattr(loaded, function)()
        except (ImportError, AttributeError) as exc:
            raise FamilyError(f"{PLUGINS_ENV}: cannot load {entry!r} ({exc}); give importable "
                              "module[:function] entries, comma-separated") from exc
        _loaded.add(entry)
        done.append(entry)
    return done


for _family in (
    Family("mnist-mlp", "classification", "classify_digit", "images",
           "MNIST digit classifier: one result per uploaded image, in upload order",
           "MNIST (60k train / 10k test, torchvision IDX files); verified on the test split",
           "python -m training mnist-mlp --download", panel="digit"),
    Family("sine-rnn", "forecast", "forecast_sine", "history",
           "Autoregressive forecast of the next `steps` values after `history`",
           "synthetic sine windows; verified on windows from a seed training never used",
           "python -m training sine-rnn"),
    Family("cifar10-resnet18", "classification", "classify_cifar10", "images",
           "CIFAR-10 classifier (ResNet-18): one result per uploaded image",
           "CIFAR-10 (50k train / 10k test, cifar-10-batches-py); verified on the test split",
           "download CIFAR-10 into $DATA_DIR (python -m training cifar10-resnet18 --download)"),
    Family("transfer-resnet18", "classification", "classify_image", "images",
           "Transfer-learned classifier with its dataset's class names: one result per uploaded image",
           "an ImageFolder dataset (one folder per class); verified on its validation split",
           f"train it from {TRANSFER_DATA_RULE}, then python -m export checkpoints/transfer-resnet18/best.pt"),
):
    register_family(_family)


class UnknownFamily(KeyError):
    """A family name this code does not know; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


def list_families() -> list[str]:
    return list(FAMILIES)


def get_family(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamily(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}") from None


def family_for_route(route: str) -> Family | None:
    return next((f for f in FAMILIES.values() if f.route == route), None)


def first_family(task: Task) -> Family:
    """The first registered family of ``task``: the clients' default model for it."""
    return next(f for f in FAMILIES.values() if f.task == task)


# BentoML's tag rule (bentoml/_internal/tag.py, ``validate_tag_str``), restated by value so this module
# stays standard library only: a name or a version is 1-63 characters of lowercase letters, digits,
# '-', '_' and '.', starting *and ending* with a letter or digit. A name or version this module accepts
# must be one BentoML accepts, else its store lookup raises "Invalid Tag" and the client gets a 500
# (tests/test_repository_faults.py compares both rules on the edge cases).
TAG_MAX_LENGTH = 63
# Store names (a BentoML tag's name part) that the service can route: BentoML's rule without '.', which
# a URL path segment makes ambiguous ("..", file-like suffixes), so neither export nor the service accepts it.
MODEL_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?")
# A store version (a BentoML tag's version part, generated lowercase base32 by default): BentoML's rule.
MODEL_VERSION = re.compile(r"[a-z0-9](?:[a-z0-9_.-]{0,61}[a-z0-9])?")


class InvalidName(ValueError):
    """A model name or version that is not a valid store tag part; the message says the rule."""


def check_model_name(name: str) -> str:
    if not MODEL_NAME.fullmatch(name):
        raise InvalidName(f"invalid model name {name[:80]!r}: use lowercase letters, digits, '-' or '_', "
                          f"starting and ending with a letter or digit (at most {TAG_MAX_LENGTH} characters)")
    return name


def check_version(version: str) -> str:
    if version == "latest" or not MODEL_VERSION.fullmatch(version):
        raise InvalidName(f"invalid model version {version[:80]!r}: give a store version "
                          "(the part after ':' in `bentoml models list`), not 'latest': lowercase letters, "
                          f"digits, '-', '_' or '.', starting and ending with a letter or digit "
                          f"(at most {TAG_MAX_LENGTH} characters)")
    return version


def missing_model_message(name: str) -> str:
    """How to get a model that is not in the store (the 503 text of a family's alias route)."""
    family = FAMILIES.get(name)
    how = family.how_to_get if family else f"train and export a checkpoint with python -m export CHECKPOINT --name {name}"
    return (f"model {name!r} is not in the model store: {how}, then run make models (or python -m export "
            f"CHECKPOINT --name {name}) and load it (POST /v2/repository/models/{name}/load) or restart the service")
