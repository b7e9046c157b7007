"""Command-line options shared by every recipe, device choice and seeding.

Each recipe builds its parser with ``common_parser(family, **defaults)`` and adds its own flags;
``finalize(args, parser, quick)`` applies the ``--quick`` overrides to options the user left at
their defaults, so ``--quick --epochs 5`` still trains 5 epochs.
"""

from __future__ import annotations

import argparse
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training import distributed
from training.data import default_data_dir


class _Parser(argparse.ArgumentParser):
    """A usage error is one line (and exit status 2), not the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def common_parser(family: str, **defaults: Any) -> argparse.ArgumentParser:
    """Flags of the shared loop; ``defaults`` sets the family's recipe (epochs, lr, ...)."""
    p = _Parser(prog=f"python -m training {family}", description=f"Train {family}.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    d = p.add_argument_group("data")
    d.add_argument("--data-dir", default=default_data_dir(), help="dataset root ($DATA_DIR, else ../shared/data beside the repo when it exists, else ./data)")
    d.add_argument("--download", action="store_true", help="download the dataset through torchvision (needs internet)")
    d.add_argument("--val-fraction", type=float, default=0.1, help="share of the training split held out for validation")
    d.add_argument("--max-train-samples", type=int, default=None,
                   help="train on N training samples only (the first N, or N spread over an image folder's classes)")
    d.add_argument("--max-eval-samples", type=int, default=None, help="validate/test on N samples only (chosen the same way)")
    d.add_argument("--no-augment", dest="augment", action="store_false", help="disable training augmentation")
    d.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (image datasets)")

    o = p.add_argument_group("optimisation")
    o.add_argument("--epochs", type=int, default=10)
    o.add_argument("--batch-size", type=int, default=128)
    o.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default="adam")
    o.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (OneCycle max_lr)")
    o.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    o.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=False, help="SGD Nesterov momentum")
    o.add_argument("--betas", type=float, nargs=2, default=[0.9, 0.999], metavar=("BETA1", "BETA2"),
                   help="Adam/AdamW moment decay rates")
    o.add_argument("--weight-decay", type=float, default=0.0, help="L2 (decoupled for AdamW)")
    o.add_argument("--l1", type=float, default=0.0, help="L1 penalty coefficient on weight matrices (0 disables)")
    o.add_argument("--scheduler", choices=["none", "step", "plateau", "onecycle", "cosine", "linear"], default="onecycle")
    o.add_argument("--step-size", type=int, default=10, help="StepLR: epochs between decays")
    o.add_argument("--gamma", type=float, default=0.1, help="StepLR / ReduceLROnPlateau decay factor")
    o.add_argument("--clip-grad", type=float, default=0.0, help="max gradient L2 norm (0 disables)")
    o.add_argument("--patience", type=int, default=0, help="early stop after N epochs without val improvement (0 disables)")

    r = p.add_argument_group("run")
    r.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    r.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="mixed precision (CUDA only)")
    r.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="channels_last memory format for conv nets (CUDA only)")
    r.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: one per core)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--deterministic", action="store_true", help="deterministic algorithms (slower)")
    r.add_argument("--dry-run", action="store_true", help="one batch of train/val/test, then save")
    r.add_argument("--resume", default=None, help="continue from this last.pt (or 'auto' for OUT_DIR/last.pt)")
    r.add_argument("--quick", action="store_true", help="the short recipe used by `make serve` (<= 2 min on 2 CPU cores)")
    r.add_argument("--out-dir", default=f"checkpoints/{family}", help="best.pt, last.pt, metrics.json go here")
    r.add_argument("--log-dir", default=f"runs/{family}", help="TensorBoard logs")
    r.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(family=family, **defaults)
    return p


def finalize(args: argparse.Namespace, parser: argparse.ArgumentParser, quick: dict[str, Any]) -> argparse.Namespace:
    """Apply ``--quick`` overrides to options still at their default, then check ranges."""
    if args.quick:
        for key, value in quick.items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    if args.dry_run:
        args.epochs = 1
    problems = []
    if args.epochs < 1:
        problems.append(f"--epochs must be >= 1 (got {args.epochs})")
    if args.batch_size < 1:
        problems.append(f"--batch-size must be >= 1 (got {args.batch_size})")
    if args.lr <= 0:
        problems.append(f"--lr must be > 0 (got {args.lr})")
    if not 0.0 < args.val_fraction < 1.0:
        problems.append(f"--val-fraction must be in (0, 1) (got {args.val_fraction})")
    if not all(0.0 <= b < 1.0 for b in args.betas):
        problems.append(f"--betas must each be in [0, 1) (got {' '.join(map(str, args.betas))})")
    if not 0.0 <= getattr(args, "label_smoothing", 0.0) <= 1.0:  # flag of the classification recipes
        problems.append(f"--label-smoothing must be in [0, 1] (got {args.label_smoothing})")
    if problems:
        parser.error("; ".join(problems))  # exit 2 with one readable line
    return args


def parse(parser: argparse.ArgumentParser, argv: Any, quick: dict[str, Any]) -> argparse.Namespace:
    """``main`` accepts an argv list, None (sys.argv) or an already parsed Namespace."""
    args = argv if isinstance(argv, argparse.Namespace) else parser.parse_args(argv)
    return finalize(args, parser, quick)


def select_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu. Asking for an absent accelerator is an error, not a fallback."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("--device mps: MPS is not available (use --device cpu or auto)")
    return torch.device(name)


def setup_run(args: argparse.Namespace) -> torch.device:
    """Threads, seeds and the device, chosen once and passed to everything else.

    Under torchrun this also joins the process group (training/distributed.py): the device becomes
    ``cuda:LOCAL_RANK`` on GPUs, and the node's cores are shared among its processes.
    """
    device = distributed.init(select_device(args.device))
    w = distributed.world()
    args.world_size = w.size  # recorded in the checkpoint's config.train
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // w.local_size))
    torch.set_flush_denormal(True)  # tiny gradients late in training otherwise slow CPU math 10-100x
    seed = args.seed + w.rank  # rank 0's initial weights are broadcast; other streams (dropout) differ
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if args.deterministic:
        warnings.warn("--deterministic: deterministic algorithms are slower", stacklevel=2)
        torch.use_deterministic_algorithms(True)
    return device


def json_config(args: argparse.Namespace) -> dict[str, Any]:
    """``vars(args)`` with paths as strings and absolute data_dir, for checkpoint config.train."""
    out: dict[str, Any] = {}
    for key, value in vars(args).items():
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, tuple):
            value = list(value)
        if value is None or isinstance(value, (str, int, float, bool, list)):
            out[key] = value
    out["data_dir"] = str(Path(args.data_dir).resolve())
    return out
