"""Optimisers and learning-rate schedules chosen by flag.

``--optimizer sgd|adam|adamw`` with ``--momentum/--nesterov/--weight-decay``;
``--betas`` for Adam/AdamW; ``--scheduler none|step|plateau|onecycle|cosine|linear``. OneCycle and
linear (straight decay from --lr to zero) step every batch (their length is epochs * batches), the
others once per epoch, ReduceLROnPlateau on the validation metric.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable

import torch
from torch.optim import lr_scheduler


def make_optimizer(params: Iterable[Any], args: argparse.Namespace) -> torch.optim.Optimizer:
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, nesterov=args.nesterov and args.momentum > 0,
                               weight_decay=args.weight_decay)
    betas = tuple(getattr(args, "betas", (0.9, 0.999)))
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr, betas=betas, weight_decay=args.weight_decay)
    if args.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=args.lr, betas=betas, weight_decay=args.weight_decay)
    raise ValueError(f"unknown --optimizer {args.optimizer!r}; choose sgd, adam or adamw")


def make_scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace, steps_per_epoch: int,
                   mode: str = "max") -> Any:
    """The LR schedule, or None for a constant --lr. ``mode``: "max" for accuracy, "min" for MSE."""
    name = args.scheduler
    if name == "none":
        return None
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=args.step_size, gamma=args.gamma)
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=args.gamma, patience=max(1, args.patience // 2))
    if name == "onecycle":
        # Warm up for 25% of the steps to --lr, then anneal; momentum (Adam's beta1) cycles 0.95 -> 0.85 -> 0.95.
        return lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, epochs=args.epochs,
                                       steps_per_epoch=max(1, steps_per_epoch), pct_start=0.25)
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    if name == "linear":
        total = max(1, args.epochs * max(1, steps_per_epoch))
        return LinearDecay(optimizer, lambda step: max(0.0, 1.0 - step / total))
    raise ValueError(f"unknown --scheduler {name!r}; choose none, step, plateau, onecycle, cosine or linear")


class LinearDecay(lr_scheduler.LambdaLR):
    """--lr falling in a straight line to zero over the whole run, stepped per batch (the best
    one-pass schedule measured for the MNIST MLP; see tests/test_training.py)."""


def load_scheduler_state(scheduler: Any, state: dict[str, Any]) -> str | None:
    """Load a saved schedule but keep this run's length, so ``--resume --epochs N`` with a larger N
    stretches OneCycle/cosine to the new end instead of stopping at the old one (where OneCycle
    would raise or sit at its final lr). Returns a line saying what changed, or None."""
    length = {k: getattr(scheduler, k) for k in ("total_steps", "_schedule_phases", "T_max") if hasattr(scheduler, k)}
    scheduler.load_state_dict(state)
    saved = {k: getattr(scheduler, k) for k in length}
    for k, v in length.items():
        setattr(scheduler, k, v)
    for k in ("total_steps", "T_max"):
        if k in length and saved[k] != length[k]:
            return f"schedule length {k} {saved[k]} -> {length[k]} (resumed at step {scheduler.last_epoch})"
    return None


def scheduler_step(scheduler: Any, args: argparse.Namespace, per_batch: bool, metric: float | None = None) -> None:
    """Advance the schedule at the right granularity (called after every batch and every epoch)."""
    if scheduler is None:
        return
    if isinstance(scheduler, lr_scheduler.OneCycleLR):
        if per_batch and scheduler.last_epoch < scheduler.total_steps:
            scheduler.step()
    elif isinstance(scheduler, LinearDecay):
        if per_batch:
            scheduler.step()
    elif not per_batch:
        if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
            scheduler.step(metric)
        else:
            scheduler.step()
