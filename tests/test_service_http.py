"""Integration: a real ``bentoml serve service.service:ModelZoo`` over HTTP, with freshly exported models.

One server per session (``zoo_server``, shared with test_service_oip.py): a temporary BENTOML_HOME
gets an MLP trained briefly on real MNIST and a small GRU trained briefly on sine windows, both
exported and registered through the real exporter CLI (``python -m export``). Answers are compared
with eager PyTorch on the same checkpoints and real MNIST test images.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from fixtures_data import mnist_data_dir
from training.checkpoint import save_checkpoint
from training.data import mnist_tensors, sine_windows
from training.models import build_model, model_config
from training.specs import make_spec

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WARMUP_S = 2.0  # MODEL_ZOO_WARMUP_S for the test server: long enough to observe /readyz before warm-up
SINE_LIMITS = {"min_history": 2, "max_history": 400, "max_steps": 50}


@dataclass
class Zoo:
    url: str
    mlp: torch.nn.Module
    rnn: torch.nn.Module
    digits: list[tuple[str, bytes]]  # real MNIST test images as PNG files
    x_test: torch.Tensor  # (N, 784) the same images, preprocessed as training does
    y_test: torch.Tensor
    early: list[tuple[int, int, int]]  # (livez, readyz, /v2/health/ready) seen before ready
    log: Path


def _checkpoint(path: Path, family: str, model: torch.nn.Module, cfg: dict, spec) -> Path:
    return save_checkpoint(path, {
        "model": model.state_dict(), "optimizer": None, "scheduler": None, "epoch": 1,
        "config": {"family": family, "model": asdict(model_config(family, cfg)),
                   "train": {"data_dir": str(mnist_data_dir())}},
        "spec": spec.to_dict(), "metrics": {},
    })


def _train_models(tmp: Path) -> tuple[Path, torch.nn.Module, Path, torch.nn.Module]:
    torch.manual_seed(0)
    x, y = mnist_tensors(str(mnist_data_dir()), train=True, limit=6000).tensors  # (N, 784)
    mlp = build_model("mnist-mlp", {})
    opt = torch.optim.SGD(mlp.parameters(), lr=0.05, momentum=0.9)
    for idx in torch.randperm(len(x)).split(64):  # one epoch: ~90% test accuracy, seconds on CPU
        opt.zero_grad()
        torch.nn.functional.cross_entropy(mlp(x[idx]), y[idx]).backward()
        opt.step()
    rnn = build_model("sine-rnn", {"cell": "gru"})
    xs, ys = sine_windows(256, 30, seed=0).tensors  # (256, 30, 1)
    opt = torch.optim.Adam(rnn.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.mse_loss(rnn(xs)[0], ys).backward()
        opt.step()
    p1 = _checkpoint(tmp / "mlp.pt", "mnist-mlp", mlp.eval(), {}, make_spec("mnist-mlp"))
    p2 = _checkpoint(tmp / "rnn.pt", "sine-rnn", rnn.eval(), {"cell": "gru"},
                     make_spec("sine-rnn", cell="gru", **SINE_LIMITS))
    return p1, mlp, p2, rnn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, log: Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "BENTOML_HOME": str(home), "MODEL_ZOO_THREADS": "1", **(extra_env or {})}
    proc = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", "service.service:ModelZoo", "--port", str(port), "--host", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> list[tuple[int, int, int]]:
    """Poll until /readyz is 200; returns the (livez, readyz, v2 ready) statuses seen before that."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            live, ready = httpx.get(url + "/livez", timeout=2), httpx.get(url + "/readyz", timeout=2)
            v2 = httpx.get(url + "/v2/health/ready", timeout=2)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        if ready.status_code == 200:
            return seen
        seen.append((live.status_code, ready.status_code, v2.status_code))
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="session")
def zoo_server(tmp_path_factory) -> Zoo:
    tmp = tmp_path_factory.mktemp("zoo")
    home = tmp / "bentoml"
    p_mlp, mlp, p_rnn, rnn = _train_models(tmp)
    env = {**os.environ, "BENTOML_HOME": str(home)}
    for ckpt in (p_mlp, p_rnn):  # the real export path: CLI, verification, registration
        done = subprocess.run([sys.executable, "-m", "export", str(ckpt)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
    import torchvision

    raw = torchvision.datasets.MNIST(str(mnist_data_dir()), train=False)
    digits = []
    for i in range(64):
        buf = io.BytesIO()
        Image.fromarray(raw.data[i].numpy(), mode="L").save(buf, "PNG")
        digits.append((f"test{i}.png", buf.getvalue()))
    x_test, y_test = mnist_tensors(str(mnist_data_dir()), train=False, limit=64).tensors
    log = tmp / "server.log"
    proc, url = start_server(home, log, {"MODEL_ZOO_WARMUP_S": str(WARMUP_S)})
    try:
        early = wait_ready(url, proc, log)
        yield Zoo(url, mlp, rnn, digits, x_test, y_test, early, log)
    finally:
        stop_server(proc)


def eager_probs(mlp: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(mlp(x).double(), dim=1).numpy()


def eager_forecast(rnn: torch.nn.Module, history: list[float], steps: int) -> np.ndarray:
    with torch.no_grad():
        y, state = rnn(torch.tensor(history, dtype=torch.float32).reshape(1, -1, 1))
        out = []
        for _ in range(steps):
            nxt = y[:, -1:, :]
            out.append(float(nxt))
            y, state = rnn(nxt, state)
    return np.asarray(out)


def post_images(url: str, files: list[tuple[str, bytes]], route: str = "/classify_digit", **kw) -> httpx.Response:
    parts = [("images", (name, data, "image/png")) for name, data in files]
    return httpx.post(url + route, files=parts, timeout=60, **kw)


# ---------------------------------------------------------------------------- health


def test_readiness_turns_200_only_after_warmup(zoo_server):
    assert zoo_server.early, "never saw the server before warm-up finished"
    assert all(live == 200 and ready == 503 for live, ready, _ in zoo_server.early)
    assert zoo_server.early[0][2] == 400  # OIP readiness: 4xx means false (it may flip during the last poll)
    assert httpx.get(zoo_server.url + "/readyz").status_code == 200
    assert httpx.get(zoo_server.url + "/v2/health/ready").status_code == 200
    log = zoo_server.log.read_text()
    assert "mnist-mlp:" in log and "CPUExecutionProvider" in log  # the provider actually used is logged


# ---------------------------------------------------------------------------- classification


def test_classify_digit_many_images_match_eager(zoo_server):
    r = post_images(zoo_server.url, zoo_server.digits)
    assert r.status_code == 200, r.text
    results = r.json()
    assert len(results) == 64
    probs = eager_probs(zoo_server.mlp, zoo_server.x_test)
    for res, p, y in zip(results, probs, zoo_server.y_test.tolist()):
        assert res["index"] == int(p.argmax()) and res["label"] == str(res["index"])
        assert res["score"] == pytest.approx(p.max(), abs=1e-4)
        assert [e["index"] for e in res["top_k"]] == list(np.argsort(-p, kind="stable")[:5])
        assert res["top_k"][0] == {"label": res["label"], "index": res["index"], "score": res["score"]}
    accuracy = np.mean([res["index"] == y for res, y in zip(results, zoo_server.y_test.tolist())])
    assert accuracy > 0.8  # a briefly trained MLP on real digits: the pipeline keeps what it learned


@pytest.mark.parametrize("convert", ["RGB", "P", "LA", "I;16", "CMYK", "JPEG-as-png"])
def test_colour_modes_and_formats_are_converted(zoo_server, convert):
    name, data = zoo_server.digits[0]
    img = Image.open(io.BytesIO(data))
    buf = io.BytesIO()
    if convert == "I;16":
        Image.fromarray(np.asarray(img).astype(np.uint16) * 257).save(buf, "PNG")  # 16-bit grayscale PNG
    elif convert in ("CMYK", "JPEG-as-png"):
        img.convert("CMYK" if convert == "CMYK" else "L").save(buf, "JPEG", quality=98)
    else:
        img.convert(convert).save(buf, "PNG")
    r = post_images(zoo_server.url, [("digit.png", buf.getvalue())])  # declared image/png in every case
    assert r.status_code == 200, r.text
    expected = int(eager_probs(zoo_server.mlp, zoo_server.x_test[:1]).argmax())
    assert r.json()[0]["index"] == expected


def test_concurrent_requests_are_batched_together(zoo_server):
    def batch_stats() -> tuple[float, float]:
        text = httpx.get(zoo_server.url + "/metrics").text
        count = float(re.search(r'model_zoo_batch_size_count\{model="mnist-mlp"\} (\S+)', text).group(1))
        total = float(re.search(r'model_zoo_batch_size_sum\{model="mnist-mlp"\} (\S+)', text).group(1))
        return count, total

    count0, sum0 = batch_stats()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=zoo_server.url, timeout=60) as client:
            reqs = []
            for i in range(48):
                name, data = zoo_server.digits[i % 64]
                reqs.append(client.post("/classify_digit", files=[("images", (name, data, "image/png"))]))
            return await asyncio.gather(*reqs)

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:3]
    for i, r in enumerate(responses):  # each request got its own image's answer back
        assert r.json()[0]["index"] == int(eager_probs(zoo_server.mlp, zoo_server.x_test[i % 64:i % 64 + 1]).argmax())
    count1, sum1 = batch_stats()
    assert sum1 - sum0 == 48  # every image went through the batcher exactly once
    assert count1 - count0 < 48, "no two requests shared a model call"
    text = httpx.get(zoo_server.url + "/metrics").text
    assert 'model_zoo_inference_seconds_count{model="mnist-mlp"}' in text
    assert "bentoml_service_request_duration_seconds" in text  # BentoML's own metrics are still there


# ---------------------------------------------------------------------------- forecast


def test_forecast_matches_eager_rollout(zoo_server):
    history = [float(np.sin(0.1 * 1.3 * k)) for k in range(40)]
    r = httpx.post(zoo_server.url + "/forecast_sine", json={"history": history, "steps": 25})
    assert r.status_code == 200, r.text
    forecast = np.asarray(r.json()["forecast"])
    assert forecast.shape == (25,)
    np.testing.assert_allclose(forecast, eager_forecast(zoo_server.rnn, history, 25), rtol=1e-4, atol=1e-5)


def test_missing_model_answers_503_with_how_to(zoo_server):
    for route in ("/classify_cifar10", "/classify_image"):
        r = post_images(zoo_server.url, zoo_server.digits[:1], route=route)
        assert r.status_code == 503
        assert "not in the model store" in r.json()["error"] and "make models" in r.json()["error"]
