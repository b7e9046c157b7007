"""Each task's part of an export, in one table: ``TASKS[spec.task]``.

The export steps (artifacts.py, runners.py, verify.py, store.py, pipeline.py) are the same for every
task; where a classifier and the forecaster really differ, they ask the task's ``ExportTask``: the
formats built by default, the module the artifacts carry and how it becomes TorchScript, the example
inputs and dynamic axes of the graphs, how validation samples are shaped and fed, how outputs are
scored and compared with eager, and what the model card says of the inputs and the data. The tensor
names are the contract's (zoo/entry.py ``TASK_IO``); a task is defined in zoo/spec.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import nn

from export import FORMATS
from export.parity import PARITY_BATCHES, Reference, close
from zoo.spec import Spec

if TYPE_CHECKING:
    from export.runners import Runner

Row = dict[str, Any]  # one format's line of the verification report


@dataclass(frozen=True)
class ExportTask:
    formats: tuple[str, ...]  # built when none are asked for
    serving_module: Callable[[nn.Module, Spec], nn.Module]  # the module whose signature the artifacts carry
    to_torchscript: Callable[[nn.Module, Spec], torch.jit.ScriptModule]
    example_inputs: Callable[..., tuple[torch.Tensor, ...]]  # (spec, batch, seq=8): for tracing and exporting
    dynamic_axes: Callable[[Spec], dict[str, dict[int, str]]]
    shape_samples: Callable[[Spec, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
    model_inputs: Callable[[Spec, np.ndarray], list[np.ndarray]]  # a batch of samples -> the graph's inputs
    quality: Callable[[list[np.ndarray], np.ndarray], dict[str, float]]  # outputs vs targets
    agreement: Callable[[list[np.ndarray], list[np.ndarray]], dict[str, float]]  # outputs vs eager's, every format
    fp32_problems: Callable[[Runner, list[np.ndarray], Row, Reference], list[str]]  # beyond the PARITY_BATCHES
    reduced_precision: Callable[[Row, Row], dict[str, float]]  # an fp16/int8 row vs eager's: what it lost
    card_io: Callable[[Spec], str]  # the model card's lines on the graph's inputs and outputs
    data_from_dir: bool  # trained on a folder of data, which the model card names (config train.data_dir)


def _generator(batch: int, seq: int) -> torch.Generator:
    return torch.Generator().manual_seed(batch * 1000 + seq)


# --- classification: an image (or its flat vector) in, logits out --------------------------------------


def _the_model(model: nn.Module, spec: Spec) -> nn.Module:
    return model


def _script(module: nn.Module, spec: Spec) -> torch.jit.ScriptModule:
    return torch.jit.script(module)  # no data-dependent Python: the scripted graph is the model


def _image_example(spec: Spec, batch: int, seq: int = 8) -> tuple[torch.Tensor, ...]:
    return (torch.randn(batch, *spec.image.input_shape(), generator=_generator(batch, seq)),)  # (N, C, H, W) or (N, F)


def _image_axes(spec: Spec) -> dict[str, dict[int, str]]:
    return {"input": {0: "batch"}, "logits": {0: "batch"}}


def _image_samples(spec: Spec, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, C, H, W) or (n, C*H*W) for the MLP; targets (n,) class indices."""
    return x.reshape(len(x), *spec.image.input_shape()), y.long().reshape(-1)


def _image_inputs(spec: Spec, x: np.ndarray) -> list[np.ndarray]:
    return [x]


def _accuracy(outputs: list[np.ndarray], targets: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(100.0 * np.mean(outputs[0].argmax(axis=1) == targets))}


def _top1_agreement(outputs: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    return {"top1_agreement": float(100.0 * np.mean(outputs[0].argmax(1) == reference[0].argmax(1)))}


def _top1_problems(run: Runner, outputs: list[np.ndarray], row: Row, ref: Reference) -> list[str]:
    """On all samples, top-1 identical to eager."""
    if row["top1_agreement"] < 100.0:
        return [f"top-1 differs from eager on {100 - row['top1_agreement']:.2f}% of {len(ref.inputs)} samples"]
    return []


def _accuracy_drop(row: Row, eager: Row) -> dict[str, float]:
    return {"accuracy_drop": eager["accuracy"] - row["accuracy"]}  # points; negative = gained


def _image_card(spec: Spec) -> str:
    im = spec.image
    return (
        f"- input `input`: float32 `(N, {', '.join(map(str, im.input_shape()))})`, "
        f"{im.color_mode} {im.height}x{im.width}, (x/255 - mean {list(im.mean)}) / std {list(im.std)}, "
        f"layout {im.layout}\n- output `logits`: float32 `(N, {spec.num_classes})`; softmax belongs to the caller\n"
        f"- labels: {', '.join(spec.labels[:20])}{' ...' if spec.num_classes > 20 else ''}\n"
    )


# --- forecast: the RNN as an explicit-state step graph, x and the state in, y and the new state out ---------


class LSTMStep(nn.Module):
    """Explicit-state step graph for an LSTM: x (N,T,1), h, c (layers,N,hidden) -> y (N,T,1), h_out, c_out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        y, (h_out, c_out) = self.model(x, (h, c))
        return y, h_out, c_out


class RecurrentStep(nn.Module):
    """Explicit-state step graph for RNN/GRU: x (N,T,1), h (layers,N,hidden) -> y (N,T,1), h_out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, h: torch.Tensor):
        y, (h_out,) = self.model(x, (h,))
        return y, h_out


def _step_module(model: nn.Module, spec: Spec) -> nn.Module:
    return (LSTMStep if spec.sequence.cell == "lstm" else RecurrentStep)(model).eval()


