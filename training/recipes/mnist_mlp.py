"""mnist-mlp: an MLP on MNIST held in memory as (N, 784) tensors.

Default recipe: Adam with OneCycle, label smoothing, dropout, and every training batch randomly
rotated, scaled and shifted per image on the tensors themselves (``--aug-rotate/--aug-scale/
--aug-shift``; ``--no-augment`` turns it off). ``--quick`` is the short recipe ``make serve`` trains.
Measured figures and the commands that produce them: README, "Training".
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from training import engine
from training.data import load_mnist, mnist_files, mnist_tensors, stack_first
from training.models import MLPConfig, build_mnist_mlp, build_model, model_config
from training.options import common_parser, parse, setup_run
from training.registry import TrainingFamily, register_training
from training.specs import MNIST_MEAN, MNIST_STD, mnist_spec

FAMILY = "mnist-mlp"
QUICK = {"epochs": 3}
SIDE = 28  # MNIST images are 28x28, stored flat as 784 values


def get_args_parser() -> argparse.ArgumentParser:
    p = common_parser(FAMILY, epochs=8, batch_size=256, optimizer="adam", lr=3e-3, scheduler="onecycle",
                      val_fraction=1 / 12)  # 55k train / 5k val, as is customary for MNIST
    p.add_argument("--hidden", type=int, nargs="+", default=list(MLPConfig.hidden), help="hidden layer widths")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout after each hidden ReLU (0 disables)")
    p.add_argument("--label-smoothing", type=float, default=0.1, help="cross-entropy label smoothing")
    a = p.add_argument_group("augmentation (per image, on each training batch; --no-augment disables)")
    a.add_argument("--aug-rotate", type=float, default=10.0, help="max rotation, degrees either way")
    a.add_argument("--aug-scale", type=float, default=0.1, help="max relative zoom either way (0.1: 90-110%%)")
    a.add_argument("--aug-shift", type=float, default=2.0, help="max translation, pixels either way")
    return p


def affine(x: torch.Tensor, angle: torch.Tensor, zoom: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """(B, 784) normalised digits -> (B, 784), image i rotated by angle[i] radians (counter-clockwise),
    zoomed by zoom[i] and moved by shift[i] = (right, down) pixels about the centre; uncovered pixels are black."""
    b = x.shape[0]
    inv = 1.0 / zoom  # the sampling grid maps output to input coordinates: the inverse transform
    cos, sin = torch.cos(angle) * inv, torch.sin(angle) * inv
    t = shift * (-2.0 / SIDE)  # pixels -> [-1, 1] grid units, inverted
    tx = cos * t[:, 0] - sin * t[:, 1]
    ty = sin * t[:, 0] + cos * t[:, 1]
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    background = (0.0 - MNIST_MEAN[0]) / MNIST_STD[0]  # a black pixel after normalisation
    img = x.view(b, 1, SIDE, SIDE) - background  # background 0, so grid_sample's zero padding is black
    grid = F.affine_grid(theta, [b, 1, SIDE, SIDE], align_corners=False)
    return (F.grid_sample(img, grid, align_corners=False) + background).view(b, -1)


def random_affine(x: torch.Tensor, rotate: float, scale: float, shift: float) -> torch.Tensor:
    """Each image of the batch gets its own uniform rotation (+-rotate degrees), zoom (1 +- scale)
    and shift (+-shift pixels each way). torchvision's RandomAffine draws one transform per call, so
    a whole batch would move as one; a batched ``affine_grid`` + ``grid_sample`` costs about a matmul."""
    u = torch.rand(x.shape[0], 4, device=x.device, dtype=x.dtype) * 2 - 1  # U(-1, 1)
    return affine(x, u[:, 0] * math.radians(rotate), 1.0 + u[:, 1] * scale, u[:, 2:] * shift)


def task(args: argparse.Namespace) -> engine.Task:
    amounts = (args.aug_rotate, args.aug_scale, args.aug_shift)
    augment = args.augment and any(amounts)
    return engine.classification_task(args, train_input=(lambda x: random_affine(x, *amounts)) if augment else None)


def main(args: Any = None) -> dict[str, Any]:
    args = parse(get_args_parser(), args, QUICK)
    device = setup_run(args)
    splits = load_mnist(args.data_dir, args.download, args.val_fraction, args.seed)
    cfg = model_config(FAMILY, {"hidden": tuple(args.hidden), "dropout": args.dropout})
    model = build_model(FAMILY, cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{FAMILY}: {' -> '.join(map(str, (cfg.in_features, *cfg.hidden, cfg.num_classes)))}, "
          f"{n_params:,} parameters", flush=True)
    return engine.fit(engine.Job(FAMILY, model, cfg, mnist_spec(), splits, task(args)), args, device)


def data_available(data_dir: Path) -> str | None:
    missing = [p.name for p in mnist_files(data_dir) if not p.is_file()]
    if missing:
        return (f"{FAMILY}: MNIST files {missing} not found in {(data_dir / 'MNIST' / 'raw').resolve()}; "
                f"run `python -m training {FAMILY} --download` or set DATA_DIR")
    return None


def eval_samples(ckpt: dict[str, Any], n: int, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 784) MNIST test images + labels."""
    return stack_first(mnist_tensors(data_dir, train=False, limit=n), n)


register_training(TrainingFamily(FAMILY, MLPConfig, build_mnist_mlp, mnist_spec, main, eval_samples,
                                 data_available, int8_bounded=True))

if __name__ == "__main__":
    main()
