"""transfer-resnet18: torchvision resnet18 with a pretrained backbone and a new head for an ImageFolder.

``--weights imagenet`` loads torchvision's IMAGENET1K_V1 through its weights API (downloaded and
cached); ``--weights PATH`` loads a state_dict file or one of our checkpoints (for example a
cifar10-resnet18 best.pt); ``--weights none`` trains from scratch. Backbone keys are loaded; the
head (``fc.*``) and keys whose shape differs (the CIFAR stem's 3x3 ``conv1``) are skipped, and
the skipped keys are printed. The head is ``Linear(512, N)`` with N = the folder's classes.

Default recipe: SGD Nesterov lr 0.01, cosine, 10 epochs, batch 32, RandomResizedCrop + flip.
``--quick`` (at most 256 training images): with pretrained weights, 2 epochs of the head alone on the
frozen backbone; with ``--weights none``, 3 epochs of the whole network in batches of 8 without
augmentation, since a random backbone frozen gives features no head can separate. Measured figures:
README, "Training".
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training import engine
from training.checkpoint import CheckpointError, load_checkpoint
from training.data import DataError, image_folder_missing, load_image_folder, stack_first
from training.models import ResNetConfig, build_model, build_transfer_resnet18, model_config
from training.options import common_parser, finalize, setup_run
from training.registry import BootstrapPlan, TrainingFamily, register_training
from training.specs import transfer_spec
from zoo.datadir import TRANSFER_DATA_RULE, family_data_dir

FAMILY = "transfer-resnet18"
QUICK = {"max_train_samples": 256, "max_eval_samples": 128}
QUICK_PRETRAINED = {"epochs": 2, "freeze_backbone": True, "lr": 0.05}  # a linear probe on the loaded features
# From random weights every layer trains: more, smaller steps, on the view the service takes (resize +
# centre crop); RandomResizedCrop's crops are more than three passes from scratch can learn from.
QUICK_SCRATCH = {"epochs": 3, "batch_size": 8, "augment": False}


def get_args_parser() -> argparse.ArgumentParser:
    p = common_parser(FAMILY, epochs=10, batch_size=32, optimizer="sgd", lr=0.01, momentum=0.9, nesterov=True,
                      weight_decay=1e-4, scheduler="cosine", val_fraction=0.2,
                      data_dir=family_data_dir(FAMILY))  # its ImageFolder: <data dir>/transfer-resnet18
    p.add_argument("--weights", default="imagenet", help="imagenet | none | PATH (state_dict or our checkpoint)")
    p.add_argument("--freeze-backbone", action="store_true", help="train only the new head")
    return p


def read_state_dict(source: str, progress: bool = True) -> dict[str, torch.Tensor]:
    """The tensors to initialise from: torchvision ImageNet weights, our checkpoint, or a state_dict file."""
    if source == "imagenet":
        from torchvision.models import ResNet18_Weights

        try:
            return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=progress, check_hash=True)
        except (OSError, RuntimeError) as exc:  # URLError is an OSError
            raise DataError(f"could not get torchvision's ImageNet resnet18 weights ({exc}); "
                            f"pass --weights PATH to a local state_dict, or --weights none") from exc
    path = Path(source)
    if not path.is_file():
        raise DataError(f"--weights {source}: no such file (use imagenet, none, or a state_dict/checkpoint path)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        raise CheckpointError(f"--weights {path}: not a readable state_dict: {str(exc).splitlines()[0]}") from exc
    if isinstance(obj, dict) and "model" in obj and "config" in obj:
        return load_checkpoint(path)["model"]  # one of our checkpoints: validated, then its weights
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"--weights {path}: expected a state_dict (name -> tensor), found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_backbone(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copy matching backbone tensors into ``model``; returns (loaded, skipped with reasons)."""
    own = model.state_dict()
    loaded, skipped, take = [], [], {}
    for key, value in state.items():
        if key.startswith("fc."):
            skipped.append(f"{key} (head, replaced)")
        elif key not in own:
            skipped.append(f"{key} (not in resnet18)")
        elif own[key].shape != value.shape:
            skipped.append(f"{key} (shape {list(value.shape)} != {list(own[key].shape)})")
        else:
            take[key] = value
            loaded.append(key)
    if not loaded:
        raise CheckpointError("the weights share no tensor with resnet18's backbone (wrong file?)")
    model.load_state_dict(take, strict=False)
    return loaded, skipped


