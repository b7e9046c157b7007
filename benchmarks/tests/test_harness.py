"""Benchmark harness: the engine measures the real exported model, the naive server answers like eager
PyTorch and the naive ONNX Runtime server like the model it opens, the targets' arithmetic and the report, the py-spy summary. Fast (< 60 s): a tiny MLP."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.engine import (
    Budget,
    Target,
    cpu_sessions,
    engine_rows,
    example_feeds,
    png_pool,
)
from service.config import Settings
from service.core.classifier import softmax
from service.core.forecaster import Forecaster
from service.core.interface import Loaded
from service.core.preprocess import preprocess_many
from training.checkpoint import save_checkpoint
from training.models import build_model, config_to_dict, model_config
from training.specs import make_spec
from zoo.spec import Spec

MLP_CFG = {"hidden": (32,)}  # tiny: the test is about the harness, not the model


def _checkpoint(path: Path, family: str, cfg: dict, spec: Spec, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    model = build_model(family, cfg).eval()
    save_checkpoint(path, {"model": model.state_dict(), "optimizer": None, "scheduler": None, "epoch": 0,
                           "config": {"family": family, "model": config_to_dict(model_config(family, cfg)), "train": {}},
                           "spec": spec.to_dict(), "metrics": {}})
    return path, model


@pytest.fixture(scope="module")
def mlp_target(tmp_path_factory) -> Target:
    """A tiny MLP exported by the project's exporter (TorchScript, ONNX fp32, ONNX int8) into a directory."""
    from export.pipeline import build_artifacts

    tmp = tmp_path_factory.mktemp("mlp")
    spec = make_spec("mnist-mlp")
    _, model = _checkpoint(tmp / "mlp.pt", "mnist-mlp", MLP_CFG, spec)
    build_artifacts(model, spec, ["torchscript", "onnx", "onnx-int8"], tmp, np.zeros((4, 784), np.float32))
    return Target("mnist-mlp", spec, tmp, model)


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    yield 1  # one intra-op thread: no OpenMP barrier stalls on a busy shared CPU, so batch scaling is clean
    torch.set_num_threads(before)


def test_engine_rows_measure_the_real_model(mlp_target, one_thread):
    sessions = cpu_sessions(mlp_target, threads=one_thread)
    assert set(sessions) == {"eager", "torchscript", "onnx-fp32", "onnx-int8"}
    assert all(not isinstance(s, str) for s in sessions.values()), sessions
    # every runtime computes the eager model's logits (int8: same argmax on most rows)
    feeds = example_feeds(mlp_target.spec, 16, np.random.default_rng(1))
    with torch.no_grad():
        want = mlp_target.module(torch.from_numpy(feeds["input"])).numpy()
    for rt, sess in sessions.items():
        got = sess.run(feeds)["logits"]
        assert got.shape == (16, 10)
        if rt == "onnx-int8":
            assert (got.argmax(1) == want.argmax(1)).mean() >= 0.8
        else:
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)

    rows, skipped = engine_rows(mlp_target, sessions, Budget(point_s=0.05, min_calls=5, warmup_calls=2),
                                Settings(threads=one_thread), batches=(1, 64), pipeline_batches=(1, 8), echo=lambda s: None)
    assert skipped == {}
    assert len(rows) == 4 * (2 + 2)
    table = {(r.runtime, r.mode, r.batch): r for r in rows}
    for r in rows:
        assert math.isfinite(r.items_per_s) and r.items_per_s > 0
        assert 0 < r.p50_ms <= r.p90_ms
        assert r.calls >= 5
        # items/s is batch * calls / wall time: p50 per call can never imply more than the measured rate by much
        assert r.items_per_s <= r.batch / (r.p50_ms / 1000.0) * 3
    for rt in sessions:
        # batching amortises the per-call overhead of a model this small
        assert table[(rt, "infer", 64)].items_per_s > table[(rt, "infer", 1)].items_per_s, rt
        # decoding PNGs costs something: the pipeline is slower than the model alone at the same batch
        assert table[(rt, "pipeline", 1)].items_per_s < table[(rt, "infer", 1)].items_per_s * 1.05, rt


