"""Checkpoints that are truncated, foreign, for another family, or malicious give a clear CheckpointError;
optimisers and schedules follow their flags."""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile

import pytest
import torch

from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.models import build_model, config_to_dict, model_config
from training.optim import load_scheduler_state, make_optimizer, make_scheduler, scheduler_step
from training.specs import mnist_spec


def good_checkpoint(tmp_path):
    cfg = model_config("mnist-mlp")
    ckpt = {"model": build_model("mnist-mlp", cfg).state_dict(), "optimizer": None, "scheduler": None, "epoch": 1,
            "config": {"family": "mnist-mlp", "model": config_to_dict(cfg), "train": {"data_dir": "/x"}},
            "spec": mnist_spec().to_dict(), "metrics": {}}
    return save_checkpoint(tmp_path / "best.pt", ckpt)


def test_round_trip_and_family_check(tmp_path):
    path = good_checkpoint(tmp_path)
    assert load_checkpoint(path, "mnist-mlp")["epoch"] == 1
    with pytest.raises(CheckpointError, match="'mnist-mlp', expected 'sine-rnn'"):
        load_checkpoint(path, "sine-rnn")


def test_truncated_checkpoint(tmp_path):
    path = good_checkpoint(tmp_path)
    data = path.read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pt")


def test_wrong_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt: not a model zoo checkpoint: not a file torch.save wrote"):
        load_checkpoint(tmp_path / "notes.txt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a model zoo checkpoint: missing keys"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(CheckpointError, match=r"a bare state_dict\?"):
        load_checkpoint(tmp_path / "weights.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a model zoo checkpoint: it holds a list, not a dict"):
        load_checkpoint(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_pickled_module_is_not_a_checkpoint_and_no_unsafe_advice(tmp_path):
    """torch.load's own error advises weights_only=False (arbitrary code execution): ours says what the file
    is not and what a checkpoint is, in one line."""
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")  # what the style forbids: a pickled module
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tmp_path / "module.pt")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'module.pt'}: not a model zoo checkpoint: it holds pickled Python "
                              "objects (torch.nn.modules.linear.Linear): refused to load"), message
    assert "the plain dict `python -m training` writes" in message and "model, optimizer, scheduler" in message
    assert "weights_only" not in message and "still be loaded" not in message and "\n" not in message


class _Exploit:
    """Unpickling this object would run a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_code(tmp_path):
    marker = tmp_path / "pwned"
    path = good_checkpoint(tmp_path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["metrics"] = {"note": _Exploit(marker)}
    torch.save(ckpt, tmp_path / "evil.pt")  # a real torch zip file holding a code-running object
    assert zipfile.is_zipfile(tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not marker.exists(), "the payload ran"
    # sanity: plain pickle would have run it
    pickle.loads(pickle.dumps(_Exploit(marker)))
    assert marker.exists()


def _args(**kw):
    base = dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4, scheduler="none",
                step_size=2, gamma=0.5, patience=2, epochs=4)
    return argparse.Namespace(**{**base, **kw})


def test_optimizers_follow_flags():
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = make_optimizer(params, _args())
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["weight_decay"] == 5e-4
    assert isinstance(make_optimizer(params, _args(optimizer="adamw")), torch.optim.AdamW)
    adam = make_optimizer(params, _args(optimizer="adam", betas=[0.8, 0.99]))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["betas"] == (0.8, 0.99)


def _lrs(scheduler_name, steps_per_epoch=3, metrics=(1.0, 1.0, 1.0, 1.0)):
    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], _args())
    args = _args(scheduler=scheduler_name)
    sch = make_scheduler(opt, args, steps_per_epoch, mode="min")
    lrs = []
    for epoch in range(args.epochs):
        lrs.append(opt.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            opt.step()
            scheduler_step(sch, args, per_batch=True)
        scheduler_step(sch, args, per_batch=False, metric=metrics[epoch])
    return lrs


def test_schedules():
    assert _lrs("none") == [0.1] * 4
    assert _lrs("step") == pytest.approx([0.1, 0.1, 0.05, 0.05])
    cosine = _lrs("cosine")
    assert cosine[0] == pytest.approx(0.1) and cosine[1] > cosine[2] > cosine[3] > 0
    onecycle = _lrs("onecycle")
    assert onecycle[0] < 0.01 and max(onecycle) <= 0.1 + 1e-9  # warm-up from max_lr / 25
    linear = _lrs("linear")  # 4 epochs x 3 batches: 1 - step/12 at the start of each epoch
    assert linear == pytest.approx([0.1, 0.075, 0.05, 0.025])
    plateau = _lrs("plateau", metrics=(1.0, 1.0, 1.0, 1.0))  # no improvement: lr halves after patience 1
    assert plateau[0] == 0.1 and plateau[-1] < 0.1


@pytest.mark.parametrize("name", ["onecycle", "cosine", "linear"])
def test_resume_with_more_epochs_stretches_the_schedule(name):
    """--resume --epochs 4 after a 2-epoch run: the schedule runs to the new end, not the old one."""
    def run(epochs, state=None, steps=3):
        opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], _args())
        args = _args(scheduler=name, epochs=epochs)
        sch = make_scheduler(opt, args, steps)
        note = load_scheduler_state(sch, state) if state is not None else None
        lrs = []
        for _ in range(epochs - (2 if state is not None else 0)):
            for _ in range(steps):
                opt.step()
                scheduler_step(sch, args, per_batch=True)
            scheduler_step(sch, args, per_batch=False, metric=1.0)
            lrs.append(opt.param_groups[0]["lr"])
        return sch, lrs, note

    first, lrs2, _ = run(2)
    _, resumed, note = run(4, first.state_dict())
    _, straight, _ = run(4)
    if name != "linear":  # LambdaLR keeps no length in its state: nothing to report
        assert note and "->" in note
    assert resumed[-1] < resumed[0]  # still annealing after the old end
    assert resumed == pytest.approx(straight[2:], abs=0.02)  # and close to a 4-epoch run from the start
