"""What a process does when it imports the service, before BentoML serves from it.

BentoML 1.4's new-style services have no hook that runs before the workers start: ``bentoml serve``
imports the service module in the process that starts them (the arbiter), and each worker imports it
again before its uvicorn server is built. So service/app.py calls these two functions at import, and
nothing else runs there:

- ``prepare_process``: in every process, the families of plugin modules (``MODEL_ZOO_FAMILIES``,
  zoo/families.py) join the table before anything reads it; in the arbiter, the start-up check of the store (service/control/preflight.py)
  and the workers' shared state, a fresh directory removed at exit, with the start-up set published;
  in a worker, the state it inherited (``MODEL_ZOO_STATE_DIR``), the connection balance, and a watch on
  the arbiter: a worker whose arbiter is gone shuts down (service/control/parent.py).
- ``adapt_server``: BentoML's metrics labelled by route template (service/http/routes.py) and uvicorn's
  protocol under the header deadline, the drain signal and the connection count, through service/adapters.py.
"""

from __future__ import annotations

import atexit
import shutil
from typing import Any

from service import adapters
from service.config import Settings
from service.control.parent import exit_with_parent
from service.control.preflight import PreflightError, check_or_exit, in_worker
from service.control.repository import publish_initial
from service.control.shared_state import SharedState
from service.errors import InsufficientStorage
from service.http import balance
from service.http.admission import RefuseAtParse
from service.http.connections import HeaderDeadline, NamedParseErrors
from service.http.drain import DrainSignal
from service.http.routes import RouteLabels, route_templates
from zoo.families import load_plugins


def prepare_process(settings: Settings) -> SharedState:
    """Plugin families, preflight and the workers' shared state; returns the state this process uses."""
    load_plugins()  # before preflight reads the store and service/http/aliases.py declares the family routes
    # Before anything reads the store: a broken entry or a malformed MODEL_ZOO_* variable ends `bentoml
    # serve` with one line per problem (MODEL_ZOO_SKIP_PREFLIGHT=1 to start anyway).
    check_or_exit()
    if in_worker():
        import bentoml

        exit_with_parent()  # circus starts each worker in a session of its own: the arbiter's group is not its
        state = SharedState.from_env(create=False)
        balance.enable(state.root, settings.workers, bentoml.server_context.worker_index)
        return state
    state = SharedState.from_env(create=True)
    atexit.register(shutil.rmtree, state.root, ignore_errors=True)
    try:
        publish_initial(state, settings)
    except InsufficientStorage as exc:  # one line naming the cause, not a traceback
        raise PreflightError([exc.message]) from None
    return state


def adapt_server(service: Any, app: Any, settings: Settings) -> None:
    """Metrics by route template (bounded series); a connection that sends no complete request headers
    within ``MODEL_ZOO_HEADER_TIMEOUT_S`` is closed, each worker counts its connections, and the edge's
    refusals (service/http/admission.py) are answered as soon as a request's headers are parsed."""
    adapters.install_route_labels(RouteLabels(route_templates(service, app)))
    adapters.install_timeout_middleware()  # BentoML's leaves a live timer per answered request (service/adapters.py)
    adapters.install_http_protocol(HeaderDeadline, NamedParseErrors, RefuseAtParse, DrainSignal, balance.CountedConnections,
                                   header_timeout=settings.header_timeout_s)
