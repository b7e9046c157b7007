"""Fixtures shared by the test modules; the helpers behind them are in harness.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixtures_data import mnist_data_dir
from harness import Zoo, build_zoo, make_checkpoint, quick_mlp, samples_for


@pytest.fixture(scope="session")
def zoo_server(tmp_path_factory) -> Zoo:
    """One real ``bentoml serve`` for the whole session, serving models trained and exported here."""
    yield from build_zoo(tmp_path_factory.mktemp("zoo"))


@pytest.fixture(scope="module")
def trained_mlp(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """(checkpoint, x, y): an MLP trained 1 epoch on 10k real MNIST images (~90%: enough for int8 drops
    to show) and 512 of the validation samples its export verifies on."""
    from training.specs import make_spec

    path = make_checkpoint(tmp_path_factory.mktemp("mlp") / "best.pt", "mnist-mlp", make_spec("mnist-mlp"),
                           model=quick_mlp(10_000), train={"data_dir": str(mnist_data_dir())})
    return (path, *samples_for(path, 512))
