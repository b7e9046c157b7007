"""Where datasets are: one rule for every command (training, export, bootstrap, the service's hints).

The data dir is ``$DATA_DIR`` when set, else ``../shared/data`` beside the repository when it exists,
else ``./data``. Folder datasets of their own (the transfer family's ImageFolder) live at
``<data dir>/<family>`` unless ``--data-dir DIR`` names them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The one instruction for transfer data: the 503 (zoo.families), bootstrap and training messages; README says the same.
TRANSFER_DATA_RULE = ("an ImageFolder (DIR/<class>/*.jpg, or DIR/train + DIR/val) at $DATA_DIR/transfer-resnet18, "
                      "or any DIR given as `python -m training transfer-resnet18 --data-dir DIR`")


def default_data_dir(environ: Mapping[str, str] | None = None, repo: Path | None = None) -> str:
    """``$DATA_DIR``, else ``<repo>/../shared/data`` when it exists, else ``./data``."""
    env = os.environ if environ is None else environ
    if env.get("DATA_DIR"):
        return env["DATA_DIR"]
    shared = (repo or REPO).parent / "shared" / "data"
    return str(shared) if shared.is_dir() else "./data"


def family_data_dir(family: str, data_dir: str | os.PathLike | None = None) -> str:
    """A family's own dataset folder, ``<data dir>/<family>`` (the transfer family's ImageFolder)."""
    return str(Path(data_dir or default_data_dir()) / family)
