"""Export parity, in process: every family and format against eager PyTorch on real data.

Inputs come from ``training.data.eval_samples``, as in a real export: the real MNIST test split
(with a quickly trained MLP, so the int8 bound is meaningful), held-out sine windows, and tiny
CIFAR-10 / ImageFolder data written in the real on-disk formats. The ResNets are untrained:
parity needs no accuracy, and few samples keep this fast on 2 CPU cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export import ExportError, parse_formats
from export.pipeline import build_artifacts, model_from_checkpoint
from export.artifacts import OPSET
from export.verify import format_table, verify
from fixtures_data import CIFAR10_CLASSES, write_image_folder, write_tiny_cifar10
from harness import make_checkpoint, samples_for
from zoo.spec import Spec
from training.specs import make_spec

# torch 2.14 deprecates TorchScript in favour of torch.export; loading it is what these tests check.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")


def test_mnist_mlp_all_formats_match_eager_and_int8_keeps_accuracy(trained_mlp, tmp_path):
    path, x, y = trained_mlp
    _, model, spec = model_from_checkpoint(path)
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
    extra = {"spec.json": ""}
    torch.jit.load(str(files["torchscript"]), _extra_files=extra)
    assert Spec.from_json(extra["spec.json"]) == spec
    for f in ("onnx", "onnx-fp16", "onnx-int8"):
        m = onnx.load(str(files[f]))
        assert Spec.from_json({p.key: p.value for p in m.metadata_props}["spec"]) == spec
        assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 IO kept
        assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT


def test_int8_bound_is_enforced(trained_mlp, tmp_path, monkeypatch):
    """A model whose int8 copy loses accuracy must fail verification (the bound is not decorative)."""
    import export.verify as v

    path, x, y = trained_mlp
    _, model, spec = model_from_checkpoint(path)
    files = build_artifacts(model, spec, ["onnx", "onnx-int8"], tmp_path, None)
    monkeypatch.setattr(v, "INT8_MAX_DROP", -100.0)  # demand a 100-point gain: must fail
    report = verify(model, spec, files, x, y)
    assert any("int8 loses" in f for f in report["failures"]), report["failures"]


def test_weights_of_another_family_are_refused(trained_mlp, tmp_path):
    """A checkpoint that claims cifar10-resnet18 but holds the MLP's weights: a named error, no export."""
    data = torch.load(trained_mlp[0], weights_only=True)
    data["config"] = {**data["config"], "family": "cifar10-resnet18", "model": {}}
    data["spec"] = make_spec("cifar10-resnet18", classes=CIFAR10_CLASSES).to_dict()
    torch.save(data, tmp_path / "mixed.pt")
    with pytest.raises(ExportError, match="do not fit a cifar10-resnet18 model"):
        model_from_checkpoint(tmp_path / "mixed.pt")


