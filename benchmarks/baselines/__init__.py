"""Reference servers the benchmark measures the service against (naive_server.py, naive_ort_server.py), and
the one-route echo servers of benchmarks/studies/floor.py (echo.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Iterable


def serve(module: str, doc: str, metavar: str, build_app: Callable[[list[str]], Any],
          errors: tuple[type[BaseException], ...], argv: list[str] | None = None) -> int:
    """The naive servers' command line: ``--model ... --host --port``; a bad ``--model`` is one line, exit 1."""
    import uvicorn

    p = argparse.ArgumentParser(prog=f"python -m {module}", description=doc.splitlines()[0])
    p.add_argument("--model", action="append", default=[], metavar=metavar, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args(argv)
    try:
        app = build_app(args.model)
    except errors as exc:
        print(f"{module.rsplit('.', 1)[-1]}: error: {exc}", file=sys.stderr)
        return 1
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    return 0


def family_paths(items: list[str], families: Iterable[str], what: str) -> dict[str, Path]:
    """``--model FAMILY=PATH`` items -> {family: path}; a malformed item or another family is a ValueError."""
    families = list(families)
    out = {}
    for item in items:
        family, sep, path = item.partition("=")
        if not sep or family not in families:
            raise ValueError(f"--model takes FAMILY={what} with FAMILY one of {', '.join(families)}; got {item!r}")
        out[family] = Path(path)
    return out
