"""One rule for where data is (zoo/datadir.py), applied by every command, not only by the Makefile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from zoo.datadir import TRANSFER_DATA_RULE, default_data_dir
from zoo.families import get_family

REPO = Path(__file__).resolve().parents[1]


def test_data_dir_is_env_then_shared_beside_the_repo_then_dot_data(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    assert default_data_dir({}, repo) == "./data"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert default_data_dir({}, repo) == str(tmp_path / "shared" / "data")
    assert default_data_dir({"DATA_DIR": "/elsewhere"}, repo) == "/elsewhere"
    assert default_data_dir({"DATA_DIR": ""}, repo) == str(tmp_path / "shared" / "data")  # empty = unset


def test_every_command_applies_the_rule_without_the_makefile():
    """`python -m training mnist-mlp` from the repository root finds ../shared/data with DATA_DIR unset."""
    env = {k: v for k, v in os.environ.items() if k != "DATA_DIR"}
    code = ("from training.recipes import mnist_mlp, transfer_resnet18; from export.bootstrap import get_args_parser; "
            "print(mnist_mlp.get_args_parser().parse_args([]).data_dir); "
            "print(transfer_resnet18.get_args_parser().parse_args([]).data_dir); "
            "print(get_args_parser().parse_args(['--quick']).data_dir)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    shared = REPO.parent / "shared" / "data"
    root = str(shared) if shared.is_dir() else "./data"
    assert out.stdout.split() == [root, str(Path(root) / "transfer-resnet18"), root]


def test_transfer_data_has_one_instruction_everywhere():
    assert TRANSFER_DATA_RULE in get_family("transfer-resnet18").how_to_get  # the 503's advice
    readme = (REPO / "README.md").read_text()
    assert "$DATA_DIR/transfer-resnet18" in readme and "TRANSFER_DATA" not in readme
