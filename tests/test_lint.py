"""Pyflakes' checks over every package: an undefined name in a branch the other tests rarely take
(an ``except`` clause that formats a message) fails here, not in a worker under a fault (issue 25:
a missing import ended a worker's model loop for good)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from harness import ROOT


def test_pyflakes_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    done = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


def test_the_check_sees_an_undefined_name(tmp_path):
    """The check itself: the defect of issue 25 (``first_line`` called in an except clause, never imported)."""
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (tmp_path / "loop.py").write_text("def load():\n    try:\n        pass\n    except Exception as exc:\n"
                                      "        return first_line(exc)\n")
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    done = subprocess.run([ruff, "check", "--output-format", "concise", "."], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and "F821 Undefined name `first_line`" in done.stdout, done.stdout
