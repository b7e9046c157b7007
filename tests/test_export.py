"""Export parity, in process: every family and format against eager PyTorch on real data.

MNIST is the real test split (a quickly trained MLP makes the int8 bound meaningful); the sine RNN
gets real sine windows; the ResNets are untrained (parity does not need accuracy) and run on few
samples at small sizes to stay fast on 2 CPU cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export import ExportError, parse_formats
from export.api import build_artifacts, load_model
from export.artifacts import OPSET
from export.verify import format_table, verify
from service.spec import ImageSpec, SequenceSpec, Spec
from training.checkpoint import save_checkpoint
from training.models import build_model, model_config

DATA_DIR = os.environ.get("DATA_DIR", "/work/shared/data")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def make_checkpoint(path: Path, family: str, spec: Spec, model_cfg: dict | None = None, model=None) -> Path:
    """A checkpoint in the training/checkpoint.py format (what `python -m training` writes)."""
    model = model if model is not None else build_model(family, model_cfg or {})
    return save_checkpoint(path, {
        "model": model.state_dict(), "optimizer": None, "scheduler": None, "epoch": 1,
        "config": {"family": family, "model": asdict(model_config(family, model_cfg or {})), "train": {}},
        "spec": spec.to_dict(), "metrics": {},
    })


def mnist_spec() -> Spec:
    return Spec(family="mnist-mlp", task="classification", labels=tuple(str(i) for i in range(10)),
                image=ImageSpec("L", 28, 28, (MNIST_MEAN,), (MNIST_STD,), layout="NF"))


def rnn_spec(cell: str) -> Spec:
    return Spec(family="sine-rnn", task="forecast", output="next_value", sequence=SequenceSpec(cell=cell, hidden_size=16))


def resnet_spec(family: str, size: int, n_classes: int) -> Spec:
    return Spec(family=family, task="classification", labels=tuple(f"c{i}" for i in range(n_classes)),
                image=ImageSpec("RGB", size, size, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))


def mnist_split(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Real MNIST, normalised as the spec says, flattened: (N, 784) float32, (N,) int64."""
    import torchvision

    ds = torchvision.datasets.MNIST(DATA_DIR, train=train, download=False)
    x = (ds.data.float() / 255 - MNIST_MEAN) / MNIST_STD
    return x.reshape(len(x), -1), ds.targets


