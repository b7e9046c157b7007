"""Start-up check of the model store: refuse to serve a broken entry instead of half-starting.

Without it, a store entry whose ``model.onnx`` is missing or corrupt, or that holds another family's
model, lets ``bentoml serve`` start: ``/livez`` answers 200, ``/readyz`` stays 503 forever, and the
broken endpoint either answers 503 or (a wrong family) hits an assertion -- a half-ready server. An
exception in the worker does not help either: BentoML's arbiter restarts a crashing worker forever.

So ``check_or_exit()`` runs where ``bentoml serve`` imports the service (the arbiter process, before any
worker starts) and does what a worker would do with every entry it will serve at start-up (every
stored model of a known family, or ``MODEL_ZOO_MODELS``): read the spec, check its family, and create
the runtime session with the service's own loader (service/control/store.py ``check_entry``). Any problem ends
the process with status 1 and one line per broken model, naming the model, its store tag and the
file. A model named in ``MODEL_ZOO_MODELS`` but missing from the store is an error too (the operator
asked for it); by default a family with no stored model is a 503 on its route that says how to add it.

    python -m service.control.preflight     # the same check as a command (exit 0: every entry would load)

Wiring (service/app.py, after the imports, before the class body reads the settings)::

    check_or_exit()

It also checks that ``MODEL_ZOO_GRPC_PORT`` is free (``check_grpc_port``): every worker binds it with
``SO_REUSEPORT``, so without the check a second server on a taken port would start and silently share
its connections with whatever holds it (another of our servers included). A plain bind, without
``SO_REUSEPORT``, fails when anything listens there; start-up then ends with one line naming the port
and the setting.

``MODEL_ZOO_SKIP_PREFLIGHT=1`` turns it off (start anyway; broken models then answer 503).
"""

from __future__ import annotations

import logging
import os
import socket
import sys

from service.config import Settings
from service.control.store import (
    check_entry,
    entry_family,
    latest_entries,
    scan_store,
)
from zoo.entry import get_entry
from zoo.errors import first_line
from zoo.families import FAMILIES


logger = logging.getLogger("model_zoo.preflight")


class PreflightError(SystemExit):
    """Ends start-up with status 1; the message (one line per problem) is what gets printed."""

    def __init__(self, problems: list[str]) -> None:
        # A str code: Python prints it to stderr and exits with status 1 (setting code = 1 would
        # silence the message).
        super().__init__("model_zoo: cannot start:\n" + "\n".join(f"  {p}" for p in problems))
        self.problems = problems


def in_worker() -> bool:
    """True in a BentoML worker process: the process that started it already checked the store."""
    import bentoml

    return bentoml.server_context.worker_index is not None


def check(settings: Settings) -> list[str]:
    """Problems with every model this instance would serve at start-up (empty: all good)."""
    problems = []
    if settings.models is not None:
        broken = {(b.name, b.version): b.reason for b in scan_store()[1]}
        for name, version in settings.models:
            if (name, version) in broken:  # looked up, a FIFO model.yaml would block
                problems.append(f"model '{name}:{version}' is named in MODEL_ZOO_MODELS: {broken[name, version]}")
                continue
            try:
                entry = get_entry(name, version)
            except Exception as exc:  # noqa: BLE001 - a corrupt model.yaml makes the store lookup itself fail
                problems.append(f"model {name!r}: the model store entry cannot be read: {first_line(exc)}")
                continue
            if entry is None:
                what = f"{name}:{version}" if version else name
                problems.append(f"model {what!r} is named in MODEL_ZOO_MODELS but is not in the model store "
                                f"({os.environ.get('BENTOML_HOME', '~/bentoml')}/models)")
                continue
            if (problem := check_entry(entry, settings.runtime, settings.precision)):
                problems.append(problem)
        return problems
    try:
        entries, broken = scan_store()
    except Exception as exc:  # noqa: BLE001
        return [f"the model store cannot be read: {first_line(exc)}"]
    for bad in broken:  # never served (its family is unknowable): start without it, and say so
        logger.warning("model %s:%s is skipped: %s", bad.name, bad.version, bad.reason)
    for name, entry in latest_entries(entries).items():
        if entry_family(entry) in FAMILIES or name in FAMILIES:
            if (problem := check_entry(entry, settings.runtime, settings.precision)):
                problems.append(problem)
    return problems


def check_grpc_port(settings: Settings) -> list[str]:
    """A problem when ``MODEL_ZOO_GRPC_PORT`` is set and something already listens on it (empty: free)."""
    if not settings.grpc_port:
        return []
    host, port = settings.grpc_host, settings.grpc_port
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        return [f"MODEL_ZOO_GRPC_HOST={host!r} is not an address of this machine ({exc.strerror or exc})"]
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a TIME_WAIT leftover is no owner
            probe.bind(address)  # no SO_REUSEPORT: fails while anyone else holds the port
            probe.listen(1)
    except OSError as exc:
        return [f"MODEL_ZOO_GRPC_PORT={port}: cannot bind {host}:{port} for gRPC ({exc.strerror or exc}); "
                "another process listens there: stop it or choose another MODEL_ZOO_GRPC_PORT"]
    return []


def check_or_exit() -> None:
    """Raise ``PreflightError`` (exit status 1, one line per problem) unless the settings parse and
    every entry would load. Call it at import of the service module, before anything reads settings."""
    from service.config import ConfigError, settings

    try:
        current = settings()
    except ConfigError as exc:  # a malformed MODEL_ZOO_* variable: one line, not a 70-line traceback
        raise PreflightError([str(exc)]) from None
    if os.environ.get("MODEL_ZOO_SKIP_PREFLIGHT") == "1" or in_worker():
        return
    problems = check_grpc_port(current) + check(current)
    if problems:
        raise PreflightError(problems)  # SystemExit: its message goes to stderr, status 1


def main() -> int:
    try:
        check_or_exit()
    except PreflightError as exc:
        print(exc.args[0], file=sys.stderr)
        return 1
    print("model store OK: every served model loads")
    return 0


if __name__ == "__main__":
    sys.exit(main())
