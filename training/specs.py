"""The spec each built-in family's checkpoint carries, and the one place its mean/std are stated.

Training normalises with these constants and writes them into the spec; export and the service
read them from the spec only (DESIGN.md: never restate mean/std or labels elsewhere).
"""

from __future__ import annotations

from typing import Any, Sequence

from zoo.spec import ImageSpec, SequenceSpec, Spec

# Per-channel statistics on the [0, 1] scale.
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)  # the 60k MNIST training images
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # the 50k CIFAR-10 training images
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # what torchvision's weights expect

# Sine windows: a * sin(f * t + phase), f in rad per time unit, t = k * dt.
# A band around 0.204 rad per step (f 2.04 at dt 0.1: sin(t) sampled at 50 points over 10 time units,
# the original example), any amplitude in 0.5-1.5, random phase. The band is the widest whose worst
# 40-step rollout after 10 points stays within MSE 1e-3 (README "Training", benchmarks/studies/sine_band.py).
SINE_DEFAULTS: dict[str, Any] = {"freq_range": (2.035, 2.045), "amp_range": (0.5, 1.5), "dt": 0.1}


def mnist_spec() -> Spec:
    """L 28x28, flattened to (N, 784) for the MLP; labels "0".."9"."""
    return Spec(
        family="mnist-mlp", task="classification", labels=tuple(str(i) for i in range(10)),
        image=ImageSpec(color_mode="L", height=28, width=28, mean=MNIST_MEAN, std=MNIST_STD, layout="NF"),
    )


def cifar10_spec(classes: Sequence[str]) -> Spec:
    """RGB 32x32, labels from the dataset's ``batches.meta``."""
    return Spec(
        family="cifar10-resnet18", task="classification", labels=tuple(classes),
        image=ImageSpec(color_mode="RGB", height=32, width=32, mean=CIFAR10_MEAN, std=CIFAR10_STD),
    )


def transfer_spec(classes: Sequence[str], family: str = "transfer-resnet18") -> Spec:
    """RGB, shorter side to 256 then center crop 224 (ImageNet evaluation), ImageFolder class names."""
    return Spec(
        family=family, task="classification", labels=tuple(classes),
        image=ImageSpec(color_mode="RGB", height=224, width=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                        resize_shorter=256),
    )


def sine_spec(cell: str = "lstm", hidden_size: int = 16, num_layers: int = 1,
              freq_range: tuple[float, float] = SINE_DEFAULTS["freq_range"],
              amp_range: tuple[float, float] = SINE_DEFAULTS["amp_range"],
              dt: float = SINE_DEFAULTS["dt"], **limits: int) -> Spec:
    """Forecast spec; ``limits`` may set min_history / max_history / max_steps."""
    return Spec(
        family="sine-rnn", task="forecast", output="next_value",
        sequence=SequenceSpec(cell=cell, hidden_size=hidden_size, num_layers=num_layers,
                              freq_range=tuple(freq_range), amp_range=tuple(amp_range), dt=dt, **limits),
    )


def make_spec(family: str, **kw: Any) -> Spec:
    """The family's registered spec builder (training/registry.py): ``make_spec(name, classes=[...])``,
    ``make_spec(name, cell="gru")``, ...; an unknown family is a KeyError naming the known ones."""
    from training.registry import get_training

    return get_training(family).spec(**kw)