def test_parity_check_catches_a_different_model(trained_mlp, tmp_path):
    """Artifacts of one model verified against another: every fp32 check must fail, by name."""
    path, x, y = trained_mlp
    _, model, spec = model_from_checkpoint(path)
    files = build_artifacts(model, spec, ["torchscript", "onnx"], tmp_path, None)
    with torch.no_grad():
        model.net[-1].bias.add_(0.05)  # small: beyond rtol 1e-3 for logits under 50, top-1 likely unchanged
    report = verify(model, spec, files, x, y)
    failed = " | ".join(report["failures"])
    assert "torchscript: batch 1 differs from eager" in failed and "onnx: batch 7 differs from eager" in failed
    assert report["formats"]["onnx"]["status"] == "FAILED"


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_sine_rnn_step_graph_matches_eager(cell, tmp_path):
    torch.manual_seed(1)
    path = make_checkpoint(tmp_path / "rnn.pt", "sine-rnn", make_spec("sine-rnn", cell=cell), {"cell": cell},
                           train={"seq_len": 40})
    _, model, spec = model_from_checkpoint(path)
    x, y = samples_for(path, 96)  # held-out sine windows, (96, 40, 1) each
    assert x.shape == y.shape == (96, 40, 1)
    files = build_artifacts(model, spec, ["torchscript", "onnx", "onnx-fp16", "onnx-int8"], tmp_path, None)
    report = verify(model, spec, files, x, y)
    print(format_table(report))
    assert report["failures"] == []
    rows = report["formats"]
    assert rows["onnx"]["max_abs_diff"] < 1e-4 and rows["torchscript"]["max_abs_diff"] < 1e-4
    assert rows["onnx-int8"]["status"] == "ok" and rows["onnx-int8"]["max_abs_diff"] < 0.1  # dynamic int8, random weights
    # ORT 1.31's CPU EP segfaults optimising fp16 recurrent graphs at ORT_ENABLE_ALL: the exporter
    # survives it (child-process probe), says so, and verifies at ORT_ENABLE_EXTENDED instead.
    fp16 = rows["onnx-fp16"]
    assert fp16["status"] == "ok" and fp16["max_abs_diff"] < 1e-2
    if "note" in fp16:
        assert f"fp16 {cell.upper()}" in fp16["note"] and "ORT_ENABLE_EXTENDED" in fp16["note"]
    states = ["h", "c"] if cell == "lstm" else ["h"]
    graph = onnx.load(str(files["onnx"])).graph
    assert [i.name for i in graph.input] == ["x", *states]
    assert [o.name for o in graph.output] == ["y", *(s + "_out" for s in states)]
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim[:2]]
    assert dims == ["batch", "seq"] and [d.dim_param for d in graph.output[0].type.tensor_type.shape.dim[:2]] == dims


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cifar10-resnet18", "transfer-resnet18"])
def test_resnets_match_eager(family, tmp_path):
    """Untrained ResNets on tiny real-format data: 20 CIFAR-10 test images / 6 ImageFolder val images at 224."""
    torch.manual_seed(2)
    if family == "cifar10-resnet18":
        write_tiny_cifar10(tmp_path / "data", per_batch=20)
        spec, cfg = make_spec(family, classes=CIFAR10_CLASSES), {"num_classes": 10}
    else:
        write_image_folder(tmp_path / "data", classes=("cat", "dog", "fox"), per_class=2, split=True, size=40)
        spec, cfg = make_spec(family, classes=["cat", "dog", "fox"]), {"num_classes": 3}
    path = make_checkpoint(tmp_path / "r.pt", family, spec, cfg, train={"data_dir": str(tmp_path / "data")})
    _, model, spec = model_from_checkpoint(path)
    x, y = samples_for(path, 512)
    assert x.shape[1:] == (3, spec.image.height, spec.image.width) and len(x) in (20, 6)
    files = build_artifacts(model, spec, parse_formats(None), tmp_path, x[:16])
    report = verify(model, spec, files, x, y)
    print(format_table(report))
    assert report["failures"] == []
    for fmt in ("torchscript", "onnx"):
        assert report["formats"][fmt]["top1_agreement"] == 100.0
    assert report["formats"]["onnx-int8"]["status"] == "ok"
    ops = {n.op_type for n in onnx.load(str(files["onnx-int8"])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static QDQ, as the issue asks
    fp32_ops = [n.op_type for n in onnx.load(str(files["onnx"])).graph.node]
    assert "BatchNormalization" not in fp32_ops
    # The int8 speed-up rests on ORT's CPU EP fusing every QDQ Conv into QLinearConv: one left as
    # fp32 Conv between Dequantize/Quantize is slower than plain fp32 (S8S8 left 12 of 20 so).
    fused = optimized_ops(files["onnx-int8"], tmp_path / "int8.opt.onnx")
    assert fused.count("QLinearConv") == fp32_ops.count("Conv") == 20 and "Conv" not in fused, sorted(set(fused))


def optimized_ops(path: Path, out: Path) -> list[str]:
    """Op types of the graph as ONNX Runtime's CPU EP will run it (after its graph optimisations)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(out)).graph.node]


ISOLATED_LOADER = textwrap.dedent('''
    # Runs with `python -I` from a temp dir, with the project's packages made unimportable:
    # the artifacts must be self-contained (torch.jit.load / onnxruntime alone).
    import sys
    for name in ("training", "export", "service"):
        sys.modules[name] = None  # any import of them now raises ImportError
    import json
    import numpy as np
    import onnxruntime as ort
    import torch

    art, case = sys.argv[1], sys.argv[2]
    feeds = dict(np.load(case + "/inputs.npz"))
    expected = dict(np.load(case + "/expected.npz"))
    ts = torch.jit.load(art + "/model.ts")
    with torch.no_grad():
        out = ts(*(torch.from_numpy(v) for v in feeds.values()))
    out = out if isinstance(out, tuple) else (out,)
    worst = {"torchscript": max(float(np.abs(o.numpy() - e).max()) for o, e in zip(out, expected.values()))}
    for f in ("model.onnx", "model.int8.onnx"):
        s = ort.InferenceSession(art + "/" + f, providers=["CPUExecutionProvider"])
        res = s.run(list(expected), feeds)
        worst[f] = max(float(np.abs(r - e).max()) for r, e in zip(res, expected.values()))
    print(json.dumps(worst))
''')


@pytest.mark.parametrize("family", ["mnist-mlp", "sine-rnn", "cifar10-resnet18"])
def test_artifacts_run_without_project_code(family, tmp_path):
    """torch.jit.load and ORT alone, in a `python -I` child that cannot import training/export/service."""
    torch.manual_seed(4)
    spec = make_spec(family, **({"classes": CIFAR10_CLASSES} if family == "cifar10-resnet18" else {}))
    path = make_checkpoint(tmp_path / "c.pt", family, spec)
    _, model, spec = model_from_checkpoint(path)
    art = tmp_path / "art"
    art.mkdir()
    if family == "sine-rnn":
        x = np.sin(np.linspace(0, 3, 3 * 17, dtype=np.float32)).reshape(3, 17, 1)
        feeds = {"x": x, "h": np.zeros((1, 3, 16), np.float32), "c": np.zeros((1, 3, 16), np.float32)}
        calib = None
    else:
        x = np.random.default_rng(0).standard_normal((3, *spec.image.input_shape())).astype(np.float32)
        feeds, calib = {"input": x}, x
    build_artifacts(model, spec, ["torchscript", "onnx", "onnx-int8"], art, calib)
    with torch.no_grad():
        out = model(*(torch.from_numpy(v) for v in feeds.values())) if family != "sine-rnn" else None
        if family == "sine-rnn":
            y, (h, c) = model(torch.from_numpy(x), (torch.from_numpy(feeds["h"]), torch.from_numpy(feeds["c"])))
            expected = {"y": y.numpy(), "h_out": h.numpy(), "c_out": c.numpy()}
        else:
            expected = {"logits": out.numpy()}
    np.savez(tmp_path / "inputs.npz", **feeds)
    np.savez(tmp_path / "expected.npz", **expected)
    (tmp_path / "load.py").write_text(ISOLATED_LOADER)
    proc = subprocess.run([sys.executable, "-I", str(tmp_path / "load.py"), str(art), str(tmp_path)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    worst = json.loads(proc.stdout.strip().splitlines()[-1])
    assert worst["torchscript"] < 1e-5 and worst["model.onnx"] < 1e-4
    assert worst["model.int8.onnx"] < 0.2  # int8 is approximate; it must still run and be close
