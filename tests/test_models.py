"""Every registered model: output shape, no NaN, logits (no final activation), every parameter gets a gradient.

References: the MLP against the same computation written with torch.nn.functional; the RNN's
whole-sequence forward against a step-by-step rollout with carried state (what the service does).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from training.models import MODELS, build_model, config_to_dict, model_config

CASES = {  # family -> (config overrides, input shape, output shape)
    "mnist-mlp": ({"dropout": 0.2}, (4, 784), (4, 10)),
    "cifar10-resnet18": ({}, (2, 3, 32, 32), (2, 10)),
    "transfer-resnet18": ({"num_classes": 5, "cifar_stem": False}, (2, 3, 64, 64), (2, 5)),
    "sine-rnn/rnn": ({"cell": "rnn"}, (3, 7, 1), (3, 7, 1)),
    "sine-rnn/lstm": ({"cell": "lstm"}, (3, 7, 1), (3, 7, 1)),
    "sine-rnn/gru": ({"cell": "gru", "num_layers": 2}, (3, 7, 1), (3, 7, 1)),
}


def test_every_family_is_covered():
    assert {case.split("/")[0] for case in CASES} == set(MODELS)


@pytest.mark.parametrize("case", list(CASES))
def test_shape_finite_and_every_parameter_gets_a_gradient(case):
    family = case.split("/")[0]
    overrides, in_shape, out_shape = CASES[case]
    torch.manual_seed(0)
    model = build_model(family, overrides).train()
    out = model(torch.randn(in_shape))
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == out_shape
    assert torch.isfinite(out).all()
    assert (out < 0).any(), "negative outputs exist: nothing clips the logits/regression value"
    out.pow(2).mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not no_grad, f"parameters without a gradient: {no_grad}"


def test_config_round_trips_through_plain_data():
    for family in MODELS:
        cfg = model_config(family)
        again = model_config(family, config_to_dict(cfg))
        assert again == cfg
    with pytest.raises(ValueError, match="unknown config keys"):
        model_config("mnist-mlp", {"width": 3})
    with pytest.raises(KeyError, match="mnist-mlp"):
        model_config("lenet")


def test_mlp_matches_functional_reference():
    torch.manual_seed(1)
    model = build_model("mnist-mlp").eval()
    x = torch.randn(5, 784)
    l1, l2, l3 = [m for m in model.modules() if isinstance(m, nn.Linear)]
    ref = F.linear(F.relu(F.linear(F.relu(F.linear(x, l1.weight, l1.bias)), l2.weight, l2.bias)), l3.weight, l3.bias)
    assert [l.out_features for l in (l1, l2, l3)] == [512, 512, 10]
    torch.testing.assert_close(model(x), ref)
    torch.testing.assert_close(model(x.view(5, 1, 28, 28)), ref)  # image-shaped input is flattened


def test_cifar_resnet18_is_torchvision_with_cifar_stem():
    from torchvision.models import ResNet
    from torchvision.models.resnet import BasicBlock

    model = build_model("cifar10-resnet18")
    assert isinstance(model, ResNet)
    assert sum(isinstance(m, BasicBlock) for m in model.modules()) == 8  # [2, 2, 2, 2]
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    n_params = sum(p.numel() for p in model.parameters())
    assert 11.1e6 < n_params < 11.3e6  # 11,173,962 for 10 classes
    transfer = build_model("transfer-resnet18", {"num_classes": 3, "cifar_stem": False})
    assert transfer.conv1.kernel_size == (7, 7) and transfer.fc.out_features == 3 and transfer.fc.in_features == 512


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_rnn_stepwise_matches_whole_sequence(cell):
    torch.manual_seed(2)
    model = build_model("sine-rnn", {"cell": cell}).eval()
    x = torch.randn(2, 6, 1, dtype=torch.float64)
    model.double()
    y, state = model(x)
    assert all(s.dtype == torch.float64 and s.shape == (1, 2, 16) for s in state)  # state follows the input dtype
    steps, st = [], None
    for t in range(6):
        out, st = model(x[:, t:t + 1], st)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), y)
    for a, b in zip(st, state):
        torch.testing.assert_close(a, b)


def test_unknown_cell_is_clear():
    with pytest.raises(ValueError, match="lstm"):
        build_model("sine-rnn", {"cell": "transformer"})
