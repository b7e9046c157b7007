"""The models the benchmark measures, in a BentoML store of its own, filled by the project's real tools.

Layout of the work directory (a temporary one unless ``--keep DIR``):
    bentoml/                 BENTOML_HOME for every part (the service is started with it)
    checkpoints/<family>/    best.pt from the quick recipe, or random.pt (random initialisation)
    runs/                    TensorBoard logs of the quick recipes (the child runs with this cwd)

mnist-mlp and sine-rnn: ``python -m export.bootstrap --quick`` (train the quick recipe, export,
verify, register), exactly what ``make serve`` does. cifar10-resnet18: CIFAR-10 cannot be downloaded
here, so a randomly initialised ResNet-18 of the same architecture is exported with
``export.pipeline.export_checkpoint(samples=...)`` on random inputs (speed does not depend on the weights;
its labels are placeholders). A family whose data is missing falls back to the same random route.

``BENTOML_HOME`` must be set (``use_home``) before anything imports bentoml: it reads it once.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BOOTSTRAP_FAMILIES = ("mnist-mlp", "sine-rnn")  # trained by the quick recipes (data present or synthetic)
RANDOM_FAMILIES = ("cifar10-resnet18",)  # no data here: random initialisation, for timing only
RANDOM_SAMPLES = 64  # random inputs the export verifies (and calibrates int8) on


class BenchError(RuntimeError):
    """A benchmark step that cannot go on; the message says which and why."""


@dataclass
class StoredModel:
    name: str  # family = store name
    tag: str
    model_dir: Path  # the store entry's directory (model.onnx, model.ts, ...)
    checkpoint: Path  # the weights the eager rows and the naive server load
    origin: str  # "quick recipe" | "random init"

    def to_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def use_home(work: Path) -> Path:
    """Point BentoML (this process and its children) at ``work/bentoml``; must run before importing bentoml."""
    if "bentoml" in sys.modules:
        from bentoml._internal.configuration.containers import BentoMLContainer

        current = Path(BentoMLContainer.bentoml_home.get()).resolve()
        if current != (work / "bentoml").resolve():
            raise BenchError(f"bentoml was imported before the benchmark chose its store (it uses {current})")
    home = work / "bentoml"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["BENTOML_HOME"] = str(home)
    return home


def _latest(name: str):
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return bentoml.models.get(f"{name}:latest")
    except NotFound:
        return None


def random_checkpoint(family: str, path: Path, seed: int = 0) -> Path:
    """A randomly initialised model of ``family`` saved in the real checkpoint format (training/checkpoint.py)."""
    import torch

    from training.checkpoint import save_checkpoint
    from training.models import build_model, config_to_dict, model_config
    from training.specs import make_spec

    torch.manual_seed(seed)
    cfg = model_config(family)
    model = build_model(family, cfg).eval()
    if family == "sine-rnn":
        spec = make_spec(family, cell=cfg.cell, hidden_size=cfg.hidden_size, num_layers=cfg.num_layers)
    elif family == "mnist-mlp":
        spec = make_spec(family)
    else:  # placeholder class names: the weights are random, the names would mean nothing
        spec = make_spec(family, classes=[f"class{i}" for i in range(cfg.num_classes)])
    return save_checkpoint(path, {
        "model": model.state_dict(), "optimizer": None, "scheduler": None, "epoch": 0,
        "config": {"family": family, "model": config_to_dict(cfg), "train": {"random_init": True, "seed": seed}},
        "spec": spec.to_dict(), "metrics": {},
    })


def random_samples(family: str, n: int = RANDOM_SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Inputs/targets shaped as ``export.pipeline.validation_samples`` returns them, without a dataset."""
    from training.data import sine_windows
    from training.models import model_config
    from training.specs import make_spec

    rng = np.random.default_rng(seed)
    if family == "sine-rnn":
        x, y = sine_windows(n, seq_len=50, seed=seed).tensors  # synthetic anyway: the real windows
        return x.numpy(), y.numpy()
    classes = model_config(family).num_classes
    spec = make_spec(family) if family == "mnist-mlp" else make_spec(family, classes=[str(i) for i in range(classes)])
    x = rng.standard_normal((n, *spec.image.input_shape()), dtype=np.float32)  # already "normalised" scale
    return x, rng.integers(0, classes, n)


