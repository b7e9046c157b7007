"""Datasets of the built-in families, read with torchvision's real loaders.

- MNIST: ``torchvision.datasets.MNIST`` read once into in-memory tensors (N, 784), scaled to
  [0, 1] and normalised; no per-sample PIL decode per epoch.
- CIFAR-10: ``torchvision.datasets.CIFAR10`` (the ``cifar-10-batches-py`` pickles), crop+flip for train.
- transfer: ``torchvision.datasets.ImageFolder`` with ``train/`` + ``val/`` or a seeded split.
- sine: synthetic windows generated from a seeded ``torch.Generator``.

Missing data raises ``MissingDataError`` naming the folder searched and the flag that fixes it.
Specs (labels, mean/std, layout) come from ``training.specs``; mean/std live there only.
``data_available`` and ``eval_samples`` ask the family's registered hooks (training/registry.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset, random_split
from torchvision import datasets
from torchvision.transforms import v2 as T

from training.specs import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    SINE_DEFAULTS,
    make_spec,  # noqa: F401 - re-exported: training.data.make_spec(family, ...)
)
from zoo.datadir import default_data_dir  # re-exported: the one rule for where data is


IMAGE_EXTENSIONS = datasets.folder.IMG_EXTENSIONS


class DataError(RuntimeError):
    """Data that cannot be used: missing, malformed, or too small for the requested split."""


class MissingDataError(DataError):
    """The dataset is not on disk; the message names the folder and how to get it."""


@dataclass
class Splits:
    """What a recipe trains on. ``test`` is None when the dataset has no separate test split."""

    train: Dataset
    val: Dataset
    test: Dataset | None
    labels: list[str]


def _split(ds: Dataset, val_fraction: float, seed: int) -> tuple[Subset, Subset]:
    """Seeded ``random_split`` into (train, val); the seed makes val the same on --resume."""
    n = len(ds)
    n_val = int(round(n * val_fraction))
    if not 0.0 < val_fraction < 1.0 or n_val < 1 or n - n_val < 1:
        raise DataError(f"cannot split {n} samples with --val-fraction {val_fraction} (need >= 1 in each part)")
    return random_split(ds, [n - n_val, n_val], generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- MNIST


def mnist_files(data_dir: str | os.PathLike) -> list[Path]:
    raw = Path(data_dir) / "MNIST" / "raw"
    return [raw / os.path.splitext(os.path.basename(url))[0] for url, _ in datasets.MNIST.resources]


@lru_cache(maxsize=4)
def _mnist_raw(data_dir: str, train: bool, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 28, 28) and int64 targets (N,), read once per process."""
    try:
        ds = datasets.MNIST(root=data_dir, train=train, download=download)
    except RuntimeError as exc:
        raise MissingDataError(
            f"MNIST not found in {Path(data_dir, 'MNIST', 'raw').resolve()} ({exc}); "
            f"pass --download (needs internet) or point --data-dir / $DATA_DIR at a folder holding MNIST/raw"
        ) from exc
    return ds.data, ds.targets


def mnist_tensors(data_dir: str, train: bool = True, download: bool = False,
                  limit: int | None = None) -> TensorDataset:
    """MNIST as tensors: x (N, 784) float32 normalised with MNIST mean/std, y (N,) int64."""
    images, targets = _mnist_raw(str(data_dir), train, download)
    if limit is not None:
        images, targets = images[:limit], targets[:limit]
    x = images.reshape(len(images), -1).float().div_(255.0)  # (N, 784) in [0, 1]
    x = (x - MNIST_MEAN[0]) / MNIST_STD[0]
    return TensorDataset(x, targets.long())


def _materialise(subset: Subset) -> TensorDataset:
    """A Subset of a TensorDataset as a TensorDataset, so batches are single index ops."""
    idx = torch.as_tensor(subset.indices)
    return TensorDataset(*(t[idx] for t in subset.dataset.tensors))


def load_mnist(data_dir: str, download: bool = False, val_fraction: float = 1 / 12, seed: int = 0,
               train_limit: int | None = None, test_limit: int | None = None) -> Splits:
    """Train/val split of the 60k training images (5k val by default) and the 10k test split."""
    full = mnist_tensors(data_dir, True, download, train_limit)
    train, val = _split(full, val_fraction, seed)
    test = mnist_tensors(data_dir, False, download, test_limit)
    return Splits(_materialise(train), _materialise(val), test, [str(i) for i in range(10)])


