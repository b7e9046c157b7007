"""mnist-mlp: 784-200-200-10 MLP on MNIST held in memory.

Default recipe (>= 98.0% test accuracy in <= 60 s on 2 CPU cores, see benchmarks/train_targets.py):
Adam with OneCycle to lr 3e-3, batch 256, 8 epochs, dropout 0.2. ``--quick``: 3 epochs (~97.5%).
"""

from __future__ import annotations

import argparse
from typing import Any


from training import engine
from training.data import load_mnist
from training.models import build_model, model_config
from training.options import common_parser, parse, setup_run
from training.specs import mnist_spec

FAMILY = "mnist-mlp"
QUICK = {"epochs": 3}


def get_args_parser() -> argparse.ArgumentParser:
    p = common_parser(FAMILY, epochs=8, batch_size=256, optimizer="adam", lr=3e-3, scheduler="onecycle",
                      val_fraction=1 / 12)  # 55k train / 5k val, as is customary for MNIST
    p.add_argument("--hidden", type=int, nargs="+", default=[200, 200], help="hidden layer widths")
    p.add_argument("--dropout", type=float, default=0.2, help="dropout after each hidden ReLU (0 disables)")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    return p


def task(args: argparse.Namespace | None = None) -> engine.Task:
    return engine.classification_task(args)


def train_one_epoch(model, loader, optimizer, device, epoch, args, scheduler=None) -> dict[str, float]:
    return engine.train_one_epoch(model, loader, task(args), optimizer, device, epoch, args, scheduler)


def evaluate(model, loader, device, args) -> dict[str, float]:
    return engine.evaluate(model, loader, task(args), device, args)


def main(args: Any = None) -> dict[str, Any]:
    args = parse(get_args_parser(), args, QUICK)
    device = setup_run(args)
    splits = load_mnist(args.data_dir, args.download, args.val_fraction, args.seed)
    cfg = model_config(FAMILY, {"hidden": tuple(args.hidden), "dropout": args.dropout})
    model = build_model(FAMILY, cfg)
    return engine.fit(FAMILY, model, cfg, mnist_spec(), splits, task(args), args, device)


if __name__ == "__main__":
    main()
