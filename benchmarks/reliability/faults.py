"""Fault injection against a real server: a killed worker, SIGTERM under load, broken model stores.

    python -m benchmarks.reliability.faults --home ~/bentoml [--scenario all] [--json out.json]

``--home`` is a BENTOML_HOME whose store has ``mnist-mlp`` (``make models`` or
``python -m export.bootstrap --quick``); the broken-store scenarios work on copies of it.

- ``kill-worker``: closed-loop load on /classify_digit, SIGKILL the worker process; the arbiter starts
  a new one. Reported: requests in flight at the kill and how they ended, every failed request by
  kind, seconds until the first success of a request sent after the kill, until /readyz is 200 again.
- ``sigterm``: load with 32-image requests, SIGTERM to ``bentoml serve``. Every request in flight at
  that moment must end 200 (graceful drain), and the process must exit 0.
- ``startup``: the store's ``mnist-mlp`` entry with ``model.onnx`` deleted, overwritten with garbage,
  or replaced by the ``sine-rnn`` entry's files (wrong family). ``bentoml serve`` must exit non-zero
  with a message naming the model and the file, and never answer /readyz 200 meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devtools.faults import BREAKS, break_store, kill_worker, sigterm_drain, startup_failure
from devtools.launch import ONE_WORKER, start_service


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(args.home).expanduser()
    if not (home / "models" / "mnist-mlp").is_dir():
        raise SystemExit(f"faults: no mnist-mlp in {home}/models; run make models or python -m export.bootstrap --quick")
    out: dict[str, Any] = {"cpu_count": os.cpu_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with tempfile.TemporaryDirectory(prefix="zoo-faults-") as tmp:
        tmp = Path(tmp)
        if args.scenario in ("all", "kill-worker"):
            with start_service(home, tmp / "kill.log", {**ONE_WORKER, "MODEL_ZOO_WORKERS": str(args.workers)}) as s:
                out["kill_worker"] = kill_worker(s, users=args.users)
        if args.scenario in ("all", "sigterm"):
            with start_service(home, tmp / "term.log", ONE_WORKER) as s:
                out["sigterm"] = sigterm_drain(s, users=args.users)
        if args.scenario in ("all", "startup"):
            out["startup"] = {}
            for how in BREAKS:
                broken = tmp / f"home-{how}"
                named = break_store(home, broken, how)
                res = startup_failure(broken, tmp / f"start-{how}.log")
                res["names_file"] = str(named) in res["output"]
                res["names_model"] = "'mnist-mlp'" in res["output"]
                res["output"] = [ln for ln in res["output"].splitlines() if "cannot start" in ln or "mnist-mlp" in ln][-3:]
                out["startup"][how] = res
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.reliability.faults", description=__doc__.split("\n\n")[0])
    p.add_argument("--home", default=os.environ.get("BENTOML_HOME", "~/bentoml"), help="BENTOML_HOME with the models")
    p.add_argument("--scenario", choices=("all", "kill-worker", "sigterm", "startup"), default="all")
    p.add_argument("--users", type=int, default=16, help="concurrent closed-loop users")
    p.add_argument("--workers", type=int, default=2, help="server workers for kill-worker (one is killed)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    try:
        result = run(args)
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"faults: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