def sine_windows(n: int, steps: int = 50, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Sines in the spec's ranges; x (n, steps, 1) and the next value y (n, steps, 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps + 1) * 0.1
    freq, amp, phase = rng.uniform(0.5, 2.0, (n, 1)), rng.uniform(0.5, 1.5, (n, 1)), rng.uniform(0, 2 * np.pi, (n, 1))
    s = (amp * np.sin(freq * t + phase)).astype(np.float32)
    return s[:, :-1, None], s[:, 1:, None]


@pytest.fixture(scope="module")
def trained_mlp(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """An MLP trained 1 epoch on 10k real MNIST images (~97% is not needed; ~90% makes int8 drops visible)."""
    torch.manual_seed(0)
    x, y = mnist_split(train=True)
    model = build_model("mnist-mlp", {})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    perm = torch.randperm(len(x))[:10_000]
    for i in range(0, len(perm), 64):
        idx = perm[i : i + 64]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    path = make_checkpoint(tmp_path_factory.mktemp("mlp") / "best.pt", "mnist-mlp", mnist_spec(), model=model)
    xt, yt = mnist_split(train=False)
    return path, xt[:512].numpy(), yt[:512].numpy()


def test_mnist_mlp_all_formats_match_eager_and_int8_keeps_accuracy(trained_mlp, tmp_path):
    path, x, y = trained_mlp
    _, model, spec = load_model(path)
    files = build_artifacts(model, spec, parse_formats(None), tmp_path, x[:128])
    report = verify(model, spec, files, x, y)
    print(format_table(report))
    assert report["failures"] == []
    rows = report["formats"]
    assert rows["eager"]["accuracy"] > 85.0  # the model really learned: the int8 bound means something
    for fmt in ("torchscript", "onnx"):
        assert rows[fmt]["top1_agreement"] == 100.0 and rows[fmt]["max_abs_diff"] < 1e-4
        assert rows[fmt]["accuracy"] == rows["eager"]["accuracy"]
    assert rows["onnx-fp16"]["status"] == "ok" and rows["onnx-fp16"]["top1_agreement"] >= 99.0
    assert rows["onnx-int8"]["accuracy_drop"] <= 0.5
    # contract: names, dynamic batch, opset, metadata
    graph = onnx.load(str(files["onnx"]))
    assert [i.name for i in graph.graph.input] == ["input"] and [o.name for o in graph.graph.output] == ["logits"]
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17 == OPSET
    for f in ("onnx", "onnx-fp16", "onnx-int8"):
        m = onnx.load(str(files[f]))
        assert Spec.from_json({p.key: p.value for p in m.metadata_props}["spec"]) == spec
        assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 IO kept
        assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_int8_bound_is_enforced(trained_mlp, tmp_path, monkeypatch):
    """A model whose int8 copy loses accuracy must fail verification (the bound is not decorative)."""
    import export.verify as v

    path, x, y = trained_mlp
    _, model, spec = load_model(path)
    files = build_artifacts(model, spec, ["onnx", "onnx-int8"], tmp_path, None)
    monkeypatch.setattr(v, "MNIST_INT8_MAX_DROP", -1.0)  # demand a gain: impossible -> must fail
    report = verify(model, spec, files, x, y)
    assert any("int8 loses" in f for f in report["failures"]), report["failures"]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_sine_rnn_step_graph_matches_eager(cell, tmp_path):
    torch.manual_seed(1)
    path = make_checkpoint(tmp_path / "rnn.pt", "sine-rnn", rnn_spec(cell), {"cell": cell})
    _, model, spec = load_model(path)
    x, y = sine_windows(96, steps=40)
    files = build_artifacts(model, spec, ["torchscript", "onnx", "onnx-fp16", "onnx-int8"], tmp_path, None)
    report = verify(model, spec, files, x, y)
    print(format_table(report))
    assert report["failures"] == []
    rows = report["formats"]
    assert rows["onnx"]["max_abs_diff"] < 1e-4 and rows["torchscript"]["max_abs_diff"] < 1e-4
    assert rows["onnx-int8"]["status"] == "ok" and rows["onnx-int8"]["max_abs_diff"] < 0.05
    # ORT 1.31's CPU EP crashes on fp16 recurrent ops: reported as skipped, not a failure, not a crash
    assert rows["onnx-fp16"]["status"].startswith("skipped") and cell.upper() in rows["onnx-fp16"]["status"]
    states = ["h", "c"] if cell == "lstm" else ["h"]
    graph = onnx.load(str(files["onnx"])).graph
    assert [i.name for i in graph.input] == ["x", *states]
    assert [o.name for o in graph.output] == ["y", *(s + "_out" for s in states)]
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim[:2]]
    assert dims == ["batch", "seq"] and [d.dim_param for d in graph.output[0].type.tensor_type.shape.dim[:2]] == dims


@pytest.mark.parametrize("family,size,n_classes", [("cifar10-resnet18", 32, 10), ("transfer-resnet18", 64, 5)])
def test_resnets_match_eager(family, size, n_classes, tmp_path):
    """Untrained ResNets (parity needs no accuracy); 24 real-shaped samples keep this fast."""
    torch.manual_seed(2)
    path = make_checkpoint(tmp_path / "r.pt", family, resnet_spec(family, size, n_classes), {"num_classes": n_classes})
    _, model, spec = load_model(path)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(24, 3, size, size, generator=g).numpy()  # replaced by real images in test_export_cli
    y = np.arange(24) % n_classes
    files = build_artifacts(model, spec, parse_formats(None), tmp_path, x[:16])
    report = verify(model, spec, files, x, y)
    print(format_table(report))
    assert report["failures"] == []
    for fmt in ("torchscript", "onnx"):
        assert report["formats"][fmt]["top1_agreement"] == 100.0
    assert report["formats"]["onnx-int8"]["status"] == "ok"
    ops = {n.op_type for n in onnx.load(str(files["onnx-int8"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static QDQ, as the issue asks
    assert "BatchNormalization" not in {n.op_type for n in onnx.load(str(files["onnx"])).graph.node}