def test_pipeline_inputs_are_the_service_preprocessing(mlp_target):
    """The PNG pool decodes, through service.core.preprocess, to the pixels it was made from."""
    files = png_pool(mlp_target.spec, 3, seed=5)
    x = preprocess_many(files, mlp_target.spec.image, 10**6)  # (3, 784)
    pixels = np.stack([np.asarray(Image.open(io.BytesIO(b))) for _, b in files]).reshape(3, -1) / 255.0
    im = mlp_target.spec.image
    np.testing.assert_allclose(x, (pixels - im.mean[0]) / im.std[0], rtol=1e-5, atol=1e-5)


def test_naive_server_answers_like_eager(tmp_path):
    from fastapi.testclient import TestClient

    from benchmarks.baselines.naive_server import create_app
    from benchmarks.engine import eager_session

    mlp_spec = make_spec("mnist-mlp")
    rnn_spec = make_spec("sine-rnn", cell="gru", hidden_size=8)
    mlp_path, mlp = _checkpoint(tmp_path / "mlp.pt", "mnist-mlp", MLP_CFG, mlp_spec)
    rnn_path, rnn = _checkpoint(tmp_path / "rnn.pt", "sine-rnn", {"cell": "gru", "hidden_size": 8}, rnn_spec)
    client = TestClient(create_app({"mnist-mlp": mlp_path, "sine-rnn": rnn_path}))
    assert client.get("/readyz").status_code == 200

    files = png_pool(mlp_spec, 2, seed=3)
    r = client.post("/classify_digit", files=[("images", (n, b, "image/png")) for n, b in files])
    assert r.status_code == 200, r.text
    body = r.json()
    x = preprocess_many(files, mlp_spec.image, 10**6)  # the service's preprocessing as the reference
    with torch.no_grad():
        probs = softmax(mlp(torch.from_numpy(x)).numpy())
    for item, p in zip(body, probs):
        assert [t["index"] for t in item["top_k"]] == list(np.argsort(-p)[:5])
        assert item["index"] == item["top_k"][0]["index"] and item["label"] == str(item["index"])
        np.testing.assert_allclose([t["score"] for t in item["top_k"]], np.sort(p)[::-1][:5], rtol=1e-4, atol=1e-6)

    # the forecast is the service's rollout algorithm run on the same eager weights
    history = [math.sin(0.1 * i) for i in range(30)]
    r = client.post("/forecast_sine", json={"history": history, "steps": 7})
    assert r.status_code == 200, r.text
    ref = Forecaster(Loaded("sine-rnn", "t", tmp_path, rnn_spec, eager_session(rnn, rnn_spec)), Settings())
    np.testing.assert_allclose(r.json()["forecast"], ref.forecast(history, 7), rtol=1e-4, atol=1e-5)

    bad = client.post("/classify_digit", files=[("images", ("x.png", b"not an image", "image/png"))])
    assert bad.status_code == 400 and "decode" in bad.json()["error"]
    missing = client.post("/classify_cifar10", files=[("images", files[0])])
    assert missing.status_code == 503 and "cifar10-resnet18" in missing.json()["error"]


def test_naive_ort_server_answers_like_eager(mlp_target):
    """The naive ONNX Runtime peer opens the entry's own model.onnx and computes what eager PyTorch does."""
    from fastapi.testclient import TestClient

    from benchmarks.baselines.naive_ort_server import create_app, parse_models

    (mlp_target.model_dir / "spec.json").write_text(mlp_target.spec.to_json())
    client = TestClient(create_app(parse_models([f"mnist-mlp={mlp_target.model_dir}"])))
    assert client.get("/readyz").json()["models"] == ["mnist-mlp"]
    files = png_pool(mlp_target.spec, 3, seed=4)
    r = client.post("/classify_digit", files=[("images", (n, b, "image/png")) for n, b in files])
    assert r.status_code == 200, r.text
    with torch.no_grad():
        probs = softmax(mlp_target.module(torch.from_numpy(preprocess_many(files, mlp_target.spec.image, 10**6))).numpy())
    for item, p in zip(r.json(), probs):
        assert [t["index"] for t in item["top_k"]] == list(np.argsort(-p)[:5])
        np.testing.assert_allclose([t["score"] for t in item["top_k"]], np.sort(p)[::-1][:5], rtol=1e-3, atol=1e-5)

    bad = client.post("/classify_digit", files=[("images", ("x.png", b"not an image", "image/png"))])
    assert bad.status_code == 400 and "x.png" in bad.json()["error"]
    assert client.post("/classify_cifar10", files=[("images", files[0])]).status_code == 404  # not served
    with pytest.raises(ValueError, match="sine-rnn"):
        parse_models([f"sine-rnn={mlp_target.model_dir}"])  # classifiers only
    with pytest.raises(ValueError, match="no model.onnx"):
        parse_models([f"mnist-mlp={mlp_target.model_dir / 'absent'}"])


