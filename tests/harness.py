"""Helpers for the tests (the fixtures that use them are in conftest.py).

- ``make_checkpoint``, ``quick_mlp``, ``samples_for``: checkpoints in the real training format.
- ``build_zoo``: the shared integration server, one real ``bentoml serve service.app:ModelZoo``
  per test session. A temporary BENTOML_HOME gets an MLP trained briefly on real MNIST, a forecaster
  trained by the sine-rnn recipe's ``--quick`` (the default band) and an untrained transfer ResNet-18, all exported and registered
  through the real exporter CLI (``python -m export``). Answers are compared with eager PyTorch on the
  same checkpoints and real MNIST test images (``eager_probs``, ``eager_forecast``).
- ``serve``: any further test server, started with the one server helper (devtools/launch.py);
  ``home_over`` gives it a home of its own over the shared store.
- ``Blocker``, ``photos``: a large ``transfer-resnet18`` request that later ones queue behind (the
  deadline and queue tests of each protocol).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import torch
from fixtures_data import mnist_data_dir, write_image_folder
from PIL import Image

from devtools.launch import ONE_WORKER, ROOT, Server, home_over, spawn_service
from export.pipeline import validation_samples
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import mnist_tensors
from training.models import build_model, model_config
from training.specs import make_spec
from zoo.spec import Spec

__all__ = ["BLOCKER", "Blocker", "ROOT", "SLOW_ROUTE", "Zoo", "build_zoo", "eager_forecast", "eager_probs",
           "home_over", "make_checkpoint", "photos", "post_images", "quick_mlp", "samples_for", "serve", "sibling_home"]

WARMUP_S = 2.0  # MODEL_ZOO_WARMUP_S for the shared server: long enough to observe /readyz before warm-up
SINE_LIMITS = {"min_history": 2, "max_history": 400, "max_steps": 50}
# fp32 everywhere: answers are compared with eager PyTorch at fp32 tolerances (auto is fp16 on a GPU)
TEST_ENV = {**ONE_WORKER, "MODEL_ZOO_PRECISION": "fp32"}
TRANSFER_CLASSES = ("cat", "dog", "fox")


def make_checkpoint(path: Path, family: str, spec: Spec, model_cfg: dict | None = None, model=None,
                    train: dict | None = None) -> Path:
    """A checkpoint in the training/checkpoint.py format (what `python -m training` writes)."""
    model = model if model is not None else build_model(family, model_cfg or {})
    return save_checkpoint(path, {
        "model": model.state_dict(), "optimizer": None, "scheduler": None, "epoch": 1,
        "config": {"family": family, "model": asdict(model_config(family, model_cfg or {})), "train": train or {}},
        "spec": spec.to_dict(), "metrics": {},
    })


def quick_mlp(limit: int) -> torch.nn.Module:
    """An MLP trained one epoch on ``limit`` real MNIST training images (~90% test accuracy, seconds on CPU)."""
    torch.manual_seed(0)
    x, y = mnist_tensors(str(mnist_data_dir()), train=True, limit=limit).tensors  # (N, 784) normalised
    model = build_model("mnist-mlp", {})
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for idx in torch.randperm(len(x)).split(64):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def samples_for(path: Path, n: int, data_dir: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The validation samples a real export of this checkpoint verifies on."""
    ckpt = torch.load(path, weights_only=True)
    return validation_samples(ckpt, Spec.from_dict(ckpt["spec"]), n, str(data_dir) if data_dir else None)


def serve(home: Path, log: Path, env: dict[str, str] | None = None, timeout: float = 120) -> Server:
    """A ready ``bentoml serve`` over ``home`` with the test settings (one worker, fp32) plus ``env``;
    ``with serve(...) as server:`` stops it at the end."""
    return spawn_service(home, log, {**TEST_ENV, **(env or {})}).wait_ready(timeout)


def sibling_home(zoo: "Zoo", tmp: Path) -> Path:
    """A fresh BENTOML_HOME over the shared server's store (see ``home_over``: never share its home)."""
    return home_over(zoo.home, tmp)


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
    transfer: torch.nn.Module  # untrained transfer-resnet18 (3 classes): checks the RGB 224 path
    classes: tuple[str, ...]
    home: Path  # its BENTOML_HOME


