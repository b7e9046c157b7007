"""The models of the built-in families: pure ``nn.Module``s built from a dataclass config.

Each family's recipe registers its builder and config (training/registry.py); ``MODELS[family]``
is ``(config class, builder)``, derived from those entries. The config is saved as plain data in the
checkpoint (``asdict(config)``), so ``build_model(family, checkpoint["config"]["model"])``
rebuilds it without the training script. Every model returns logits or the raw
regression value: no activation after the last layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

import torch
from torch import nn
from torchvision.models import ResNet, resnet18
from torchvision.models.resnet import BasicBlock


@dataclass
class MLPConfig:
    in_features: int = 28 * 28
    hidden: tuple[int, ...] = (512, 512)  # the default recipe's widths; old checkpoints carry their own
    num_classes: int = 10
    dropout: float = 0.0  # 0 disables; 0.2 helps longer recipes


@dataclass
class ResNetConfig:
    num_classes: int = 10
    cifar_stem: bool = True  # 3x3 conv stride 1, no max-pool: keeps 32x32 inputs at 32x32 in stage 1


@dataclass
class RNNConfig:
    cell: str = "lstm"  # "rnn" | "lstm" | "gru"
    hidden_size: int = 16  # small on purpose: a sine needs little state
    num_layers: int = 1
    input_size: int = 1
    output_size: int = 1


class MLP(nn.Module):
    """784-512-512-10 by default, ReLU between hidden layers, logits out."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = cfg.in_features
        for h in cfg.hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if cfg.dropout > 0:
                layers.append(nn.Dropout(cfg.dropout))
            width = h
        layers.append(nn.Linear(width, cfg.num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 784) or (B, 1, 28, 28) -> (B, 10)
        return self.net(x)


class SineRNN(nn.Module):
    """Next-value regression over a sequence, with explicit recurrent state.

    ``forward(x, state)`` maps x (B, T, 1) to y (B, T, 1), the prediction of x[t+1]
    at every step t, and returns the final state so a caller can continue a rollout.
    ``state`` is ``(h,)`` for rnn/gru and ``(h, c)`` for lstm, each (layers, B, hidden).
    """

    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        cells = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
        if cfg.cell not in cells:
            raise ValueError(f"unknown cell {cfg.cell!r}; choose one of {sorted(cells)}")
        self.cell = cfg.cell
        self.hidden_size = cfg.hidden_size
        self.num_layers = cfg.num_layers
        self.rnn = cells[cfg.cell](cfg.input_size, cfg.hidden_size, cfg.num_layers, batch_first=True)
        self.head = nn.Linear(cfg.hidden_size, cfg.output_size)

    def init_state(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Zero state on the input's device and dtype."""
        h = x.new_zeros(self.num_layers, x.shape[0], self.hidden_size)
        return (h, h.clone()) if self.cell == "lstm" else (h,)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, ...] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        if state is None:
            state = self.init_state(x)
        if self.cell == "lstm":
            out, (h, c) = self.rnn(x, (state[0], state[1]))
            new_state: tuple[torch.Tensor, ...] = (h, c)
        else:
            out, h = self.rnn(x, state[0])
            new_state = (h,)
        return self.head(out), new_state  # (B, T, 1), state


def build_mnist_mlp(cfg: MLPConfig) -> nn.Module:
    return MLP(cfg)


def build_cifar10_resnet18(cfg: ResNetConfig) -> nn.Module:
    """torchvision's ResNet-18 (BasicBlock, [2, 2, 2, 2]) with the CIFAR stem."""
    model = ResNet(BasicBlock, [2, 2, 2, 2], num_classes=cfg.num_classes)
    if cfg.cifar_stem:
        model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    return model


def build_transfer_resnet18(cfg: ResNetConfig) -> nn.Module:
    """torchvision ``resnet18`` with a new ``Linear(512, N)`` head; weights are loaded by the recipe."""
    model = resnet18(weights=None)
    model.fc = nn.Linear(model.fc.in_features, cfg.num_classes)
    return model


def build_sine_rnn(cfg: RNNConfig) -> nn.Module:
    return SineRNN(cfg)


class _Models(Mapping):
    """``{family: (config class, builder)}`` over the registered training entries (read when asked)."""

    def __getitem__(self, family: str) -> tuple[type, Callable[[Any], nn.Module]]:
        from training.registry import get_training

        entry = get_training(family)
        return entry.config, entry.builder

    def __iter__(self) -> Iterator[str]:
        from training.registry import list_training

        return iter(list_training())

    def __len__(self) -> int:
        return len(list(iter(self)))


MODELS: Mapping[str, tuple[type, Callable[[Any], nn.Module]]] = _Models()


def model_config(family: str, values: dict[str, Any] | None = None) -> Any:
    """The family's config dataclass, filled from plain data (e.g. a checkpoint's)."""
    if family not in MODELS:
        raise KeyError(f"unknown model family {family!r}; choose one of {', '.join(MODELS)}")
    cls = MODELS[family][0]
    values = dict(values or {})
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"{family}: unknown config keys {sorted(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})  # JSON lists -> tuples


def build_model(family: str, config: dict[str, Any] | Any | None = None) -> nn.Module:
    """Build a family's model from its config dataclass or from plain data."""
    cfg = config if not isinstance(config, (dict, type(None))) else model_config(family, config)
    return MODELS[family][1](cfg)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)