def _rec(server, endpoint, c, k, items, p50=10.0, p99=20.0, errors=None):
    from benchmarks.http_bench import Level

    lv = Level(endpoint, c, k)
    return {"server": server, "level": {"endpoint": endpoint, "concurrency": c, "images": k}, "key": lv.key,
            "items_per_s": items, "requests_per_s": items / k, "p50_ms": p50, "p90_ms": p50, "p99_ms": p99,
            "errors": errors or {}, "client_cpu_pct": 10.0, "server_cpu_pct": 150.0, "mean_batch": 4.0, "wall_s": 2.0}


def _row(model, runtime, mode, batch, ips):
    return {"model": model, "runtime": runtime, "mode": mode, "batch": batch, "items_per_s": ips, "p50_ms": 1.0,
            "p90_ms": 1.0, "calls": 3, "seconds": 1.0}


def test_targets_verdicts_and_report(tmp_path):
    from benchmarks.plots import engine_plot, http_latency_plot, http_throughput_plot
    from benchmarks.report import machine, render
    from benchmarks.targets import evaluate

    engine = {"threads": 2, "budget": {"point_s": 1, "min_calls": 3, "warmup_calls": 2}, "skipped": {}, "rows": [
        _row("cifar10-resnet18", "onnx-fp32", "pipeline", 32, 100.0),
        _row("cifar10-resnet18", "onnx-fp32", "infer", 64, 200.0), _row("cifar10-resnet18", "onnx-int8", "infer", 64, 240.0),
        _row("cifar10-resnet18", "onnx-fp32", "infer", 1, 50.0)]}
    http = {"duration_s": 2, "warmup_s": 1, "starts": [], "records": [
        _rec("service", "classify_cifar10", 1, 32, 70.0), _rec("service", "classify_cifar10", 4, 32, 85.0, errors={"503": 2}),
        _rec("naive", "classify_cifar10", 1, 32, 40.0),
        _rec("service", "classify_cifar10", 32, 1, 90.0), _rec("naive", "classify_cifar10", 32, 1, 30.0),
        _rec("service", "classify_digit", 32, 1, 450.0, p50=50.0, p99=200.0), _rec("naive", "classify_digit", 32, 1, 500.0),
        _rec("naive-ort", "classify_digit", 32, 1, 250.0, p50=100.0, p99=180.0),
        _rec("service", "classify_digit", 1, 1, 90.0, p50=11.0), _rec("naive-ort", "classify_digit", 1, 1, 95.0, p50=10.0),
        _rec("naive-ort", "classify_cifar10", 32, 1, 80.0), _rec("service-int8", "classify_cifar10", 32, 1, 180.0)]}
    t = evaluate(engine, http)
    verdicts = [(r.met, r.verdict, round(r.ratio, 3)) for r in t]
    assert verdicts == [
        (True, "met", 0.85),  # best service level (c=4, 85) / in-process 100
        (True, "met", 3.0),  # 90 / 30
        (False, "missed by 10% (0.90 vs >= 1.0)", 0.9),  # 450 / 500
        (False, "missed by 33% (4.00 vs <= 3.0)", 4.0),  # p99 200 / p50 50
        (False, "missed by 20% (1.20 vs >= 1.5)", 1.2),  # 240 / 200
        (True, "met", 1.8),  # service 450 / naive-ort 250 digits/s
        (False, "missed by 11% (1.11 vs <= 1.0)", 1.111),  # p99 200 / naive-ort p99 180
        (True, "met", 1.1),  # c=1 p50 11 / 10
        (True, "met", 1.125),  # cifar 90 / naive-ort 80
        (False, "missed by 10% (2.25 vs >= 2.5)", 2.25),  # service-int8 180 / naive-ort 80
    ]
    profiles = [r.to_dict()["profile"] for r in t]
    assert profiles == [None, None, "/classify_digit (1 img/req) c=32", "/classify_digit (1 img/req) c=32", "ort-int8",
                        None, "/classify_digit (1 img/req) c=32", None, None, None]

    plots = {"engine": engine_plot(engine["rows"], tmp_path / "bench" / "engine.png"),
             "http_throughput": http_throughput_plot(http["records"], tmp_path / "bench" / "t.png"),
             "http_latency": http_latency_plot(http["records"], tmp_path / "bench" / "l.png")}
    for p in plots.values():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = {"command": "python -m benchmarks.run --quick", "quick": True, "machine": machine(), "wall_s": 1.0,
               "store_commands": ["x"], "models": [], "targets": [r.to_dict() for r in t],
               "engine": engine, "http": http, "load_avg_end": [0, 0, 0]}
    text = render(results, tmp_path / "benchmarks.md", plots)
    assert "**missed by 10% (0.90 vs >= 1.0)**" in text and "](bench/engine.png)" in text
    assert "| /classify_cifar10 (1 img/req) c=32 | service | 90.0 | 90.0 | 1.12x | 3.00x |" in text
    assert "| /classify_cifar10 (1 img/req) c=32 | service-int8 | 180.0 | 180.0 | 2.25x | 6.00x |" in text
    assert "503: 2" in text and "Not run: this machine has no GPU" in text


