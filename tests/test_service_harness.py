"""The integration harness: one real ``bentoml serve service.service:ModelZoo`` per test session.

Loaded as a plugin (``pytest_plugins = ["test_service_harness"]`` in each test_service_* module), so
``zoo_server`` is one session fixture shared by all of them. A temporary BENTOML_HOME
gets an MLP trained briefly on real MNIST and a sine forecaster trained by the sine-rnn recipe's
``--quick`` (the default band, so the original sin(t) example forecasts within the target), both
exported and registered through the real exporter CLI (``python -m export``). Answers are compared
with eager PyTorch on the same checkpoints and real MNIST test images.
"""

from __future__ import annotations

import io
import os
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

from fixtures_data import mnist_data_dir, write_image_folder
from training.checkpoint import load_checkpoint, save_checkpoint
from training.data import mnist_tensors
from training.models import build_model, model_config
from training.recipes import sine_rnn
from training.specs import make_spec

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
    transfer: torch.nn.Module  # untrained transfer-resnet18 (3 classes): checks the RGB 224 path
    classes: tuple[str, ...]


TRANSFER_CLASSES = ("cat", "dog", "fox")


def _checkpoint(path: Path, family: str, model: torch.nn.Module, cfg: dict, spec, data_dir: Path | None = None) -> Path:
    return save_checkpoint(path, {
        "model": model.state_dict(), "optimizer": None, "scheduler": None, "epoch": 1,
        "config": {"family": family, "model": asdict(model_config(family, cfg)),
                   "train": {"data_dir": str(data_dir or mnist_data_dir())}},
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
    threads = torch.get_num_threads()
    out = sine_rnn.main(["--quick", "--out-dir", str(tmp / "sine"), "--log-dir", str(tmp / "sine-runs"), "--no-progress"])
    torch.set_num_threads(threads)  # the recipe chose its own
    trained = load_checkpoint(out["checkpoint"])
    cfg = trained["config"]["model"]
    rnn = build_model("sine-rnn", cfg)
    rnn.load_state_dict(trained["model"])
    band = {k: trained["spec"]["sequence"][k] for k in ("freq_range", "amp_range", "dt")}
    p1 = _checkpoint(tmp / "mlp.pt", "mnist-mlp", mlp.eval(), {}, make_spec("mnist-mlp"))
    p2 = _checkpoint(tmp / "rnn.pt", "sine-rnn", rnn.eval(), cfg,
                     make_spec("sine-rnn", cell=cfg["cell"], hidden_size=cfg["hidden_size"],
                               num_layers=cfg["num_layers"], **band, **SINE_LIMITS))
    return p1, mlp, p2, rnn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, log: Path, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    # fp32 everywhere: the answers are compared with eager PyTorch at fp32 tolerances (auto is fp16 on a GPU)
    env = {**os.environ, "BENTOML_HOME": str(home), "MODEL_ZOO_WORKERS": "1", "MODEL_ZOO_THREADS": "1",
           "MODEL_ZOO_PRECISION": "fp32", **(extra_env or {})}
    proc = subprocess.Popen(
        [str(BIN / "bentoml"), "serve", "service.service:ModelZoo", "--port", str(port), "--host", "127.0.0.1"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def sibling_home(zoo: "Zoo", tmp: Path) -> Path:
    """A fresh BENTOML_HOME over zoo_server's model store (``models`` is a symlink to it).

    A second server must not share zoo_server's home: ``bentoml serve`` empties
    ``$BENTOML_HOME/prometheus_multiproc_dir`` at start-up, which deletes the live metric files of the
    running zoo_server (its /metrics then stops moving and the batching test fails).
    """
    home = tmp / "bentoml"
    home.mkdir(parents=True)
    (home / "models").symlink_to(zoo.log.parent / "bentoml" / "models")
    return home


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
    # An untrained ResNet-18 transfer model over a tiny real-format ImageFolder: only the fp32 ONNX
    # graph (int8 calibration of a ResNet would cost a minute here), enough to check the RGB/224 path.
    folder = write_image_folder(tmp / "folder", classes=TRANSFER_CLASSES, per_class=4, split=True, size=64)
    torch.manual_seed(0)
    transfer = build_model("transfer-resnet18", {"num_classes": 3}).eval()
    p_tr = _checkpoint(tmp / "transfer.pt", "transfer-resnet18", transfer, {"num_classes": 3},
                       make_spec("transfer-resnet18", classes=list(TRANSFER_CLASSES)), data_dir=folder)
    for ckpt, extra in ((p_mlp, []), (p_rnn, []), (p_tr, ["--formats", "onnx"])):
        # the real export path: CLI, verification, registration
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
    proc, url = start_server(home, log, {"MODEL_ZOO_WARMUP_S": str(WARMUP_S)})
    try:
        early = wait_ready(url, proc, log)
        yield Zoo(url, mlp, rnn, digits, x_test, y_test, early, log, transfer, TRANSFER_CLASSES)
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
