"""Finding the images to classify under the paths a user gives.

Folders are walked recursively in sorted order; a file counts as an image by its
extension or, failing that, by its magic bytes. Hidden files and folders are skipped
(``.DS_Store``, ``.ipynb_checkpoints``). Symlinks that lead out of the given folder
are skipped unless ``follow_symlinks`` (a link to ``/`` must not turn a run over
one folder into a run over the disk); symlink loops are cut either way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from clients.media import looks_like_image


@dataclass(frozen=True)
class Found:
    """One image to classify.

    ``path`` is the path as recorded (the argument joined with the file's path under
    it); ``class_name`` is the first folder under a given folder, the class label
    when the folder is laid out like torchvision's ``ImageFolder``.
    """

    path: str
    root: str | None = None
    class_name: str | None = None


@dataclass
class Discovery:
    images: list[Found] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def path_key(path: str) -> str:
    """How paths are compared for resuming: absolute and normalised, symlinks kept."""
    return os.path.normpath(os.path.abspath(path))


def _inside(path: str, root_real: str) -> bool:
    real = os.path.realpath(path)
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def find_images(paths: list[str], follow_symlinks: bool = False) -> Discovery:
    """Images under ``paths`` (files and folders), each once, in a stable order.

    A path that does not exist is an error (a typo should not give an empty run);
    a file named directly is taken even without an image extension -- the server
    then says what is wrong with it.
    """
    found = Discovery()
    seen: set[str] = set()  # real paths, so a file reached twice is classified once

    def add(path: str, root: str | None, class_name: str | None) -> None:
        real = os.path.realpath(path)
        if real in seen:
            return
        seen.add(real)
        found.images.append(Found(path, root, class_name))

    for arg in paths:
        if not os.path.lexists(arg):
            raise FileNotFoundError(f"no such file or folder: {arg}")
        if os.path.isfile(arg):
            add(arg, None, None)
            continue
        if not os.path.isdir(arg):
            raise FileNotFoundError(f"not a file or folder (or a broken link): {arg}")
        _walk(arg, follow_symlinks, found, add)
    return found


def _walk(root: str, follow_symlinks: bool, found: Discovery, add) -> None:
    root_real = os.path.realpath(root)
    visited_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
        real_dir = os.path.realpath(dirpath)
        if real_dir in visited_dirs:  # a symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        visited_dirs.add(real_dir)
        kept = []
        for d in sorted(dirnames):
            full = os.path.join(dirpath, d)
            if d.startswith("."):
                continue
            if os.path.islink(full) and not follow_symlinks:
                found.skipped.append((full, "symlinked folder (use --follow-symlinks)"))
                continue
            kept.append(d)
        dirnames[:] = kept  # os.walk descends only into these, in this order
        rel_dir = os.path.relpath(dirpath, root)
        class_name = None if rel_dir == os.curdir else Path(rel_dir).parts[0]
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                if not os.path.exists(full):
                    found.skipped.append((full, "broken symlink"))
                    continue
                if not follow_symlinks and not _inside(full, root_real):
                    found.skipped.append((full, "symlink leads outside the folder (use --follow-symlinks)"))
                    continue
            if not os.path.isfile(full):
                continue  # a socket, a fifo
            if not looks_like_image(Path(full)):
                found.skipped.append((full, "not an image (extension and content)"))
                continue
            add(full, root, class_name)