def build_zoo(tmp: Path) -> Iterator[Zoo]:
    """Train, export (the real CLI: verification, registration) and serve; yields the ready server."""
    home = tmp / "bentoml"
    env = {**os.environ, "BENTOML_HOME": str(home)}
    mlp = quick_mlp(6000)
    # the sine-rnn recipe's --quick: the default band, so the original sin(t) example forecasts within the target
    # (its own process, as a user runs it: training sets process-wide torch state, e.g. flush-denormal)
    trained = subprocess.run([sys.executable, "-m", "training", "sine-rnn", "--quick", "--out-dir", str(tmp / "sine"),
                              "--log-dir", str(tmp / "sine-runs"), "--no-progress"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    trained = load_checkpoint(tmp / "sine" / "best.pt")
    rnn_cfg = trained["config"]["model"]
    rnn = build_model("sine-rnn", rnn_cfg)
    rnn.load_state_dict(trained["model"])
    rnn.eval()
    band = {k: trained["spec"]["sequence"][k] for k in ("freq_range", "amp_range", "dt")}
    rnn_spec = make_spec("sine-rnn", cell=rnn_cfg["cell"], hidden_size=rnn_cfg["hidden_size"],
                         num_layers=rnn_cfg["num_layers"], **band, **SINE_LIMITS)
    # An untrained ResNet-18 transfer model over a tiny real-format ImageFolder: only the fp32 ONNX
    # graph (int8 calibration of a ResNet would cost a minute here), enough to check the RGB/224 path.
    folder = write_image_folder(tmp / "folder", classes=TRANSFER_CLASSES, per_class=4, split=True, size=64)
    torch.manual_seed(0)
    transfer = build_model("transfer-resnet18", {"num_classes": 3}).eval()
    mnist = {"data_dir": str(mnist_data_dir())}
    exports = (
        (make_checkpoint(tmp / "mlp.pt", "mnist-mlp", make_spec("mnist-mlp"), model=mlp, train=mnist), []),
        (make_checkpoint(tmp / "rnn.pt", "sine-rnn", rnn_spec, rnn_cfg, model=rnn, train=mnist), []),
        (make_checkpoint(tmp / "transfer.pt", "transfer-resnet18", make_spec("transfer-resnet18", classes=list(TRANSFER_CLASSES)),
                         {"num_classes": 3}, model=transfer, train={"data_dir": str(folder)}), ["--formats", "onnx"]),
    )
    for ckpt, extra in exports:
        done = subprocess.run([sys.executable, "-m", "export", str(ckpt), *extra], cwd=ROOT, env=env,
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
    with spawn_service(home, log, {**TEST_ENV, "MODEL_ZOO_WARMUP_S": str(WARMUP_S)}) as server:
        server.wait_ready(90, watch=("/livez", "/readyz", "/v2/health/ready"))
        yield Zoo(server.url, mlp, rnn, digits, x_test, y_test, server.seen, log, transfer, TRANSFER_CLASSES, home)


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


BLOCKER = 24  # images in the request the others queue behind (about a second of ResNet-18 on one CPU thread)
SLOW_ROUTE = "/models/transfer-resnet18/classify"


def photos(n: int) -> list[tuple[str, bytes]]:
    """``n`` small random RGB PNG files (seeded by ``n``)."""
    rng = np.random.default_rng(n)
    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append((f"p{i}.png", buf.getvalue()))
    return out


class Blocker(threading.Thread):
    """A large ``transfer-resnet18`` request the next ones queue behind; ``done`` once answered."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.url, self.headers, self.done = url, headers or {}, threading.Event()
        self.start()
        time.sleep(0.5)  # its upload is read and its batch formed (it is alone: formed at once)

    def run(self) -> None:
        try:
            self.response = post_images(self.url, photos(BLOCKER), route=SLOW_ROUTE, headers=self.headers)
        finally:
            self.done.set()
