"""``python -m training FAMILY [options]``: dispatch to the family's recipe.

Errors a user can fix (missing data, a bad checkpoint, an impossible split) end with a
non-zero exit and one readable line, not a traceback.
"""

from __future__ import annotations

import sys

from training.checkpoint import CheckpointError
from training.data import DataError
from training.distributed import DistributedError
from training.registry import get_training, list_training
from zoo.families import FamilyError


def usage() -> str:
    return f"usage: python -m training {{{','.join(list_training())}}} [options]  (FAMILY --help for options)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        families = list_training()  # the recipes here and the plugins in $MODEL_ZOO_FAMILIES
    except FamilyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    family, rest = argv[0], argv[1:]
    if family not in families:
        print(f"error: unknown family {family!r}; choose one of {', '.join(families)}", file=sys.stderr)
        return 2
    try:
        get_training(family).main(rest)
    except (DataError, CheckpointError, DistributedError, FloatingPointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; resume with --resume auto", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
