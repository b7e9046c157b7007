"""training.data: real loaders on real MNIST and on tiny data in the real CIFAR-10 / ImageFolder formats."""

from __future__ import annotations

import math

import pytest
import torch

from fixtures_data import CIFAR10_CLASSES, mnist_data_dir, write_image_folder, write_tiny_cifar10
from zoo.spec import Spec
from training.data import (
    DataError,
    MissingDataError,
    data_available,
    eval_samples,
    load_cifar10,
    load_image_folder,
    load_mnist,
    make_spec,
    sine_windows,
)
from training.specs import MNIST_MEAN, MNIST_STD

MNIST_DIR = str(mnist_data_dir())


def test_mnist_tensors_are_normalised_and_split_is_seeded():
    a = load_mnist(MNIST_DIR, val_fraction=0.1, seed=3, train_limit=2000)
    b = load_mnist(MNIST_DIR, val_fraction=0.1, seed=3, train_limit=2000)
    assert a.train.tensors[0].shape == (1800, 784) and a.val.tensors[0].shape == (200, 784)
    assert torch.equal(a.val.tensors[1], b.val.tensors[1])  # same seed, same split
    # pixel 0 is background (0) in every MNIST image: normalised it is exactly -mean/std
    assert a.test.tensors[0][:, 0].allclose(torch.tensor(-MNIST_MEAN[0] / MNIST_STD[0]))
    assert a.test.tensors[1][:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the known first test labels


def test_missing_data_names_folder_and_flag(tmp_path):
    with pytest.raises(MissingDataError, match=r"--download") as err:
        load_mnist(str(tmp_path))
    assert str(tmp_path) in str(err.value)
    with pytest.raises(MissingDataError, match="cifar-10-batches-py"):
        load_cifar10(str(tmp_path))
    assert "MNIST" in data_available("mnist-mlp", tmp_path)
    assert data_available("mnist-mlp", MNIST_DIR) is None
    assert data_available("sine-rnn", tmp_path) is None
    with pytest.raises(DataError, match="mnist-mlp"):
        data_available("nope", tmp_path)


def test_cifar10_real_format(tmp_path):
    write_tiny_cifar10(tmp_path, per_batch=10)
    assert data_available("cifar10-resnet18", tmp_path) is None
    s = load_cifar10(str(tmp_path), val_fraction=0.2)
    assert (len(s.train), len(s.val), len(s.test)) == (40, 10, 10)
    assert s.labels == CIFAR10_CLASSES  # read from batches.meta
    x, y = eval_samples({"config": {"family": "cifar10-resnet18", "train": {"data_dir": str(tmp_path)}}}, 4)
    assert x.shape == (4, 3, 32, 32) and y.dtype == torch.int64
    spec = make_spec("cifar10-resnet18", classes=s.labels)
    # undo the normalisation: the inputs are back on the [0, 1] pixel scale
    mean, std = torch.tensor(spec.image.mean)[:, None, None], torch.tensor(spec.image.std)[:, None, None]
    pixels = x * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


@pytest.mark.parametrize("split", [False, True])
def test_image_folder(tmp_path, split):
    write_image_folder(tmp_path, classes=("b", "a"), per_class=5, split=split)
    s = load_image_folder(str(tmp_path), val_fraction=0.2)
    assert s.labels == ["a", "b"]  # ImageFolder sorts class names
    assert s.val[0][0].shape == (3, 224, 224)
    assert len(s.train) == (10 if split else 8)


def test_too_small_split_is_clear(tmp_path):
    write_image_folder(tmp_path, per_class=1)
    with pytest.raises(DataError, match="val-fraction"):
        load_image_folder(str(tmp_path), val_fraction=0.01)


def test_sine_windows_are_next_value_pairs():
    ds = sine_windows(8, seq_len=20, freq_range=(1.0, 1.0), amp_range=(2.0, 2.0), dt=0.1, seed=1)
    x, y = ds.tensors
    assert x.shape == y.shape == (8, 20, 1)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert x.abs().max() <= 2.0 + 1e-6
    # a * sin(f t + p) with f = 1, a = 2: x'' = -f^2 x, checked by a central second difference
    second = (x[:, 2:] - 2 * x[:, 1:-1] + x[:, :-2]) / 0.01
    assert torch.allclose(second, -x[:, 1:-1], atol=1e-2)


def test_specs_round_trip():
    for family, kw in [("mnist-mlp", {}), ("transfer-resnet18", {"classes": ["x", "y"]}), ("sine-rnn", {"cell": "gru"})]:
        spec = make_spec(family, **kw)
        assert Spec.from_json(spec.to_json()) == spec
    assert make_spec("mnist-mlp").image.input_shape() == [784]
    assert make_spec("transfer-resnet18", classes=["x"]).image.resize_shorter == 256
    assert math.isclose(make_spec("sine-rnn").sequence.dt, 0.1)
