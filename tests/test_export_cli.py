"""`python -m export` end to end, against a real BentoML model store in a temp BENTOML_HOME.

Every command runs in a subprocess with ``BENTOML_HOME`` set in its environment (BentoML reads it
once per process), and the store is inspected with the real ``bentoml`` CLI. Failure cases check
the exit status, the one-line message, and that no model was left behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fixtures_data import mnist_data_dir
from zoo.spec import Spec
from harness import make_checkpoint
from training.specs import make_spec

pytestmark = pytest.mark.slow  # each test runs real exports in child processes (~5-25 s each)

ROOT = Path(__file__).resolve().parents[1]
BENTOML = str(Path(sys.executable).with_name("bentoml"))


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "DATA_DIR": str(mnist_data_dir()),
            "PYTHONPATH": str(ROOT)}


def run(args: list[str], env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def export(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "export", *args], env)


def store_tags(env: dict[str, str]) -> list[str]:
    proc = run([BENTOML, "models", "list", "-o", "json"], env)
    assert proc.returncode == 0, proc.stderr
    return [m["tag"] for m in json.loads(proc.stdout)]


def assert_clean_failure(proc: subprocess.CompletedProcess, env: dict[str, str], *needles: str, code: int = 1) -> None:
    """Exit ``code`` (2: a usage error, 1: a failure), one readable `error:` line (no traceback),
    nothing in the store."""
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    assert store_tags(env) == []


def test_export_registers_one_model_with_every_file(trained_mlp, env, tmp_path):
    ckpt, _, _ = trained_mlp
    proc = export([str(ckpt), "--out-dir", str(tmp_path / "copy")], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tag = proc.stdout.strip().splitlines()[-1]
    assert tag.startswith("mnist-mlp:") and "onnx-int8" in proc.stdout  # the table was printed
    assert store_tags(env) == [tag]
    info = json.loads(run([BENTOML, "models", "get", tag, "-o", "json"], env).stdout)
    assert info["labels"] == {"family": "mnist-mlp", "task": "classification"}
    assert info["metadata"]["formats"] == ["torchscript", "onnx", "onnx-fp16", "onnx-int8"]
    assert info["metadata"]["opset"] >= 17
    spec = make_spec("mnist-mlp")
    assert Spec.from_dict(info["metadata"]["spec"]) == spec
    model_dir = Path(env["BENTOML_HOME"], "models", *tag.split(":"))
    names = {p.name for p in model_dir.iterdir()}
    assert {"model.ts", "model.onnx", "model.fp16.onnx", "model.int8.onnx", "spec.json", "report.json", "README.md"} <= names
    assert Spec.from_json((model_dir / "spec.json").read_text()) == spec
    report = json.loads((model_dir / "report.json").read_text())
    assert report["failures"] == [] and report["samples"] == 512 and report["name"] == "mnist-mlp"
    assert report["formats"]["onnx"]["top1_agreement"] == 100.0
    assert report["formats"]["onnx-int8"]["accuracy_drop"] <= 0.5
    card = (model_dir / "README.md").read_text()
    assert "mnist-mlp" in card and "onnx-int8" in card and "accuracy" in card
    # the default MLP's architecture and size: (784*512 + 512) + (512*512 + 512) + (512*10 + 10) weights
    assert '"hidden": [512, 512]' in card and f"{784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10:,} parameters" in card
    assert {p.name for p in (tmp_path / "copy").iterdir()} == names - {"model.yaml"}
    # a second export is a new version of the same model, not an overwrite
    again = export([str(ckpt), "--formats", "onnx", "--name", "mnist-mlp"], env)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "note: no --name" in proc.stderr and "note:" not in again.stderr  # an explicit --name is a choice
    assert sorted(store_tags(env)) == sorted([tag, again.stdout.strip().splitlines()[-1]])


def test_sine_rnn_defaults_skip_fp16(env, tmp_path):
    ckpt = make_checkpoint(tmp_path / "rnn.pt", "sine-rnn", make_spec("sine-rnn", cell="gru"), {"cell": "gru"})
    proc = export([str(ckpt)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tag = proc.stdout.strip().splitlines()[-1]
    # without --name it takes the family's name, and with it the alias route: said in one line
    notes = [ln for ln in proc.stderr.splitlines() if ln.startswith("note:")]
    assert len(notes) == 1 and "'sine-rnn'" in notes[0] and "/forecast_sine" in notes[0] and "--name" in notes[0], notes
    info = json.loads(run([BENTOML, "models", "get", tag, "-o", "json"], env).stdout)
    assert info["metadata"]["formats"] == ["torchscript", "onnx", "onnx-int8"]
    assert info["metadata"]["spec"]["sequence"]["cell"] == "gru"


def test_unknown_format_fails_before_any_work(trained_mlp, env):
    proc = export([str(trained_mlp[0]), "--formats", "onnx,tflite"], env)
    assert_clean_failure(proc, env, "'tflite'", "choose from torchscript, onnx, onnx-fp16, onnx-int8", code=2)


def test_wrong_family_is_refused(trained_mlp, env):
    ckpt = str(trained_mlp[0])
    assert_clean_failure(export([ckpt, "--family", "sine-rnn"], env), env, "'mnist-mlp'", "expected 'sine-rnn'")
    assert_clean_failure(export([ckpt, "--name", "sine-rnn"], env), env, "belongs to the sine-rnn family")


@pytest.mark.parametrize("what", ["module", "random"])
def test_a_file_that_is_not_a_checkpoint_says_what_one_is(what, env, tmp_path):
    import torch

    path = tmp_path / "model.pt"
    if what == "module":
        torch.save(torch.nn.Linear(2, 2), path)  # a pickled nn.Module, as torch.save(model) writes
    else:
        path.write_bytes(bytes(range(256)) * 16)
    proc = export([str(path)], env)
    assert_clean_failure(proc, env, f"error: {path}: not a model zoo checkpoint", "`python -m training` writes",
                         "model, optimizer, scheduler, epoch, config, spec, metrics")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "weights_only" not in proc.stderr and "still be loaded" not in proc.stderr


SABOTAGE = textwrap.dedent('''
    # Run the real CLI with one step sabotaged, to prove a failure leaves the store untouched.
    import sys
    import export.pipeline as pipeline
    import export.store as store

    what, argv = sys.argv[1], sys.argv[2:]
    if what == "corrupt-onnx":  # the fp32 ONNX file gets truncated after it was written
        real = pipeline.export_onnx
        def export_onnx(model, spec, path):
            real(model, spec, path)
            data = path.read_bytes()
            path.write_bytes(data[: len(data) // 3])
            return path
        pipeline.export_onnx = export_onnx
    elif what == "copy-fails":  # the disk fills up half-way through copying into the store
        real_copy, copied = store.shutil.copy2, []
        def copy2(src, dst):
            if copied:
                raise OSError(28, "No space left on device")
            copied.append(src)
            return real_copy(src, dst)
        store.shutil.copy2 = copy2
    from export.__main__ import main
    sys.exit(main(argv))
''')


@pytest.mark.parametrize("what,formats,needle", [
    ("corrupt-onnx", "torchscript,onnx", "model.onnx"),
    ("corrupt-onnx", "onnx,onnx-int8", "model.onnx"),
    ("copy-fails", "onnx", "No space left on device"),
])
def test_failures_leave_nothing_in_the_store(what, formats, needle, env, tmp_path):
    ckpt = make_checkpoint(tmp_path / "rnn.pt", "sine-rnn", make_spec("sine-rnn"), {"cell": "lstm"})
    (tmp_path / "sabotage.py").write_text(SABOTAGE)
    proc = run([sys.executable, str(tmp_path / "sabotage.py"), what, str(ckpt), "--formats", formats], env)
    assert_clean_failure(proc, env, needle)