def export_random(family: str, work: Path, echo: Callable[[str], None]) -> Path:
    from export.pipeline import export_checkpoint

    ckpt = random_checkpoint(family, work / "checkpoints" / family / "random.pt")
    export_checkpoint(ckpt, samples=random_samples(family), echo=lambda s: echo(f"[store] {s}"))
    return ckpt


def fill_store(work: Path, data_dir: str, families: tuple[str, ...] = (*BOOTSTRAP_FAMILIES, *RANDOM_FAMILIES),
               random_weights: bool = False, echo: Callable[[str], None] = print) -> tuple[list[StoredModel], list[str]]:
    """Make sure every family in ``families`` is in ``work/bentoml``; returns the models and the commands run.

    ``random_weights``: no training at all, every family randomly initialised (tests; machines without data).
    """
    use_home(work)
    unknown = sorted(set(families) - {*BOOTSTRAP_FAMILIES, *RANDOM_FAMILIES})
    if unknown:
        raise BenchError(f"unknown families {unknown}; choose from {', '.join((*BOOTSTRAP_FAMILIES, *RANDOM_FAMILIES))}")
    commands: list[str] = []
    trained = () if random_weights else BOOTSTRAP_FAMILIES
    missing = [f for f in trained if f in families and _latest(f) is None]
    if missing:
        cmd = [sys.executable, "-m", "export.bootstrap", "--quick", "--families", ",".join(missing),
               "--data-dir", str(Path(data_dir).resolve()), "--out-dir", str(work / "checkpoints")]
        commands.append("BENTOML_HOME=<work>/bentoml python " + " ".join(cmd[1:]).replace(str(work), "<work>"))
        echo(f"[store] {' '.join(cmd[1:])}")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        # cwd=work: the recipes' TensorBoard logs (runs/) land in the work directory, not in the repository
        log = work / "bootstrap.log"
        with log.open("w") as f:
            code = subprocess.run(cmd, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
        if code != 0:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise BenchError(f"python -m export.bootstrap --quick failed (exit {code}); end of {log}:\n{tail}")
        echo(f"[store] bootstrap done (log: {log})")
    models = []
    for family in families:
        best = work / "checkpoints" / family / "best.pt"
        rand = work / "checkpoints" / family / "random.pt"
        if _latest(family) is None:
            echo(f"[store] {family}: exporting a randomly initialised model (timing only)")
            commands.append(f"export.pipeline.export_checkpoint(random_checkpoint({family!r}), samples=random inputs)")
            export_random(family, work, echo)
        if best.is_file() and family in trained and not rand.is_file():
            ckpt, origin = best, "quick recipe"
        elif rand.is_file():
            ckpt, origin = rand, "random init"
        else:
            raise BenchError(f"{family} is in {work / 'bentoml'} but its checkpoint is not under {work / 'checkpoints'}: "
                             "use a fresh --keep directory")
        stored = _latest(family)
        models.append(StoredModel(family, str(stored.tag), Path(stored.path), ckpt, origin))
    return models, commands


def load_target(model: StoredModel):
    """StoredModel -> engine.Target (spec from the store entry, eager module from the checkpoint)."""
    from benchmarks.engine import Target
    from export.pipeline import model_from_checkpoint
    from zoo.spec import Spec

    _, module, _ = model_from_checkpoint(model.checkpoint, family=model.name)
    spec = Spec.from_json((model.model_dir / "spec.json").read_text())
    return Target(model.name, spec, model.model_dir, module)
