"""What a model store entry holds, as export writes it and the service reads it (docs/contracts.md):
the file each format becomes, the tensor names of the graphs, and the lookup of an entry by tag
(export and the service share it). Standard library only; BentoML is imported when a lookup runs."""

from __future__ import annotations

from typing import Any, Callable

from zoo.spec import Spec

# Every format the exporter can produce, in the order they are built and reported -> its file in the entry.
FORMAT_FILES = {
    "torchscript": "model.ts",
    "onnx": "model.onnx",
    "onnx-fp16": "model.fp16.onnx",
    "onnx-int8": "model.int8.onnx",
}


def _image_io(spec: Spec) -> tuple[list[str], list[str]]:
    return ["input"], ["logits"]


def _sequence_io(spec: Spec) -> tuple[list[str], list[str]]:
    states = spec.sequence.state_names  # ["h"] or ["h", "c"]
    return ["x", *states], ["y", *(f"{s}_out" for s in states)]


# Each task's graph tensor names (inputs, outputs), keyed by spec.task: part of the contract, as the files are.
TASK_IO: dict[str, Callable[[Spec], tuple[list[str], list[str]]]] = {
    "classification": _image_io,
    "forecast": _sequence_io,  # the step graph: x and the state in, y and the new state out
}


# The last dimension of each task's first output: a class score per label, or the one next value.
OUTPUT_WIDTH: dict[str, Callable[[Spec], int]] = {
    "classification": lambda spec: spec.num_classes,
    "forecast": lambda spec: 1,
}


def io_names(spec: Spec) -> tuple[list[str], list[str]]:
    """Input and output tensor names of the exported graphs."""
    return TASK_IO[spec.task](spec)


def output_width(spec: Spec) -> int:
    """What the last dimension of the graph's first output must be for ``spec``."""
    return OUTPUT_WIDTH[spec.task](spec)


def get_entry(name: str, version: str | None = None) -> Any | None:
    """The stored model ``name:version`` (latest when version is None), or None when absent."""
    import bentoml
    from bentoml.exceptions import NotFound as StoreNotFound

    try:
        return bentoml.models.get(f"{name}:{version or 'latest'}")
    except StoreNotFound:
        return None
