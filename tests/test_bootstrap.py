"""export.bootstrap: what `make serve` and `make models` run, against a real temporary model store."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zoo.datadir import TRANSFER_DATA_RULE

REPO = Path(__file__).resolve().parents[1]


def run_bootstrap(tmp_path: Path, *args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "store"), "DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "export.bootstrap", *args, "--out-dir", str(tmp_path / "ckpt")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def store_tags(tmp_path: Path, name: str) -> list[str]:
    root = tmp_path / "store" / "models" / name
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def test_missing_data_is_skipped_with_the_fix(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    result = run_bootstrap(tmp_path, "--quick", "--families", "cifar10-resnet18,transfer-resnet18", data_dir=empty)
    assert result.returncode == 0, result.stderr
    assert "skipped cifar10-resnet18: CIFAR-10 files" in result.stdout
    assert "--download" in result.stdout
    assert "skipped transfer-resnet18: no dataset at " in result.stdout
    assert TRANSFER_DATA_RULE in result.stdout
    assert store_tags(tmp_path, "cifar10-resnet18") == []


@pytest.mark.slow
def test_quick_trains_a_missing_model_once_and_never_replaces_it(tmp_path):
    first = run_bootstrap(tmp_path, "--quick", "--families", "sine-rnn", data_dir=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    tags = store_tags(tmp_path, "sine-rnn")
    assert len(tags) == 1
    assert (tmp_path / "store" / "models" / "sine-rnn" / tags[0] / "model.onnx").is_file()

    second = run_bootstrap(tmp_path, "--quick", "--families", "sine-rnn", data_dir=tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "kept" in second.stdout and "training sine-rnn" not in second.stdout
    assert store_tags(tmp_path, "sine-rnn") == tags


def test_unknown_family_is_a_clear_error(tmp_path):
    result = run_bootstrap(tmp_path, "--quick", "--families", "gpt-5", data_dir=tmp_path)
    assert result.returncode == 2
    assert "unknown families ['gpt-5']" in result.stderr
