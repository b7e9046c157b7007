"""The spec: the one contract between training, export and the service.

Training writes a spec into every checkpoint; export copies it into the model store
(``spec.json``, BentoML metadata, ONNX ``metadata_props``); the service builds its
pre- and post-processing from it and from nothing else. It is plain JSON-able data
and this module imports nothing heavier than the standard library and numpy, so the
service (and a CPU container without torch) can use it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SPEC_VERSION = 1
# Labels travel in every classify answer and every index call parses every spec: bound both.
# 4096 classes: ImageNet-1k (1000) and an ImageFolder of a few thousand classes fit; ImageNet-21k does not.
MAX_LABELS = 4096
MAX_LABEL_CHARS = 256  # WordNet glosses (ImageNet's longest class names) stay under 130

Task = Literal["classification", "forecast"]


class SpecError(ValueError):
    """A spec that is missing fields or has inconsistent values."""


@dataclass(frozen=True)
class ImageSpec:
    """How an uploaded image becomes the model's input tensor.

    The service does: decode -> convert(color_mode) -> resize -> center-crop ->
    scale to [0, 1] -> (x - mean) / std -> layout. Training applies the same
    normalisation (torchvision ``Normalize(mean, std)`` on ``ToTensor`` output).
    """

    color_mode: Literal["L", "RGB"]
    height: int  # final input height, pixels
    width: int  # final input width, pixels
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    # Shorter side is resized to this before a center crop of (height, width);
    # None resizes straight to (height, width).
    resize_shorter: int | None = None
    # "NCHW" for conv nets; "NF" for an MLP that takes a flat (N, C*H*W) vector.
    layout: Literal["NCHW", "NF"] = "NCHW"

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "L" else 3

    def input_shape(self) -> list[int]:
        """Shape of one item, without the batch axis."""
        if self.layout == "NF":
            return [self.channels * self.height * self.width]
        return [self.channels, self.height, self.width]


@dataclass(frozen=True)
class SequenceSpec:
    """The autoregressive forecaster's contract: one value per time step."""

    cell: Literal["rnn", "lstm", "gru"]
    hidden_size: int
    num_layers: int = 1
    min_history: int = 1  # fewest points the service accepts to warm up the state
    max_history: int = 1000
    max_steps: int = 1000  # longest rollout the service accepts
    # The data the model was trained on, so a user knows what it can forecast.
    # angular frequency, rad per time unit; training always writes it (this default is the first recipe's band)
    freq_range: tuple[float, float] = (1.98, 2.02)
    amp_range: tuple[float, float] = (0.5, 1.5)
    dt: float = 0.1  # time between points

    @property
    def state_names(self) -> list[str]:
        return ["h", "c"] if self.cell == "lstm" else ["h"]


@dataclass(frozen=True)
class Spec:
    family: str  # a registered family's name (zoo/families.py)
    task: Task
    labels: tuple[str, ...] = ()  # class names in output index order
    image: ImageSpec | None = None
    sequence: SequenceSpec | None = None
    output: str = "logits"  # "logits" (softmax belongs to the service) or "next_value"
    version: int = field(default=SPEC_VERSION)

    def __post_init__(self) -> None:
        if self.task == "classification":
            if self.image is None or not self.labels:
                raise SpecError(f"{self.family}: a classification spec needs 'image' and 'labels'")
            self._check_labels()
            if len(self.image.mean) != self.image.channels or len(self.image.std) != self.image.channels:
                raise SpecError(f"{self.family}: mean/std need one value per channel ({self.image.channels})")
            if any(s <= 0 for s in self.image.std):
                raise SpecError(f"{self.family}: std must be positive, got {self.image.std}")
        elif self.task == "forecast":
            if self.sequence is None:
                raise SpecError(f"{self.family}: a forecast spec needs 'sequence'")
        else:
            raise SpecError(f"{self.family}: unknown task {self.task!r} (expected classification or forecast)")

    def _check_labels(self) -> None:
        if len(self.labels) > MAX_LABELS:
            raise SpecError(f"{self.family}: {len(self.labels)} labels, more than the limit of {MAX_LABELS}")
        for i, label in enumerate(self.labels):
            if not isinstance(label, str):
                raise SpecError(f"{self.family}: label {i} is a {type(label).__name__}, not a string")
            if len(label) > MAX_LABEL_CHARS:
                raise SpecError(f"{self.family}: label {i} has {len(label)} characters, more than the limit "
                                f"of {MAX_LABEL_CHARS} (labels[{i}] starts {label[:40]!r})")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Spec":
        try:
            data = dict(data)
            version = data.get("version", SPEC_VERSION)
            if version != SPEC_VERSION:
                raise SpecError(f"spec version {version} is not supported (this code reads {SPEC_VERSION})")
            image = data.pop("image", None)
            sequence = data.pop("sequence", None)
            labels = tuple(data.pop("labels", ()))
            return cls(
                labels=labels,
                image=_image_from_dict(image) if image else None,
                sequence=_sequence_from_dict(sequence) if sequence else None,
                **data,
            )
        except (TypeError, KeyError) as exc:
            raise SpecError(f"malformed spec: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> "Spec":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise SpecError(f"spec is not valid JSON: {exc}") from exc


def _image_from_dict(d: dict[str, Any]) -> ImageSpec:
    d = dict(d)
    d["mean"] = tuple(d["mean"])
    d["std"] = tuple(d["std"])
    return ImageSpec(**d)


def _sequence_from_dict(d: dict[str, Any]) -> SequenceSpec:
    d = dict(d)
    for key in ("freq_range", "amp_range"):
        if key in d:
            d[key] = tuple(d[key])
    return SequenceSpec(**d)