# ---------------------------------------------------------------- CIFAR-10


class CIFAR10(datasets.CIFAR10):
    """torchvision's CIFAR-10 reader, accepting any copy in the ``cifar-10-batches-py`` format.

    The official archive is still md5-checked by ``download()``; the per-file md5s are not
    required, so a locally converted (or test-written) copy in the same format loads too.
    """

    train_list = [[name, None] for name, _ in datasets.CIFAR10.train_list]
    test_list = [[name, None] for name, _ in datasets.CIFAR10.test_list]
    meta = {**datasets.CIFAR10.meta, "md5": None}


def cifar10_transform(train: bool) -> T.Compose:
    """PIL -> (3, 32, 32) float normalised; train adds random crop (pad 4) + horizontal flip."""
    aug = [T.RandomCrop(32, padding=4, padding_mode="reflect"), T.RandomHorizontalFlip()] if train else []
    return T.Compose([*aug, T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(CIFAR10_MEAN, CIFAR10_STD)])


def cifar10_dataset(data_dir: str, train: bool, transform: Any, download: bool) -> CIFAR10:
    try:
        return CIFAR10(root=data_dir, train=train, transform=transform, download=download)
    except RuntimeError as exc:
        raise MissingDataError(
            f"CIFAR-10 not found in {Path(data_dir, CIFAR10.base_folder).resolve()} ({exc}); "
            f"pass --download (needs internet) or point --data-dir / $DATA_DIR at a folder holding cifar-10-batches-py"
        ) from exc


def load_cifar10(data_dir: str, download: bool = False, val_fraction: float = 0.1, seed: int = 0,
                 augment: bool = True) -> Splits:
    """Train (augmented) / val (plain) split of the 50k training images, plus the 10k test split."""
    train_aug = cifar10_dataset(data_dir, True, cifar10_transform(augment), download)
    train_plain = cifar10_dataset(data_dir, True, cifar10_transform(False), False)
    train, val = _split(train_aug, val_fraction, seed)
    val = Subset(train_plain, val.indices)  # same images, no augmentation
    test = cifar10_dataset(data_dir, False, cifar10_transform(False), False)
    return Splits(train, val, test, list(train_aug.classes))


# ---------------------------------------------------------------- transfer (ImageFolder)


