"""The training loop every recipe shares: optimiser, schedule, epochs, checkpoints, logs.

A recipe supplies a model, its data ``Splits``, a ``Task`` (how to compute loss and the
validation metric) and its spec; ``fit`` does the rest: progress bars, one summary line per
epoch, TensorBoard scalars, early stopping, best.pt/last.pt, --resume and metrics.json.
Under torchrun the same loop trains data-parallel (training/distributed.py); rank 0 writes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import (BatchSampler, DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler,
                              Subset, TensorDataset)
from torch.utils.tensorboard import SummaryWriter
from tqdm.auto import tqdm

from zoo.spec import Spec
from training import distributed
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.data import Splits
from training.models import config_to_dict
from training.optim import load_scheduler_state, make_optimizer, make_scheduler, scheduler_step
from training.options import json_config


@dataclass
class Task:
    """Loss and validation metric of a family: ``acc`` (higher is better) or ``mse`` (lower)."""

    metric: str  # "acc" | "mse"
    loss_fn: nn.Module
    # Puts the model in training mode; the transfer recipe keeps a frozen backbone's BatchNorm in eval.
    train_mode: Callable[[nn.Module], Any] = field(default=lambda m: m.train())
    # Optional training-only input transform, e.g. the RNN's input noise (targets stay clean).
    train_input: Callable[[torch.Tensor], torch.Tensor] | None = None
    # Optional extra training loss on top of loss_fn(forward(x), y), e.g. the RNN's free-running rollout.
    extra_loss: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "acc"

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        out = model(x)
        return out[0] if isinstance(out, tuple) else out  # the RNN also returns its state

    def score(self, out: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """(sum, count): correct predictions over samples, or squared error over elements."""
        if self.metric == "acc":
            return (out.argmax(1) == y).sum().item(), y.numel()
        return (out.float() - y).pow(2).sum().item(), y.numel()


def classification_task(args: Any = None, **kw: Any) -> Task:
    """Cross-entropy + accuracy, with ``--label-smoothing`` where the recipe has that flag."""
    smoothing = getattr(args, "label_smoothing", 0.0) if args is not None else 0.0
    return Task(metric="acc", loss_fn=nn.CrossEntropyLoss(label_smoothing=smoothing), **kw)


def limit(ds: Dataset, n: int | None) -> Dataset:
    """n items (all when n is None): the first n of in-memory tensors, n evenly spaced ones of any
    other dataset, since an ImageFolder's train/ lists its images class by class."""
    if n is None or n >= len(ds):
        return ds
    if isinstance(ds, TensorDataset):
        return TensorDataset(*(t[:n] for t in ds.tensors))
    return Subset(ds, torch.linspace(0, len(ds) - 1, n).round().long().tolist())


def shard(ds: Dataset) -> Dataset:
    """This process's disjoint share of an evaluation set (all of it in one process)."""
    w = distributed.world()
    if not w.active:
        return ds
    if isinstance(ds, TensorDataset):
        return TensorDataset(*(t[w.rank::w.size] for t in ds.tensors))
    return Subset(ds, range(w.rank, len(ds), w.size))


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, args: argparse.Namespace, device: torch.device) -> DataLoader:
    """In-memory tensors are batched by one index op per batch; image datasets use workers.

    ``batch_size`` is global: under torchrun each process takes its share, training batches come
    from a DistributedSampler and evaluation sets are sharded.
    """
    g = torch.Generator().manual_seed(args.seed)
    w = distributed.world()
    batch_size = distributed.per_process_batch(batch_size)
    if w.active and shuffle:
        sampler = DistributedSampler(ds, num_replicas=w.size, rank=w.rank, shuffle=True, seed=args.seed)
    elif w.active:
        ds, sampler = shard(ds), None
    else:
        sampler = RandomSampler(ds, generator=g) if shuffle else None
    if isinstance(ds, TensorDataset):
        sampler = sampler or SequentialSampler(ds)
        return DataLoader(ds, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, generator=g, num_workers=args.workers,
                      pin_memory=device.type == "cuda", persistent_workers=args.workers > 0)


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    """A DistributedSampler reshuffles per epoch only when told the epoch."""
    # In-memory loaders pass a BatchSampler as ``sampler``: the DistributedSampler is inside it.
    for sampler in (loader.sampler, getattr(loader.sampler, "sampler", None)):
        if isinstance(sampler, DistributedSampler):
            sampler.set_epoch(epoch)


