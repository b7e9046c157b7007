"""Make sure the default models are in the BentoML model store.

``python -m export.bootstrap --quick`` (used by ``make serve``): for every family missing from the
store whose data is present, train the quick recipe and export it; a model already in the store is
never replaced. ``--full`` (used by ``make models``): train the default (full) recipes and register a
new version of every family whose data is present.

A family whose data is missing is skipped with one line saying how to add it; the service answers
its endpoints with 503 and the same advice. Training runs as ``python -m training`` in a child
process, exactly as a user would run it, so its progress bars and errors reach the terminal.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from export import ExportError
from zoo.datadir import default_data_dir
from zoo.entry import get_entry
from zoo.families import list_families


def in_store(name: str) -> str | None:
    """The tag of the newest ``name`` model in the store, or None."""
    entry = get_entry(name)
    return str(entry.tag) if entry is not None else None


def train(family: str, data_dir: str, out_dir: Path, quick: bool, extra: list[str]) -> Path:
    cmd = [sys.executable, "-m", "training", family, "--data-dir", data_dir, "--out-dir", str(out_dir), *extra]
    if quick:
        cmd.append("--quick")
    print(f"[bootstrap] training {family}: {' '.join(cmd[1:])}", flush=True)
    result = subprocess.run(cmd)
    if result.returncode != 0:
        raise ExportError(f"training {family} failed (exit {result.returncode}); see the output above")
    best = out_dir / "best.pt"
    if not best.is_file():
        raise ExportError(f"training {family} finished but wrote no {best}")
    return best


def bootstrap(families: list[str], args: argparse.Namespace) -> int:
    """Train and export each family; where it trains from is its training entry's ``bootstrap`` hook."""
    from export.pipeline import export_checkpoint
    from training.data import data_available
    from training.registry import get_training

    out_root, quick = Path(args.out_dir), args.quick

    failed: list[str] = []
    for family in families:
        tag = in_store(family)
        if quick and tag:
            print(f"[bootstrap] {family}: in the store as {tag}, kept", flush=True)
            continue
        plan = get_training(family).bootstrap(args)
        source = plan.data_dir
        missing = plan.missing if source is None else data_available(family, source)
        if missing:
            print(f"[bootstrap] skipped {missing}", flush=True)
            continue
        try:
            ckpt = train(family, source, out_root / family, quick, list(plan.extra))
            export_checkpoint(ckpt, data_dir=source)
        except Exception as exc:  # one family failing must not hide the others' results
            print(f"[bootstrap] {family}: FAILED: {exc}", file=sys.stderr, flush=True)
            failed.append(family)
    if failed:
        print(f"[bootstrap] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export.bootstrap", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--quick", action="store_true", help="quick recipes, only for models missing from the store")
    mode.add_argument("--full", action="store_true", help="default recipes, a new version of every family with data")
    p.add_argument("--families", default=None, help="comma-separated families (default: every family)")
    p.add_argument("--data-dir", default=default_data_dir(),
                   help="dataset root ($DATA_DIR, else ../shared/data beside the repo when it exists, else ./data); "
                        "the transfer family's ImageFolder is DATA_DIR/transfer-resnet18")
    p.add_argument("--out-dir", default="checkpoints", help="checkpoints go to OUT_DIR/<family>")
    p.add_argument("--transfer-weights", default=os.environ.get("TRANSFER_WEIGHTS", "imagenet"),
                   help="its backbone: imagenet or a state_dict/checkpoint path ($TRANSFER_WEIGHTS)")
    return p


def main(argv: list[str] | None = None) -> int:
    from zoo.families import load_plugins

    args = get_args_parser().parse_args(argv)
    load_plugins()
    known = list_families()
    families = [f.strip() for f in (args.families or ",".join(known)).split(",") if f.strip()]
    unknown = sorted(set(families) - set(known))
    if unknown:
        print(f"error: unknown families {unknown}; choose from {', '.join(known)}", file=sys.stderr)
        return 2
    return bootstrap(families, args)


if __name__ == "__main__":
    sys.exit(main())
