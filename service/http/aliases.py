"""The family routes (``/classify_digit`` ... ``/forecast_sine``): one route per family of zoo/families.py,
answering for the model stored under the family's own name exactly as ``/models/{name}/{verb}`` does for
any model: the same handler (service/http/rest.py ``answer``), so the same parsing, caps, deadline
(``Request-Timeout``), answers and errors. A family whose model is not in the store answers 503 saying how
to add it.

They are routes of the app BentoML mounts (service/http/routes.py ``MOUNTED``), not ``@bentoml.api``
methods: BentoML's API wrapper costs a request more than the mounted route does (issue 31), and gives
nothing these routes use (they parse their own bodies). Their OpenAPI descriptions are service/http/openapi.py's.
"""

from __future__ import annotations

from typing import Any, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.http import rest
from zoo.families import FAMILIES, Family


def family_endpoint(family: Family) -> Callable[[Request], Any]:
    """``POST /<family.route>``: ``/models/<family.name>/<family.verb>`` under the family's own name."""

    async def endpoint(request: Request) -> Response:
        return await rest.answer(rest.models(), family.name, family.verb, request=request, alias=True)

    endpoint.__name__ = endpoint.__qualname__ = family.route
    endpoint.__doc__ = f"{family.summary} (the model stored as {family.name!r}; any model: /models/{{name}}/{family.verb})"
    return endpoint


def family_routes() -> list[Route]:
    """One route per family (plugin families included: built after start-up has loaded them)."""
    return [Route(f"/{family.route}", family_endpoint(family), methods=["POST"]) for family in FAMILIES.values()]