def transfer_transform(train: bool, size: int = 224, resize_shorter: int = 256) -> T.Compose:
    """Train: RandomResizedCrop + flip; eval: resize shorter side then center crop (as the service does)."""
    geo = ([T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip()] if train
           else [T.Resize(resize_shorter, antialias=True), T.CenterCrop(size)])
    return T.Compose([T.RGB(), *geo, T.ToImage(), T.ToDtype(torch.float32, scale=True),
                      T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def _image_folder(root: Path, transform: Any) -> datasets.ImageFolder:
    try:
        return datasets.ImageFolder(str(root), transform=transform)
    except (FileNotFoundError, OSError) as exc:
        raise MissingDataError(
            f"no ImageFolder at {root.resolve()} ({exc}); point --data-dir at a folder with one "
            f"subfolder of images per class (or train/ and val/ folders laid out that way)"
        ) from exc


def load_image_folder(data_dir: str, val_fraction: float = 0.2, seed: int = 0, augment: bool = True) -> Splits:
    """``data_dir/train`` + ``data_dir/val`` when both exist, else a seeded split of ``data_dir``."""
    root = Path(data_dir)
    if (root / "train").is_dir() and (root / "val").is_dir():
        train = _image_folder(root / "train", transfer_transform(augment))
        val = _image_folder(root / "val", transfer_transform(False))
        if val.classes != train.classes:
            raise DataError(f"{root}: train/ classes {train.classes} differ from val/ classes {val.classes}")
        return Splits(train, val, None, list(train.classes))
    aug = _image_folder(root, transfer_transform(augment))
    plain = _image_folder(root, transfer_transform(False))
    train, val = _split(aug, val_fraction, seed)
    return Splits(train, Subset(plain, val.indices), None, list(aug.classes))


# ---------------------------------------------------------------- sine windows


def sine_windows(n: int, seq_len: int = 50, freq_range: tuple[float, float] = SINE_DEFAULTS["freq_range"],
                 amp_range: tuple[float, float] = SINE_DEFAULTS["amp_range"], dt: float = SINE_DEFAULTS["dt"],
                 seed: int = 0) -> TensorDataset:
    """n windows of ``a * sin(f * t + phase)``: x (n, T, 1) and next-value targets y (n, T, 1).

    f is in radians per time unit (cycles per 2*pi time units), t = k * dt, phase ~ U[0, 2*pi).
    """
    g = torch.Generator().manual_seed(seed)
    freq = torch.empty(n, 1).uniform_(*freq_range, generator=g)
    amp = torch.empty(n, 1).uniform_(*amp_range, generator=g)
    phase = torch.rand(n, 1, generator=g) * 2 * torch.pi
    t = torch.arange(seq_len + 1, dtype=torch.float32) * dt  # (T+1,)
    wave = amp * torch.sin(freq * t + phase)  # (n, T+1)
    return TensorDataset(wave[:, :-1, None], wave[:, 1:, None])


def load_sine(n_train: int, n_val: int, n_test: int, seq_len: int = 50, seed: int = 0, **ranges: Any) -> Splits:
    """Independent seeds per split, so val/test windows are held out from training."""
    return Splits(sine_windows(n_train, seq_len, seed=seed, **ranges),
                  sine_windows(n_val, seq_len, seed=seed + 1, **ranges),
                  sine_windows(n_test, seq_len, seed=seed + 2, **ranges), [])


# ---------------------------------------------------------------- bootstrap / export helpers


def _training(family: str) -> Any:
    from training.registry import get_training, list_training

    try:
        return get_training(family)
    except KeyError:
        raise DataError(f"unknown family {family!r}; choose one of {', '.join(list_training())}") from None


def data_available(family: str, data_dir: str | os.PathLike | None = None, **_: Any) -> str | None:
    """None when ``family``'s data is on disk, else one line saying what is missing and how to add it."""
    return _training(family).data_available(Path(data_dir or default_data_dir()))


def image_folder_missing(data_dir: Path) -> str | None:
    """None when ``data_dir`` (or ``data_dir/train``) holds >= 2 class folders with images, else what is missing."""
    root = data_dir / "train" if (data_dir / "train").is_dir() else data_dir
    classes = [d for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    has_images = any(f.suffix.lower() in IMAGE_EXTENSIONS for d in classes for f in d.rglob("*"))
    if len(classes) < 2 or not has_images:
        return (f"no ImageFolder (>= 2 class folders of images) in {root.resolve()}; "
                f"pass --data-dir DIR with DIR/<class>/*.jpg (or DIR/train and DIR/val)")
    return None


def cifar10_missing(data_dir: Path) -> str | None:
    """None when the CIFAR-10 pickles are in ``data_dir``, else which files are missing where."""
    folder = data_dir / CIFAR10.base_folder
    missing = [n for n, _ in CIFAR10.train_list + CIFAR10.test_list if not (folder / n).is_file()]
    if not (folder / CIFAR10.meta["filename"]).is_file():
        missing.append(CIFAR10.meta["filename"])
    return f"CIFAR-10 files {missing} not found in {folder.resolve()}" if missing else None


def stack_first(ds: Dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n items of a dataset as (inputs, targets) tensors."""
    if isinstance(ds, TensorDataset):
        return ds.tensors[0][:n].clone(), ds.tensors[1][:n].clone()
    items = [ds[i] for i in range(min(n, len(ds)))]
    return torch.stack([x for x, _ in items]), torch.as_tensor([y for _, y in items])


def eval_samples(ckpt: dict[str, Any], n: int = 512, data_dir: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n real held-out inputs exactly as the model takes them, with their targets (the family's
    registered ``eval_samples`` hook: test or validation images, or windows from an unused seed)."""
    train_cfg = ckpt["config"].get("train", {})
    data_dir = str(data_dir or train_cfg.get("data_dir") or default_data_dir())
    return _training(ckpt["config"]["family"]).eval_samples(ckpt, n, data_dir)