def _to_device(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _l1(model: nn.Module) -> torch.Tensor:
    """Sum of |w| over weight matrices and kernels (not biases or norms)."""
    return sum(p.abs().sum() for p in model.parameters() if p.requires_grad and p.dim() > 1)


def train_one_epoch(model: nn.Module, loader: DataLoader, task: Task, optimizer: torch.optim.Optimizer,
                    device: torch.device, epoch: int, args: argparse.Namespace, scheduler: Any = None,
                    scaler: torch.amp.GradScaler | None = None, writer: SummaryWriter | None = None) -> dict[str, float]:
    """One pass over ``loader``; OneCycle steps per batch. Returns loss, metric, samples/s."""
    task.train_mode(model)
    use_amp = scaler is not None and scaler.is_enabled()
    cl = args.channels_last and device.type == "cuda"
    total_loss, total_score, count, seen = 0.0, 0.0, 0, 0
    start = time.perf_counter()
    # a bar only on a terminal: into a log it would write a line per batch (the epoch line follows anyway)
    bar = tqdm(loader, desc=f"epoch {epoch}/{args.epochs}", unit="batch", leave=False,
               disable=not args.progress or not distributed.world().is_main or not sys.stderr.isatty())
    for i, (x, y) in enumerate(bar):
        x, y = _to_device(x, device, cl), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            out = task.forward(model, task.train_input(x) if task.train_input is not None else x)
            loss = task.loss_fn(out.float(), y)
            if task.extra_loss is not None:
                loss = loss + task.extra_loss(distributed.unwrap(model), x, y)  # one DDP forward per step
        if args.l1 > 0:
            loss = loss + args.l1 * _l1(model)
        optimizer.zero_grad(set_to_none=True)
        if use_amp:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if args.clip_grad > 0:
            nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
        if use_amp:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        scheduler_step(scheduler, args, per_batch=True)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"epoch {epoch}, batch {i}: loss is {loss.item()} (lower --lr or set --clip-grad)")
        s, n = task.score(out.detach(), y)
        total_loss += loss.item() * len(x)
        total_score, count, seen = total_score + s, count + n, seen + len(x)
        rate = seen / (time.perf_counter() - start)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", **{task.metric: _fmt(task, total_score / count)},
                        rate=f"{rate:.0f}/s")
        if args.dry_run:
            break
    seconds = time.perf_counter() - start
    total_loss, total_score, count, seen = distributed.all_reduce_sums([total_loss, total_score, count, seen], device)
    return {"loss": total_loss / max(seen, 1), task.metric: total_score / max(count, 1),
            "samples_per_s": seen / seconds, "seconds": seconds}


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, task: Task, device: torch.device,
             args: argparse.Namespace) -> dict[str, float]:
    """Mean loss and the task metric over ``loader`` (one batch with --dry-run)."""
    model.eval()
    use_amp = args.amp and device.type == "cuda"
    cl = args.channels_last and device.type == "cuda"
    total_loss, total_score, count, seen = 0.0, 0.0, 0, 0
    for x, y in loader:
        x, y = _to_device(x, device, cl), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            out = task.forward(model, x)
        total_loss += task.loss_fn(out.float(), y).item() * len(x)
        s, n = task.score(out, y)
        total_score, count, seen = total_score + s, count + n, seen + len(x)
        if args.dry_run:
            break
    total_loss, total_score, count, seen = distributed.all_reduce_sums([total_loss, total_score, count, seen], device)
    return {"loss": total_loss / max(seen, 1), task.metric: total_score / max(count, 1)}


def _fmt(task: Task, value: float) -> str:
    return f"{100 * value:.2f}%" if task.metric == "acc" else f"{value:.2e}"


def _better(task: Task, value: float, best: float | None) -> bool:
    return best is None or (value > best if task.higher_is_better else value < best)


@dataclass
class Job:
    """What a recipe hands the training loop: the model and everything its checkpoint records."""

    family: str
    model: nn.Module
    model_cfg: Any  # the model's config dataclass (training/models.py), stored in the checkpoint
    spec: Spec
    splits: Splits
    task: Task
    final_eval: Callable[[nn.Module], dict] | None = None  # family metrics on the best model (rank 0)
    params: Any = None  # what the optimiser updates (default: every parameter that requires grad)