def freeze_backbone(model: nn.Module) -> list[nn.Parameter]:
    """Only ``fc`` trains; returns the trainable parameters."""
    for name, p in model.named_parameters():
        p.requires_grad = name.startswith("fc.")
    return list(model.fc.parameters())


def _train_mode(frozen: bool):
    def train_mode(model: nn.Module) -> None:
        model.train()
        if frozen:  # a frozen backbone keeps its BatchNorm statistics
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
    return train_mode


def task(args: argparse.Namespace | None = None) -> engine.Task:
    frozen = bool(args is not None and args.freeze_backbone)
    return engine.classification_task(args, train_mode=_train_mode(frozen))


def parse_args(argv: Any = None) -> argparse.Namespace:
    """The ``--quick`` overrides depend on ``--weights``: only a pretrained backbone is worth freezing."""
    parser = get_args_parser()
    args = argv if isinstance(argv, argparse.Namespace) else parser.parse_args(argv)
    if args.weights == "none" and args.freeze_backbone:
        parser.error("--freeze-backbone with --weights none trains a head on random features; "
                     "drop --freeze-backbone or pass pretrained --weights (imagenet or a file)")
    return finalize(args, parser, {**QUICK, **(QUICK_SCRATCH if args.weights == "none" else QUICK_PRETRAINED)})


def main(args: Any = None) -> dict[str, Any]:
    args = parse_args(args)
    device = setup_run(args)
    splits = load_image_folder(args.data_dir, args.val_fraction, args.seed, augment=args.augment)
    if len(splits.labels) < 2:
        raise DataError(f"{args.data_dir}: found {len(splits.labels)} class folder(s); a classifier needs >= 2")
    cfg = model_config(FAMILY, {"num_classes": len(splits.labels), "cifar_stem": False})
    model = build_model(FAMILY, cfg)
    if args.weights != "none":
        loaded, skipped = load_backbone(model, read_state_dict(args.weights, args.progress))
        print(f"weights {args.weights}: loaded {len(loaded)} tensors; skipped {len(skipped)}: "
              f"{', '.join(skipped) or 'none'}", flush=True)
    params = freeze_backbone(model) if args.freeze_backbone else None
    return engine.fit(engine.Job(FAMILY, model, cfg, transfer_spec(splits.labels), splits, task(args), params=params), args, device)


def data_available(data_dir: Path) -> str | None:
    missing = image_folder_missing(data_dir)
    return f"{FAMILY}: {missing}" if missing else None


def eval_samples(ckpt: dict[str, Any], n: int, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(<=n, 3, 224, 224) validation images + labels, split as training split them."""
    train_cfg = ckpt["config"].get("train", {})
    splits = load_image_folder(data_dir, train_cfg.get("val_fraction", 0.2), train_cfg.get("seed", 0), augment=False)
    return stack_first(splits.val, n)


def bootstrap(args: argparse.Namespace) -> BootstrapPlan:
    """export.bootstrap trains this family from its own folder, ``<data dir>/transfer-resnet18``."""
    folder = Path(family_data_dir(FAMILY, args.data_dir))
    if not folder.is_dir():
        return BootstrapPlan(None, missing=f"{FAMILY}: no dataset at {folder.resolve()}; it trains from {TRANSFER_DATA_RULE}")
    return BootstrapPlan(str(folder), ("--weights", args.transfer_weights))


register_training(TrainingFamily(FAMILY, ResNetConfig, build_transfer_resnet18, transfer_spec, main, eval_samples,
                                 data_available, bootstrap))

if __name__ == "__main__":
    main()