def _trace(module: nn.Module, spec: Spec) -> torch.jit.ScriptModule:
    """Traced (artifacts.py says why) at (N=2, T=8); check_inputs re-runs the trace at other sizes and compares."""
    return torch.jit.trace(
        module,
        _sequence_example(spec, 2, 8),
        check_inputs=[_sequence_example(spec, 1, 1), _sequence_example(spec, 5, 13)],
    )


def _sequence_example(spec: Spec, batch: int, seq: int = 8) -> tuple[torch.Tensor, ...]:
    sq = spec.sequence
    x = torch.randn(batch, seq, 1, generator=_generator(batch, seq))  # (N, T, 1)
    states = [torch.zeros(sq.num_layers, batch, sq.hidden_size) for _ in sq.state_names]
    return (x, *states)


def _sequence_axes(spec: Spec) -> dict[str, dict[int, str]]:
    """The sequence axis is dynamic too: history length varies per request."""
    axes = {"x": {0: "batch", 1: "seq"}, "y": {0: "batch", 1: "seq"}}
    for s in spec.sequence.state_names:
        axes[s] = {1: "batch"}  # (layers, N, hidden)
        axes[f"{s}_out"] = {1: "batch"}
    return axes


def _sequence_samples(spec: Spec, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (n, T, 1) and the next-value targets (n, T, 1)."""
    x = x.reshape(len(x), -1, 1)
    return x, y.float().reshape(x.shape)


def _zero_state_inputs(spec: Spec, x: np.ndarray) -> list[np.ndarray]:
    sq = spec.sequence
    zeros = np.zeros((sq.num_layers, len(x), sq.hidden_size), dtype=np.float32)
    return [x, *[zeros for _ in sq.state_names]]


def _mse(outputs: list[np.ndarray], targets: np.ndarray) -> dict[str, float]:
    """MSE of the next-value prediction."""
    y = outputs[0].reshape(targets.shape)
    return {"mse": float(np.mean((y.astype(np.float64) - targets) ** 2))}


def _no_top1(outputs: list[np.ndarray], reference: list[np.ndarray]) -> dict[str, float]:
    return {}  # a forecast has no top-1: its outputs are held to the fp32 tolerance instead (_sequence_problems)


def _sequence_problems(run: Runner, outputs: list[np.ndarray], row: Row, ref: Reference) -> list[str]:
    """On all samples, every output within the fp32 tolerance; and one rollout step from a warm state."""
    problems = []
    if (msg := close(outputs, ref.outputs, ref.out_names)) is not None:
        problems.append(f"outputs over all {len(ref.inputs)} samples differ from eager: {msg}")
    return problems + _check_rollout_step(run, ref.eager, ref.outputs, ref.out_names)


def _check_rollout_step(run: Runner, eager: Runner, reference, out_names) -> list[str]:
    """One T=1 step from the warmed-up (non-zero) eager state: what the service's rollout does."""
    b = PARITY_BATCHES[-1]
    state = [s[:, :b] for s in reference[1:]]
    x = reference[0][:b, -1:]  # feed the last prediction back, (N, 1, 1)
    got = run([x, *state])
    want = eager([x, *state])
    msg = close(got, want, out_names)
    return [] if msg is None else [f"one-step rollout from a warm state differs from eager: {msg}"]


def _mse_increase(row: Row, eager: Row) -> dict[str, float]:
    return {"mse_increase": row["mse"] - eager["mse"]}


def _sequence_card(spec: Spec) -> str:
    sq = spec.sequence
    states = ", ".join(f"`{s}`" for s in sq.state_names)
    return (
        f"- cell {sq.cell}, hidden {sq.hidden_size}, layers {sq.num_layers}\n"
        f"- inputs `x` float32 `(N, T, 1)`, state {states} `({sq.num_layers}, N, {sq.hidden_size})` (zeros to start)\n"
        f"- outputs `y` `(N, T, 1)` (next value at every step) and the new state "
        f"{', '.join(f'`{s}_out`' for s in sq.state_names)}\n"
        f"- trained on sines: frequency {list(sq.freq_range)}, amplitude {list(sq.amp_range)}, dt {sq.dt}\n"
    )


TASKS: dict[str, ExportTask] = {
    "classification": ExportTask(
        formats=FORMATS,
        serving_module=_the_model,
        to_torchscript=_script,
        example_inputs=_image_example,
        dynamic_axes=_image_axes,
        shape_samples=_image_samples,
        model_inputs=_image_inputs,
        quality=_accuracy,
        agreement=_top1_agreement,
        fp32_problems=_top1_problems,
        reduced_precision=_accuracy_drop,
        card_io=_image_card,
        data_from_dir=True,
    ),
    "forecast": ExportTask(
        # No fp16 by default: a 16-unit RNN gains nothing from it, and ONNX Runtime 1.31's CPU provider
        # crashes (SIGSEGV) loading an fp16 LSTM/GRU/RNN graph with its default optimisation level, so a
        # CPU service that picked it up would die. It can still be asked for.
        formats=tuple(f for f in FORMATS if f != "onnx-fp16"),
        serving_module=_step_module,
        to_torchscript=_trace,
        example_inputs=_sequence_example,
        dynamic_axes=_sequence_axes,
        shape_samples=_sequence_samples,
        model_inputs=_zero_state_inputs,
        quality=_mse,
        agreement=_no_top1,
        fp32_problems=_sequence_problems,
        reduced_precision=_mse_increase,
        card_io=_sequence_card,
        data_from_dir=False,  # synthetic sines
    ),
}
