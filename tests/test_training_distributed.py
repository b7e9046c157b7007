"""Data-parallel training with the real torchrun: two gloo CPU processes against one process.

- ``torchrun --standalone --nproc-per-node 2 -m training mnist-mlp --quick`` (a small MLP) on real MNIST reaches
  the one-process test accuracy within 0.5 points (measured figures: README, "Distributed training");
- rank 0 alone writes: one TensorBoard event file, one "epoch" line per epoch, a checkpoint in the
  one-process format (no ``module.`` prefix) that rebuilds the model strictly;
- ``--resume auto`` under torchrun continues the same run;
- the sampler and shard logic, unit-tested for rank 1 of 2 without starting processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from fixtures_data import mnist_data_dir
from training import distributed, engine
from training.checkpoint import load_checkpoint
from training.models import build_model
from training.recipes import mnist_mlp

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]  # the module behind the `torchrun` script


# The 784-200-200-10 quick recipe without augmentation or label smoothing: the test is about data
# parallelism, and this model trains in a third of the default MLP's time.
SMALL = ["--hidden", "200", "200", "--no-augment", "--label-smoothing", "0"]


def train(out: Path, *extra: str, nproc: int = 0, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m training mnist-mlp --quick`` (SMALL) on CPU (nproc=0), or under torchrun with nproc gloo processes."""
    launcher = [*TORCHRUN, "--standalone", "--nproc-per-node", str(nproc)] if nproc else [sys.executable]
    cmd = [*launcher, "-m", "training", "mnist-mlp", "--quick", *SMALL, "--device", "cpu", "--data-dir", str(mnist_data_dir()),
           "--out-dir", str(out / "ckpt"), "--log-dir", str(out / "runs"), "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp2")
    return out, train(out, nproc=2)


@pytest.mark.slow
def test_two_processes_reach_one_process_accuracy(two_process_run, tmp_path):
    out2, proc2 = two_process_run
    train(tmp_path, "--threads", "1")  # one thread: the same per-process cores as each of the two ranks
    acc1 = load_checkpoint(tmp_path / "ckpt" / "best.pt")["metrics"]["test_acc"]
    ckpt2 = load_checkpoint(out2 / "ckpt" / "best.pt", "mnist-mlp")
    acc2 = ckpt2["metrics"]["test_acc"]
    print(f"mnist-mlp --quick test accuracy: 1 process {100 * acc1:.2f}%, 2 processes {100 * acc2:.2f}%")
    assert acc1 > 0.95 and abs(acc2 - acc1) <= 0.005, (acc1, acc2)

    # Rank 0 alone wrote: one event file, one summary line per epoch, one "done" line.
    assert len(list((out2 / "runs").glob("events.out.tfevents.*"))) == 1
    assert proc2.stdout.count("mnist-mlp epoch 3/3") == 1 and proc2.stdout.count("done in") == 1
    # Same checkpoint format as one process: the unwrapped module's keys, the world size recorded.
    assert not any(k.startswith("module.") for k in ckpt2["model"])
    build_model("mnist-mlp", ckpt2["config"]["model"]).load_state_dict(ckpt2["model"])  # strict
    assert ckpt2["config"]["train"]["world_size"] == 2 and ckpt2["config"]["train"]["batch_size"] == 256
    assert [row["epoch"] for row in ckpt2["metrics"]["history"]] == [1, 2, 3]


@pytest.mark.slow
def test_resume_under_torchrun(two_process_run):
    out, _ = two_process_run
    before = load_checkpoint(out / "ckpt" / "last.pt")
    proc = train(out, "--resume", "auto", "--epochs", "4", nproc=2)
    assert proc.stdout.count("resumed from") == 1 and "epoch 4/4" in proc.stdout and "epoch 1/4" not in proc.stdout
    after = load_checkpoint(out / "ckpt" / "last.pt")
    assert after["epoch"] == 4 and [r["epoch"] for r in after["metrics"]["history"]] == [1, 2, 3, 4]
    assert after["metrics"]["history"][:3] == before["metrics"]["history"]
    first = next(iter(before["model"]))
    assert not torch.equal(after["model"][first], before["model"][first])  # the fourth epoch trained


def test_rank_one_of_two_gets_half_batches_and_a_disjoint_shard(monkeypatch):
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(rank=1, size=2, local_size=2))
    args = mnist_mlp.get_args_parser().parse_args(["--seed", "3"])
    ds = TensorDataset(torch.arange(10).float(), torch.arange(10))
    train_loader = engine.make_loader(ds, 4, True, args, torch.device("cpu"))
    engine._set_epoch(train_loader, 1)
    seen = torch.cat([y for _, y in train_loader])
    assert [len(y) for _, y in train_loader] == [2, 2, 1]  # global batch 4 -> 2 per process; 5 of 10 items
    assert len(set(seen.tolist())) == 5
    engine._set_epoch(train_loader, 2)
    assert torch.cat([y for _, y in train_loader]).tolist() != seen.tolist()  # reshuffled per epoch
    val = engine.make_loader(ds, 4, False, args, torch.device("cpu"))
    assert torch.cat([y for _, y in val]).tolist() == [1, 3, 5, 7, 9]  # rank 1's shard, no padding
    with pytest.raises(distributed.DistributedError, match="--batch-size 5 is the global batch"):
        engine.make_loader(ds, 5, True, args, torch.device("cpu"))


def test_one_process_is_untouched():
    assert distributed.world() == distributed.World() and not distributed.world().active
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, torch.device("cpu")) is model and distributed.unwrap(model) is model
    assert distributed.all_reduce_sums([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]