def fit(job: Job, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Train with validation each epoch; keep best.pt (best val metric) and last.pt in --out-dir.

    Returns ``{"checkpoint": Path(best.pt), "metrics": dict}``.
    """
    family, model, spec, splits, task, params = job.family, job.model, job.spec, job.splits, job.task, job.params
    main = distributed.world().is_main
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(device)
    if args.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    train_loader = make_loader(limit(splits.train, args.max_train_samples), args.batch_size, True, args, device)
    val_loader = make_loader(limit(splits.val, args.max_eval_samples), args.batch_size * 2, False, args, device)
    optimizer = make_optimizer(params if params is not None else [p for p in model.parameters() if p.requires_grad], args)
    scheduler = make_scheduler(optimizer, args, steps_per_epoch=1 if args.dry_run else len(train_loader),
                               mode="max" if task.higher_is_better else "min")
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp and device.type == "cuda")
    config = {"family": family, "model": config_to_dict(job.model_cfg), "train": json_config(args)}
    key = f"val_{task.metric}"
    start_epoch, best, best_epoch, history = 1, None, 0, []
    if args.resume:
        resume = out_dir / "last.pt" if args.resume == "auto" else Path(args.resume)
        ckpt = load_checkpoint(resume, family)
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            if scheduler is not None and ckpt["scheduler"] is not None:
                changed = load_scheduler_state(scheduler, ckpt["scheduler"])
                if changed:
                    print(f"resume: {changed}", flush=True)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{resume}: cannot resume with these options: {str(exc).splitlines()[0]}") from exc
        start_epoch = ckpt["epoch"] + 1
        best, best_epoch = ckpt["metrics"].get(f"best_{key}"), ckpt["metrics"].get("best_epoch", 0)
        history = list(ckpt["metrics"].get("history", []))
        if main:
            print(f"resumed from {resume} at epoch {ckpt['epoch']} (best {key} {best})", flush=True)
    net = distributed.wrap(model, device)  # DDP under torchrun (after --resume loaded the weights)
    writer = SummaryWriter(log_dir=args.log_dir) if main else None
    bad_epochs, t0 = 0, time.perf_counter()
    try:
        for epoch in range(start_epoch, args.epochs + 1):
            lr = optimizer.param_groups[0]["lr"]
            _set_epoch(train_loader, epoch)
            tr = train_one_epoch(net, train_loader, task, optimizer, device, epoch, args, scheduler, scaler, writer)
            va = evaluate(model, val_loader, task, device, args)
            scheduler_step(scheduler, args, per_batch=False, metric=va[task.metric])
            row = {"epoch": epoch, "lr": lr, **{f"train_{k}": v for k, v in tr.items()}, **{f"val_{k}": v for k, v in va.items()}}
            history.append(row)
            for name, value in (("loss/train", tr["loss"]), ("loss/val", va["loss"]), (f"{task.metric}/train", tr[task.metric]),
                                (f"{task.metric}/val", va[task.metric]), ("lr", lr)):
                if writer is not None:
                    writer.add_scalar(name, value, epoch)
            improved = _better(task, va[task.metric], best)
            if improved:
                best, best_epoch, bad_epochs = va[task.metric], epoch, 0
            else:
                bad_epochs += 1
            metrics = {**row, f"best_{key}": best, "best_epoch": best_epoch, "history": history}
            if not main:
                if args.patience and bad_epochs >= args.patience:
                    break  # every rank saw the same all-reduced metric, so all stop together
                continue
            ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "epoch": epoch, "config": config, "spec": spec.to_dict(), "metrics": metrics}
            save_checkpoint(out_dir / "last.pt", ckpt)
            if improved:
                save_checkpoint(out_dir / "best.pt", ckpt)
            print(f"{family} epoch {epoch}/{args.epochs}  train loss {tr['loss']:.4f} {task.metric} {_fmt(task, tr[task.metric])}"
                  f"  val loss {va['loss']:.4f} {task.metric} {_fmt(task, va[task.metric])}  lr {lr:.2e}"
                  f"  {tr['samples_per_s']:.0f} samples/s  {tr['seconds']:.1f}s{'  *' if improved else ''}", flush=True)
            if args.patience and bad_epochs >= args.patience:
                print(f"early stop: no {key} improvement for {args.patience} epochs (best {_fmt(task, best)} at epoch {best_epoch})")
                break
    finally:
        if writer is not None:
            writer.close()
    distributed.barrier()  # best.pt is complete before any rank reads it
    try:
        return _finish(model, splits, task, args, device, out_dir, job.final_eval, time.perf_counter() - t0, history)
    finally:
        distributed.shutdown()


def _finish(model: nn.Module, splits: Splits, task: Task, args: argparse.Namespace, device: torch.device,
            out_dir: Path, final_eval: Callable[[nn.Module], dict] | None, seconds: float,
            history: list[dict]) -> dict[str, Any]:
    """Evaluate the best weights on the test split, add them to best.pt and write metrics.json (rank 0)."""
    best_path = out_dir / "best.pt"
    ckpt = load_checkpoint(best_path)
    model.load_state_dict(ckpt["model"])
    metrics = dict(ckpt["metrics"])
    if splits.test is not None:
        loader = make_loader(limit(splits.test, args.max_eval_samples), args.batch_size * 2, False, args, device)
        metrics.update({f"test_{k}": v for k, v in evaluate(model, loader, task, device, args).items()})
    if not distributed.world().is_main:
        return {"checkpoint": best_path, "metrics": metrics}
    if final_eval is not None:
        metrics.update(final_eval(model))
    metrics["train_seconds"] = seconds
    metrics["history"] = history  # every epoch run, including those after the best one
    ckpt["metrics"] = metrics
    save_checkpoint(best_path, ckpt)
    summary = {k: v for k, v in metrics.items() if k != "history"}
    (out_dir / "metrics.json").write_text(json.dumps({**summary, "history": metrics["history"]}, indent=2))
    shown = "  ".join(f"{k} {_fmt(task, v) if k.endswith(task.metric) else round(v, 6)}"
                      for k, v in summary.items() if k.startswith(("test_", "best_val", "rollout")) and v is not None)
    print(f"done in {seconds:.1f}s: {shown}  -> {best_path}", flush=True)
    return {"checkpoint": best_path, "metrics": metrics}
