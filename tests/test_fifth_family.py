"""A fifth family, registered here and nowhere else, goes through the real paths end to end.

``toy-grid``: a 2-layer MLP on 8x8 grayscale images of a bright horizontal band (top / middle /
bottom: 3 classes). This module is the family's plugin: ``register_serving`` is its torch-free
serving entry (zoo/families.py), ``register`` adds its training entry (training/registry.py), with
the model, recipe, spec and data hooks defined below. The processes find it through
``MODEL_ZOO_FAMILIES=test_fifth_family:FUNCTION`` with tests/ on PYTHONPATH: ``python -m training``
trains it through the engine, ``python -m export`` exports and verifies it into a fresh store, and a
real ``bentoml serve`` answers it over REST (``/models/toy-grid/classify``, its alias route) and OIP.
No product file names it. Module level imports nothing heavy: the server imports this file too.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

NAME, ROUTE = "toy-grid", "classify_grid"
SIDE, LABELS = 8, ("top", "middle", "bottom")
BANDS = ((0, 3), (3, 5), (5, 8))  # rows lit for each class
TESTS = Path(__file__).resolve().parent


@dataclass
class GridConfig:
    in_features: int = SIDE * SIDE
    hidden: int = 16
    num_classes: int = len(LABELS)


def register_serving() -> None:
    """The serving facts: all a torch-free server needs to know of the family."""
    from zoo.families import Family, register_family

    register_family(Family(NAME, "classification", ROUTE, "images", "Band position on an 8x8 grayscale image",
                           "synthetic 8x8 bands", f"python -m training {NAME}", panel="photo"))


def grid_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8, 8) pixels in [0, 1]: the class's rows bright, noise elsewhere; and the (n,) classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(LABELS), n)
    x = rng.uniform(0.0, 0.3, (n, SIDE, SIDE))
    for i, k in enumerate(y):
        lo, hi = BANDS[k]
        x[i, lo:hi] = rng.uniform(0.7, 1.0, (hi - lo, SIDE))
    return x.astype(np.float32), y


def register() -> None:
    """Serving facts plus the training entry: model builder, spec, recipe and data hooks."""
    import torch
    from torch import nn
    from torch.utils.data import TensorDataset

    from training import engine
    from training.data import Splits
    from training.models import build_model, model_config
    from training.options import common_parser, parse, setup_run
    from training.registry import TrainingFamily, register_training
    from zoo.spec import ImageSpec, Spec

    register_serving()

    def build(cfg: GridConfig) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(cfg.in_features, cfg.hidden), nn.ReLU(),
                             nn.Linear(cfg.hidden, cfg.num_classes))  # logits out

    def spec() -> Spec:
        return Spec(family=NAME, task="classification", labels=LABELS,
                    image=ImageSpec(color_mode="L", height=SIDE, width=SIDE, mean=(0.5,), std=(0.5,), layout="NF"))

    def tensors(n: int, seed: int) -> TensorDataset:
        x, y = grid_images(n, seed)
        return TensorDataset((torch.from_numpy(x).reshape(n, -1) - 0.5) / 0.5, torch.from_numpy(y))  # (n, 64)

    def main(argv: Any = None) -> dict[str, Any]:
        args = parse(common_parser(NAME, epochs=4, batch_size=32, lr=1e-2), argv, {})
        device = setup_run(args)
        cfg = model_config(NAME)
        splits = Splits(tensors(512, args.seed), tensors(128, args.seed + 1), tensors(128, args.seed + 2), list(LABELS))
        job = engine.Job(NAME, build_model(NAME, cfg), cfg, spec(), splits, engine.classification_task(args))
        return engine.fit(job, args, device)

    def eval_samples(ckpt: dict[str, Any], n: int, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
        return tensors(n, 1000).tensors

    register_training(TrainingFamily(NAME, GridConfig, build, spec, main, eval_samples))


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray((pixels * 255).round().astype(np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def test_a_fifth_family_trains_exports_and_serves(tmp_path):
    from harness import ROOT, serve

    home = tmp_path / "bentoml"
    path = os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": path,
           "MODEL_ZOO_FAMILIES": "test_fifth_family:register"}

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    assert NAME in run("-m", "training", "--help")
    run("-m", "training", NAME, "--out-dir", str(tmp_path / "ckpt"), "--log-dir", str(tmp_path / "runs"),
        "--no-progress", "--device", "cpu")
    ckpt = tmp_path / "ckpt" / "best.pt"
    tag = run("-m", "export", str(ckpt), "--out-dir", str(tmp_path / "export")).strip().splitlines()[-1]
    assert tag.startswith(f"{NAME}:")

    import torch

    from training.checkpoint import load_checkpoint

    saved = load_checkpoint(ckpt)
    weights = saved["model"]  # the eager reference: Linear(64, 16) -> ReLU -> Linear(16, 3)

    def eager(x: np.ndarray) -> np.ndarray:
        h = torch.relu(torch.from_numpy(x) @ weights["1.weight"].T + weights["1.bias"])
        return (h @ weights["3.weight"].T + weights["3.bias"]).numpy()

    x, y = grid_images(6, seed=7)
    files = [("images", (f"{i}.png", png(img), "image/png")) for i, img in enumerate(x)]
    server_env = {"MODEL_ZOO_FAMILIES": "test_fifth_family:register_serving", "PYTHONPATH": path,
                  "MODEL_ZOO_MODELS": NAME}
    with serve(home, tmp_path / "server.log", server_env) as server:
        rest = httpx.post(f"{server.url}/models/{NAME}/classify", files=files, timeout=60)
        assert rest.status_code == 200, rest.text
        assert [r["label"] for r in rest.json()] == [LABELS[k] for k in y]
        alias = httpx.post(f"{server.url}/{ROUTE}", files=files, timeout=60)
        assert alias.status_code == 200 and alias.json() == rest.json()

        inputs = (x.reshape(len(x), -1) - 0.5) / 0.5  # (N, 64) normalised, as the spec says
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(inputs.shape),
                            "data": inputs.ravel().tolist()}]}
        oip = httpx.post(f"{server.url}/v2/models/{NAME}/infer", json=body, timeout=60)
        assert oip.status_code == 200, oip.text
        out = oip.json()["outputs"][0]
        logits = np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        np.testing.assert_allclose(logits, eager(inputs.astype(np.float32)), rtol=1e-3, atol=1e-4)
        assert logits.argmax(1).tolist() == y.tolist()

        meta = httpx.get(f"{server.url}/v2/models/{NAME}", timeout=30).json()
        assert meta["parameters"]["family"] == NAME and meta["parameters"]["panel"] == "photo"
