"""``python -m export CHECKPOINT [--name NAME] [--formats ...] [--data-dir DIR] [--out-dir DIR]``.

Exit status 0 with the registered tag on the last line of stdout; otherwise one readable
``error: ...`` line on stderr (the verification table, when it got that far, is above it) and exit 2
for a usage error (like argparse's own: an unknown ``--formats`` value), 1 for any other failure.
"""

from __future__ import annotations

import argparse
import sys

from export import FORMATS


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m export",
        description="Export a training checkpoint to TorchScript/ONNX (+fp16, +int8), verify every "
        "artifact against eager PyTorch on validation data, and register them as one BentoML model "
        "(store: $BENTOML_HOME, default ~/bentoml).",
    )
    p.add_argument("checkpoint", help="a checkpoint written by `python -m training` (e.g. checkpoints/FAMILY/best.pt)")
    p.add_argument("--name", default=None, help="model name in the store (default: the family name)")
    p.add_argument("--formats", default=None,
                   help=f"comma-separated subset of {','.join(FORMATS)} (default: all; a forecaster: all but onnx-fp16)")
    # Not defaulted to $DATA_DIR: the checkpoint records where its family's data is (a transfer
    # model's ImageFolder is not under $DATA_DIR); $DATA_DIR is the fallback when it records none.
    p.add_argument("--data-dir", default=None,
                   help="validation data root (default: the one recorded in the checkpoint, else $DATA_DIR, else ./data)")
    p.add_argument("--out-dir", default=None, help="also keep a copy of the files and report.json here "
                   "(written even when verification fails, to inspect; the store gets nothing then)")
    p.add_argument("--family", default=None, help="refuse the checkpoint unless it is of this family")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    # Imported here so `--help` is instant and import problems get the same one-line treatment.
    from export import ExportError, parse_formats

    try:
        parse_formats(args.formats)  # fail fast, before torch is imported
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from zoo.spec import SpecError
    from training.checkpoint import CheckpointError

    try:
        from export.pipeline import export_checkpoint

        tag = export_checkpoint(
            args.checkpoint, name=args.name, formats=args.formats, data_dir=args.data_dir,
            out_dir=args.out_dir, family=args.family,
        )
    except (ExportError, CheckpointError, SpecError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted; nothing was registered", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an unforeseen environment problem: still one line, still nothing registered
        print(f"error: export failed unexpectedly ({type(exc).__name__}: {exc}); nothing was registered", file=sys.stderr)
        return 1
    if args.name is None:
        print(takeover_note(tag.split(":")[0]), file=sys.stderr)
    print(tag)
    return 0


def takeover_note(name: str) -> str:
    """One line: without --name a model is stored under its family's name, whose alias route it then takes."""
    from zoo.families import get_family

    return (f"note: no --name, so it is stored as {name!r}, the family's own name: after a restart (or `zoo load {name}`) "
            f"it answers /{get_family(name).route} in place of the model there now; "
            f"pass --name NAME to serve it beside that one at /models/NAME/")


if __name__ == "__main__":
    sys.exit(main())
