"""Unit tests without a server: runtime selection over real exported files, the OIP codec, the batcher,
the settings parser and post-processing."""

from __future__ import annotations

import asyncio
import json
import logging
import struct

import numpy as np
import pytest
import torch

from export import parse_formats
from export.pipeline import build_artifacts
from service.config import ConfigError, Settings, worker_cores
from service.core.band import band_warning, fit_sine
from service.core.batching import Batcher
from service.core.classifier import softmax, top_k
from service.core.runtime import cuda_device_count, load_session
from service.errors import BadRequest, Overloaded
from service.http.oip_codec import encode_response, parse_infer
from training.models import build_model
from training.specs import make_spec
from zoo.spec import Spec


@pytest.fixture(scope="module")
def mlp_dir(tmp_path_factory):
    """Every artifact of a small random MLP, as export writes them into a store entry."""
    torch.manual_seed(0)
    model, spec = build_model("mnist-mlp", {"hidden": (32,)}).eval(), make_spec("mnist-mlp")
    out = tmp_path_factory.mktemp("mlp")
    calib = torch.randn(64, 784).numpy()
    build_artifacts(model, spec, parse_formats(None), out, calib)
    return out, model, spec


@pytest.mark.skipif(cuda_device_count() > 0, reason="the CPU branches: a GPU host takes the CUDA ones")
def test_runtime_choices_on_cpu(mlp_dir, caplog):
    path, model, spec = mlp_dir
    x = np.random.default_rng(0).standard_normal((7, 784), dtype=np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    fp32 = load_session(path, spec, "onnx", "auto", threads=1)
    assert (fp32.artifact, fp32.provider) == ("model.onnx", "CPUExecutionProvider")
    np.testing.assert_allclose(fp32.run({"input": x})["logits"], expected, rtol=1e-4, atol=1e-5)
    with caplog.at_level(logging.WARNING, logger="model_zoo.runtime"):
        asked_fp16 = load_session(path, spec, "onnx", "fp16", threads=1)
    assert asked_fp16.artifact == "model.onnx" and "no CUDA device" in caplog.text
    int8 = load_session(path, spec, "onnx", "int8", threads=1)
    assert int8.artifact == "model.int8.onnx"
    assert np.abs(int8.run({"input": x})["logits"] - expected).max() < 0.25  # quantised, not identical
    ts = load_session(path, spec, "torchscript", "auto", threads=1)
    assert ts.provider == "torch:cpu"
    np.testing.assert_allclose(ts.run({"input": x})["logits"], expected, rtol=1e-4, atol=1e-5)


def test_a_graph_with_more_outputs_than_labels_is_a_load_failure_naming_both(mlp_dir, tmp_path):
    """Fewer labels than the graph's outputs passed preflight, then every classify was a 500 (issue 25.7b)."""
    import dataclasses
    import shutil

    from service.core.runtime import RuntimeLoadError

    path, _, spec = mlp_dir
    shutil.copy(path / "model.onnx", tmp_path / "model.onnx")
    for n in (9, 11):
        wrong = dataclasses.replace(spec, labels=spec.labels[:n] if n < 10 else (*spec.labels, "extra"))
        with pytest.raises(RuntimeLoadError, match=f"model.onnx: the graph's output 'logits' has 10 classes "
                                                   f"but the spec lists {n} labels"):
            load_session(tmp_path, wrong, "onnx", "fp32", threads=1)
    assert load_session(tmp_path, spec, "onnx", "fp32", threads=1).artifact == "model.onnx"


@pytest.mark.parametrize("artifact, precision, runtime", [("model.onnx", "fp32", "onnx"),
                                                          ("model.int8.onnx", "int8", "onnx"),
                                                          ("model.ts", "auto", "torchscript")])
@pytest.mark.parametrize("kind", ["a FIFO", "a directory"])
def test_an_artifact_that_is_not_a_regular_file_fails_at_once(mlp_dir, tmp_path, artifact, precision, runtime, kind):
    """A FIFO as model.onnx hung preflight, and each load held a thread for ever (issue 25.7c)."""
    import os
    import shutil
    import threading

    from service.core.runtime import RuntimeLoadError

    path, _, spec = mlp_dir
    shutil.copy(path / "model.onnx", tmp_path / "model.onnx")
    target = tmp_path / artifact
    target.unlink(missing_ok=True)
    os.mkfifo(target) if kind == "a FIFO" else target.mkdir()
    raised: list[BaseException] = []

    def load() -> None:
        try:
            load_session(tmp_path, spec, runtime, precision, threads=1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            raised.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():  # release the blocked open so the thread ends with the test
        os.close(os.open(target, os.O_WRONLY | os.O_NONBLOCK)) if kind == "a FIFO" else None
        pytest.fail(f"loading with {artifact} as {kind} still blocks after 20 s")
    assert len(raised) == 1 and isinstance(raised[0], RuntimeLoadError), raised
    assert str(raised[0]) == f"{target}: {kind}, not a regular file; re-export the model (python -m export)"


def test_settings_from_env(monkeypatch):
    monkeypatch.setenv("MODEL_ZOO_MAX_IMAGES", "12")
    monkeypatch.setenv("MODEL_ZOO_RUNTIME", "TorchScript")
    s = Settings.from_env()
    assert s.max_images == 12 and s.runtime == "torchscript"
    assert s.models is None and s.workers == worker_cores() and s.workers * s.threads <= worker_cores()
    monkeypatch.setenv("MODEL_ZOO_MODELS", " mnist-mlp , my-flowers:abc123 ")
    monkeypatch.setenv("MODEL_ZOO_WORKERS", "1")
    s = Settings.from_env()
    assert s.models == (("mnist-mlp", None), ("my-flowers", "abc123")) and s.threads == worker_cores()
    monkeypatch.delenv("MODEL_ZOO_MODELS")
    monkeypatch.delenv("MODEL_ZOO_WORKERS")
    for name, value, fragment in [("MODEL_ZOO_MAX_IMAGES", "5000", "out of range"),
                                  ("MODEL_ZOO_PRECISION", "fp8", "choose one of"),
                                  ("MODEL_ZOO_MAX_BODY_MB", "lots", "not an integer"),
                                  ("MODEL_ZOO_MODELS", "mnist-mlp,my.model", "invalid model name 'my.model'"),
                                  ("MODEL_ZOO_MODELS", "mnist-mlp:latest", "not 'latest'"),
                                  ("MODEL_ZOO_MODELS", "a,b:v1,a", "names a model twice"),
                                  ("MODEL_ZOO_WORKERS", "0", "out of range"),
                                  ("MODEL_ZOO_WORKERS", "-1", "out of range"),
                                  ("MODEL_ZOO_WORKERS", "two", "not an integer"),
                                  ("MODEL_ZOO_THREADS", str(worker_cores() + 1), "out of range")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=fragment):
            Settings.from_env()
        monkeypatch.delenv(name)


def test_softmax_and_top_k():
    logits = np.array([[1.0, 3.0, 2.0, 3.0], [1000.0, 0.0, -1000.0, 0.0]], np.float32)
    p = softmax(logits)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert np.isfinite(p).all()
    best = top_k(p, ("a", "b", "c", "d"), 3)
    assert [e["index"] for e in best[0]] == [1, 3, 2]  # ties keep the lower index first
    assert best[1][0] == {"label": "a", "index": 0, "score": 1.0}


def test_oip_codec_binary_roundtrip_and_nested_json():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    items = [b"ab", b"", b"xyz"]
    blob = b"".join(struct.pack("<I", len(b)) + b for b in items)
    header = json.dumps({"inputs": [
        {"name": "a", "shape": [2, 3], "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}},
        {"name": "b", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}},
        {"name": "c", "shape": [2, 2], "datatype": "INT32", "data": [[1, 2], [3, 4]]},
    ]}).encode()
    req = parse_infer(header + x.tobytes() + blob, str(len(header)))
    np.testing.assert_array_equal(req.inputs["a"].value, x)
    assert req.inputs["b"].value == items
    np.testing.assert_array_equal(req.inputs["c"].value, [[1, 2], [3, 4]])
    body, headers = encode_response({"model_name": "m"}, [({"name": "y", "datatype": "FP32", "shape": [2, 3]}, x, True),
                                                          ({"name": "s", "datatype": "BYTES", "shape": [1]}, [b"0.5:1:a"], False)])
    split = int(headers["inference-header-content-length"])
    meta = json.loads(body[:split])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 24 and meta["outputs"][1]["data"] == ["0.5:1:a"]
    np.testing.assert_array_equal(np.frombuffer(body[split:], "<f4").reshape(2, 3), x)


@pytest.mark.parametrize("body,fragment", [
    (b"[]", "non-empty 'inputs'"),
    (json.dumps({"inputs": [{"name": "a", "shape": [2], "datatype": "FP32", "data": [1.0, True]}]}).encode(), "must be numbers"),
    (json.dumps({"inputs": [{"name": "a", "shape": [-1], "datatype": "FP32", "data": []}]}).encode(), "non-negative integers"),
    (json.dumps({"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]},
                            {"name": "a", "shape": [1], "datatype": "FP32", "data": [1.0]}]}).encode(), "given twice"),
])
def test_oip_codec_rejects(body, fragment):
    with pytest.raises(BadRequest, match=fragment):
        parse_infer(body, None)


def test_batcher_groups_concurrent_requests_and_splits_results():
    calls: list[int] = []

    def double(batch: np.ndarray) -> np.ndarray:
        calls.append(len(batch))
        return batch * 2

    async def main() -> list[np.ndarray]:
        batcher = Batcher("unit", double, max_batch=64, max_latency_ms=5000, metrics=False)
        for _ in range(14):  # past the dispatcher's 12-call training phase, which runs one at a time
            await batcher(np.zeros((1, 2), np.float32))
        calls.clear()
        inputs = [np.full((i % 3 + 1, 2), i, np.float32) for i in range(30)]
        outs = await asyncio.gather(*(batcher(x) for x in inputs))
        batcher.shutdown()
        for x, y in zip(inputs, outs):
            np.testing.assert_array_equal(y, x * 2)  # every request gets its own rows back
        return outs

    asyncio.run(main())
    assert sum(calls) == sum(i % 3 + 1 for i in range(30)) and len(calls) < 30 and max(calls) <= 64


def test_a_request_larger_than_a_batch_is_not_shed_on_a_slow_model():
    """A 10-item request on a model taking 0.2 s per 4-item call: its later chunks wait ~0.4 s, past a
    100 ms budget. After calibration (warm-up measures the model) the budget covers it."""
    import time

    def slow(batch: np.ndarray) -> np.ndarray:
        time.sleep(0.05 * len(batch))  # 50 ms per item
        return batch + 1

    async def run(calibrated: bool) -> int:
        batcher = Batcher("slow", slow, max_batch=4, max_latency_ms=100, metrics=False)
        for _ in range(13):  # the dispatcher's training phase
            await batcher(np.zeros((1, 1), np.float32))
        if calibrated:
            assert batcher.calibrate(0.05) == pytest.approx(3 * 0.05 * 4)
        shed = 0
        for _ in range(2):
            try:
                out = await batcher(np.zeros((10, 1), np.float32))
                np.testing.assert_array_equal(out, np.ones((10, 1)))
            except Overloaded:
                shed += 1
        batcher.shutdown()
        return shed

    assert asyncio.run(run(calibrated=False)) > 0  # the failure this guards against is real
    assert asyncio.run(run(calibrated=True)) == 0


def test_a_cheap_model_runs_its_batches_on_the_event_loop_and_a_slow_one_in_a_thread():
    """calibrate() picks where model calls run: a full batch under INLINE_BATCH_S on the loop (no thread
    hand-off), otherwise a worker thread (keeps the loop free); answers are the same either way."""
    import threading

    from service.core.batching import INLINE_BATCH_S

    threads: list[int] = []

    def plus_one(batch: np.ndarray) -> np.ndarray:
        threads.append(threading.get_ident())
        return batch + 1

    async def run(seconds_per_item: float) -> tuple[bool, set[int], int]:
        batcher = Batcher("unit", plus_one, max_batch=8, max_latency_ms=5000, metrics=False)
        batcher.calibrate(seconds_per_item)
        threads.clear()
        inputs = [np.full((1, 2), i, np.float32) for i in range(20)]
        outs = await asyncio.gather(*(batcher(x) for x in inputs))
        for x, y in zip(inputs, outs):
            np.testing.assert_array_equal(y, x + 1)
        batcher.shutdown()
        return batcher.inline, set(threads), threading.get_ident()

    inline, used, loop_thread = asyncio.run(run(INLINE_BATCH_S / 8 / 2))
    assert inline and used == {loop_thread}
    inline, used, loop_thread = asyncio.run(run(INLINE_BATCH_S / 8 * 2))
    assert not inline and loop_thread not in used


@pytest.mark.parametrize("w, a, phase", [(0.204, 1.0, 0.0), (10 / 49, 0.5, 2.0), (0.05, 1.5, -1.0), (1.2, 0.8, 3.0)])
def test_fit_sine_recovers_frequency_and_amplitude(w, a, phase):
    x = a * np.sin(w * np.arange(10) + phase)  # 10 points, as the original example's history
    fit = fit_sine(x)
    assert fit.rad_per_step == pytest.approx(w, rel=1e-5) and fit.amplitude == pytest.approx(a, rel=1e-5)
    rng = np.random.default_rng(0)  # noise of 0.005 on 40 points moves the estimates little
    noisy = fit_sine(a * np.sin(w * np.arange(40) + phase) + 0.005 * rng.standard_normal(40))
    assert noisy.rad_per_step == pytest.approx(w, rel=1e-2, abs=1e-3) and noisy.amplitude == pytest.approx(a, rel=2e-2)


def test_band_warning_names_what_is_outside_and_reads_old_specs():
    seq = make_spec("sine-rnn", freq_range=(2.02, 2.06), amp_range=(0.5, 1.5), dt=0.1).sequence
    k = np.arange(12)
    assert band_warning(np.sin(0.204 * k + 1), seq) is None
    assert "angular frequency 2.2 rad per time unit (0.22 rad per step" in band_warning(np.sin(0.22 * k), seq)
    assert "amplitude 0.3 is outside the trained 0.5-1.5" in band_warning(0.3 * np.sin(0.204 * k), seq)
    assert "4 points, too few" in band_warning(np.sin(0.204 * k[:4]), seq)
    assert band_warning(np.zeros(12), seq) == ("history fitted as a sine: amplitude 0 is outside the trained 0.5-1.5: "
                                               "the forecast may drift off the curve")
    # a spec stored without the band fields still loads (SequenceSpec's defaults) and is checked against them
    old = make_spec("sine-rnn").to_dict()
    for key in ("freq_range", "amp_range", "dt"):
        del old["sequence"][key]
    seq_old = Spec.from_dict(old).sequence
    assert seq_old.freq_range == (1.98, 2.02) and band_warning(np.sin(0.2 * k), seq_old) is None


def test_the_route_table_and_the_openapi_document_agree():
    """Every route the mounted app serves is described (or a page), and nothing described is unserved."""
    from service.http import openapi
    from service.http.routes import mounted, table

    served = {route.path for route in mounted()}
    described = set(openapi.paths())
    assert served - openapi.UNDOCUMENTED == described, (served - openapi.UNDOCUMENTED) ^ described
    assert described <= set(table())


def test_a_full_batch_is_estimated_from_a_fixed_cost_per_call_and_a_cost_per_item():
    """Warm-up times batches of 1-8 items; a full batch of 128 is what decides where calls run. A call's
    fixed cost must not be counted once per item (what put the MNIST MLP in a worker thread on some starts)."""
    from service.core.batching import INLINE_BATCH_S
    from service.core.classifier import full_batch_seconds

    def calls(fixed: float, per_item: float, noise: dict[int, float] | None = None) -> dict[int, float]:
        return {n: fixed + per_item * n + (noise or {}).get(n, 0.0) for n in (1, 2, 4, 8)}

    tiny = calls(150e-6, 2e-6)  # an MLP warming up: dispatch (and a busy machine) dominate a small call
    assert full_batch_seconds(tiny, 128) == pytest.approx(150e-6 + 2e-6 * 128)
    assert full_batch_seconds(tiny, 128) < INLINE_BATCH_S < tiny[8] / 8 * 128  # the old estimate: over it
    big = calls(1e-4, 5e-3)  # a ResNet: the cost is per image
    assert full_batch_seconds(big, 128) == pytest.approx(1e-4 + 5e-3 * 128)
    noisy = calls(40e-6, 1.5e-6, {1: 60e-6})  # one slow call of size 1 can tilt the fit, not below the data
    assert full_batch_seconds(noisy, 8) >= noisy[8]
    assert full_batch_seconds({8: 8e-3}, 128) == pytest.approx(0.128)  # one size: per item from it alone


@pytest.mark.parametrize("chunk", [1 << 20, 7], ids=["whole", "7-byte-chunks"])
def test_uploads_are_the_files_a_real_client_encoded_in_order(chunk):
    """service/http/uploads.py parses with python-multipart itself: the files httpx encodes come back byte
    for byte, in order, whatever the chunking; another field is named, a text part in ``images`` refused."""
    import httpx
    from starlette.requests import Request

    from service.http.uploads import read_uploads

    rng = np.random.default_rng(0)
    blobs = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (1, 1000, 70_000)]
    blobs.append(b"--boundary-like\r\n--\r\n" * 50)  # the delimiter's look-alikes inside a file

    def parse(files: list, data: dict | None = None):
        req = httpx.Request("POST", "http://x/classify_digit", files=files, data=data)
        body, content_type = req.read(), req.headers["content-type"]
        pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]

        async def receive() -> dict:
            return {"type": "http.request", "body": pieces.pop(0), "more_body": bool(pieces)}

        scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-type", content_type.encode())]}
        return asyncio.run(read_uploads(Request(scope, receive), max_images=8))

    out = parse([("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)], data={"note": "x"})
    assert out.error is None and out.files == [(f"{i}.png", b) for i, b in enumerate(blobs)]
    text = parse([("images", ("a.png", blobs[0], "image/png"))], data={"images": "http://169.254.169.254/"})
    assert text.error is not None and "images[0] is a text field" in text.error.message  # httpx sends data first
    other = parse([("image", ("a.png", blobs[0], "image/png"))], data={"note": "x"})
    assert other.error is not None and "(fields sent: image, note)" in other.error.message
    many = parse([("images", (f"{i}.png", b"x", "image/png")) for i in range(9)])
    assert many.error is not None and many.error.status == 413 and "the cap is 8" in many.error.message
