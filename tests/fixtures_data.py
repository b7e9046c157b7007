"""Tiny datasets written in the real on-disk formats, for any test that needs data.

- ``mnist_data_dir()``: the real MNIST (``$DATA_DIR`` or ``shared/data`` beside the repo).
- ``write_tiny_cifar10(root, per_batch)``: ``cifar-10-batches-py`` pickles (data_batch_1..5,
  test_batch, batches.meta) exactly as the official archive lays them out: uint8 rows of
  3072 values (R plane, G plane, B plane, each 32x32 row-major) and a ``labels`` list.
- ``write_image_folder(root, classes, per_class, split)``: PNG files in ``root/<class>/``
  (or ``root/train/<class>`` + ``root/val/<class>`` with ``split=True``).

The images carry a learnable signal (the class index sets the dominant colour), so a few
steps of training can beat chance.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_COLOURS = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                     [70, 240, 240], [240, 50, 230], [210, 245, 60], [250, 190, 190], [0, 128, 128]], np.uint8)


def mnist_data_dir() -> Path:
    """Folder holding MNIST/raw: $DATA_DIR when set, else ``shared/data`` beside the repository."""
    env = os.environ.get("DATA_DIR")
    if env and (Path(env) / "MNIST" / "raw").is_dir():
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data"


def _images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """(N, size, size, 3) uint8: class colour plus noise."""
    base = _COLOURS[labels % len(_COLOURS)][:, None, None, :].astype(np.int16)
    noise = rng.integers(-40, 41, size=(len(labels), size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_tiny_cifar10(root: str | os.PathLike, per_batch: int = 20, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` with ``per_batch`` images in each of the 6 batches."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = rng.integers(0, 10, size=per_batch)
        hwc = _images(labels, 32, rng)
        rows = hwc.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # (N, 3*32*32), channel planes
        entry = {"batch_label": name, "labels": labels.tolist(), "data": rows,
                 "filenames": [f"{name}_{i}.png" for i in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f)
    return folder


def write_image_folder(root: str | os.PathLike, classes: tuple[str, ...] = ("cat", "dog", "fox"),
                       per_class: int = 6, split: bool = False, size: int = 40, seed: int = 0) -> Path:
    """PNG images in ImageFolder layout; ``split=True`` writes train/ (per_class) and val/ (per_class // 2 + 1)."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    parts = {"train": per_class, "val": per_class // 2 + 1} if split else {"": per_class}
    for part, count in parts.items():
        for idx, name in enumerate(classes):
            d = root / part / name if part else root / name
            d.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(_images(np.full(count, idx), size, rng)):
                Image.fromarray(img).save(d / f"{name}_{i}.png")
    return root