def test_report_commands_carry_no_machine_paths():
    from benchmarks.report import portable

    results = {"models": [{"checkpoint": "/tmp/model-zoo-bench-x1/checkpoints/mnist-mlp/best.pt"}]}
    assert portable("/opt/venv/bin/python -m benchmarks.baselines.naive_server --host 127.0.0.1 --port 56629 "
                    "--model mnist-mlp=/tmp/model-zoo-bench-x1/checkpoints/mnist-mlp/best.pt", results) == (
        "python -m benchmarks.baselines.naive_server --host 127.0.0.1 --port PORT "
        "--model mnist-mlp=<work>/checkpoints/mnist-mlp/best.pt")
    assert portable("/opt/venv/bin/bentoml serve service.app:ModelZoo --port 52443", results) == \
        "bentoml serve service.app:ModelZoo --port PORT"
    assert portable("python -m export.bootstrap --quick --data-dir /srv/data --out-dir <work>/checkpoints", results) == \
        "python -m export.bootstrap --quick --data-dir $DATA_DIR --out-dir <work>/checkpoints"


def test_pyspy_summary_stages(tmp_path):
    from benchmarks.profiles import summarise_pyspy

    raw = tmp_path / "raw.txt"
    raw.write_text(
        'process 11:"bentoml worker";run (asyncio/events.py:80);classify (service/core/classifier.py:88);'
        "preprocess (/x/service/core/preprocess.py:140);load (PIL/ImageFile.py:290) 30\n"
        'process 11:"bentoml worker";_run_batch (service/core/batching.py:85);run (service/core/runtime.py:130);'
        "run (onnxruntime/capi/onnxruntime_inference_collection.py:266) 50\n"
        'process 11:"bentoml worker";run (asyncio/events.py:80);_read (uvicorn/protocols/http/h11_impl.py:200) 20\n'
        "garbage line without a count\n")
    s = summarise_pyspy(raw)
    assert s["samples"] == 100
    assert s["stages"] == {"model inference (runtime.run)": 50.0, "decode + preprocess (PIL, numpy)": 30.0,
                           "HTTP server + event loop (uvicorn, h11, starlette, asyncio)": 20.0}
    assert s["self"][0] == ("run (onnxruntime/capi/onnxruntime_inference_collection.py)", 50.0)
    assert sum(s["processes"].values()) == 100


def test_gpu_script_cpu_fallback(tmp_path):
    """benchmarks/gpu.sh's code path on the CPU: random-init MLP exported, every CPU runtime measured."""
    import json
    import subprocess

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(["bash", "benchmarks/gpu.sh", "--cpu", "--quick", "--families", "mnist-mlp",
                           "--out-dir", str(tmp_path)], cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu-cpu-fallback.json").read_text())
    assert result["device"].startswith("CPU fallback")
    assert {r["runtime"] for r in result["rows"]} == {"eager-fp32", "torchscript-fp32", "ort-cpu-fp32"}
    assert all(r["items_per_s"] > 0 for r in result["rows"])
    assert "| ort-cpu-fp32 |" in (tmp_path / "gpu-cpu-fallback.md").read_text()
    assert not (tmp_path / "gpu.json").exists()  # CPU figures never pose as GPU ones in docs/benchmarks.md
