"""cifar10-resnet18: torchvision ResNet-18 with the CIFAR stem on CIFAR-10.

Default recipe, the standard one that reaches ~94% test accuracy on one GPU (stated, not yet
measured here: CIFAR-10 cannot be downloaded on this machine): SGD momentum 0.9 Nesterov,
weight decay 5e-4, OneCycle to lr 0.2 over 35 epochs, batch 512, random crop (pad 4) + flip,
AMP + channels_last on CUDA. Expect ~10-15 s per epoch on an A100/H100 with 8 loader workers,
so ~6-9 minutes in all.
``--quick``: 1 epoch on 1024 training images (~2 min on 2 CPU cores, accuracy well below the
full recipe; it only gives `make serve` a working model).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from training import engine
from training.data import cifar10_dataset, cifar10_missing, cifar10_transform, load_cifar10, stack_first
from training.models import ResNetConfig, build_cifar10_resnet18, build_model, model_config
from training.options import common_parser, parse, setup_run
from training.registry import TrainingFamily, register_training
from training.specs import cifar10_spec

FAMILY = "cifar10-resnet18"
QUICK = {"epochs": 1, "max_train_samples": 1024, "max_eval_samples": 256, "batch_size": 128, "lr": 0.05, "workers": 0}


def get_args_parser() -> argparse.ArgumentParser:
    p = common_parser(FAMILY, epochs=35, batch_size=512, optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True,
                      weight_decay=5e-4, scheduler="onecycle", val_fraction=0.1,
                      workers=min(8, os.cpu_count() or 1))  # PIL crop/flip is the bottleneck on a GPU
    p.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    return p


def task(args: argparse.Namespace | None = None) -> engine.Task:
    return engine.classification_task(args)


def main(args: Any = None) -> dict[str, Any]:
    args = parse(get_args_parser(), args, QUICK)
    device = setup_run(args)
    splits = load_cifar10(args.data_dir, args.download, args.val_fraction, args.seed, augment=args.augment)
    cfg = model_config(FAMILY, {"num_classes": len(splits.labels), "cifar_stem": True})
    model = build_model(FAMILY, cfg)
    return engine.fit(engine.Job(FAMILY, model, cfg, cifar10_spec(splits.labels), splits, task(args)), args, device)


def data_available(data_dir: Path) -> str | None:
    missing = cifar10_missing(data_dir)
    return f"{FAMILY}: {missing}; run `python -m training {FAMILY} --download` or set DATA_DIR" if missing else None


def eval_samples(ckpt: dict[str, Any], n: int, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3, 32, 32) CIFAR-10 test images + labels."""
    return stack_first(cifar10_dataset(data_dir, False, cifar10_transform(False), False), n)


register_training(TrainingFamily(FAMILY, ResNetConfig, build_cifar10_resnet18, cifar10_spec, main, eval_samples,
                                 data_available))

if __name__ == "__main__":
    main()
