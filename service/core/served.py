"""The one factory of served models: a stored model becomes the kind its spec's task names."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from service.config import Settings
from service.control.store import read_spec
from service.core.classifier import ImageClassifier
from service.core.forecaster import Forecaster
from service.core.interface import Loaded, ServedModel
from service.core.runtime import load_session

logger = logging.getLogger("model_zoo.models")

KINDS: dict[str, type[ServedModel]] = {"classification": ImageClassifier, "forecast": Forecaster}  # by spec.task


def build_served_model(name: str, stored: Any, settings: Settings) -> ServedModel:
    """A stored model (BentoML ``Model``) served as ``name`` -> a session created, not yet warmed up."""
    spec = read_spec(stored)
    session = load_session(Path(stored.path), spec, settings.runtime, settings.precision, settings.threads)
    loaded = Loaded(name, str(stored.tag), Path(stored.path), spec, session)
    logger.info("loaded %s", loaded.describe())
    return KINDS[spec.task](loaded, settings)
