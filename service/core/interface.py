"""The served-model interface: what every protocol (REST, the Open Inference Protocol) calls.

One request's path, in public names (like LitServe's ``LitAPI``)::

    payload = await READERS[model.payload](request)    # REST body, parsed by the HTTP edge within the caps
    item    = await model.decode(payload)              # -> model input; a 4xx naming the problem
    output  = await model.predict(item)                # batched with other requests where the kind batches
    answer  = model.encode(item, output)               # -> the JSON-able answer

    feeds   = await model.decode_tensors(infer)        # OIP tensors -> model input
    results = await model.predict_tensors(feeds)       # -> output tensors by name
    rows    = model.classification(name, value, k)     # OIP's classification extension, where it applies

plus ``tensor_metadata`` (OIP model metadata), ``warmup`` and ``close``. The kinds are the image
classifier (service/core/classifier.py) and the forecaster (service/core/forecaster.py);
service/core/served.py picks one from the spec's task. Nothing else asks which kind a model is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from service.config import Settings
from service.core.runtime import Session
from service.errors import BadRequest
from zoo.families import Decoder
from zoo.spec import Spec

Tensors = dict[str, np.ndarray]


@dataclass
class Loaded:
    """What every served model is made of: its name, store tag and path, spec and session."""

    name: str
    tag: str
    path: Path
    spec: Spec
    session: Session

    @property
    def version(self) -> str:
        return self.tag.split(":", 1)[-1]

    def describe(self) -> str:
        return (f"{self.tag} ({self.spec.family}): {self.session.runtime} {self.session.artifact} on {self.session.provider}")


class ServedModel(ABC):
    """One stored model served under its store name, behind every protocol."""

    verb: ClassVar[str]  # the per-model REST route's last segment: /models/{name}/{verb}
    payload: ClassVar[Decoder]  # how the HTTP edge parses that route's body (zoo/families.py)

    def __init__(self, loaded: Loaded, settings: Settings) -> None:
        self.name = loaded.name
        self.tag = loaded.tag
        self.version = loaded.version
        self.path = loaded.path
        self.spec = loaded.spec
        self.session = loaded.session
        self.settings = settings

    # ------------------------------------------------------------------ REST

    @abstractmethod
    async def decode(self, payload: Any) -> Any:
        """A parsed request (or the ``ServiceError`` its parser made) -> the model's input."""

    @abstractmethod
    async def predict(self, item: Any) -> Any:
        """The model's output for one decoded request."""

    @abstractmethod
    def encode(self, item: Any, output: Any) -> Any:
        """The JSON-able answer."""

    # ------------------------------------------------------------------ Open Inference Protocol

    @abstractmethod
    def tensor_metadata(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """OIP model metadata: the input and output tensors (name, datatype, shape; -1 is any size)."""

    @abstractmethod
    async def decode_tensors(self, request: Any) -> Any:
        """A parsed OIP infer request (service/http/oip_codec.py ``InferRequest``) -> the model's input."""

    @abstractmethod
    async def predict_tensors(self, feeds: Any) -> Tensors:
        """Output tensors by name."""

    def classification(self, output: str, value: np.ndarray, k: Any) -> list[list[dict[str, Any]]]:
        """OIP's classification extension (``k`` as the client sent it): per item the k best
        ``{"label", "index", "score"}``."""
        raise BadRequest(f"output {output!r}: the classification extension applies to image models only")

    # ------------------------------------------------------------------ lifecycle

    @abstractmethod
    async def warmup(self, rounds: int, min_seconds: float) -> None:
        """Run the model until its first slow calls are behind it (before it is routed to)."""

    def close(self) -> None:
        """Release what the model holds once its last request is answered (unload or replacement)."""
