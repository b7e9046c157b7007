"""Triton's statistics extension over the Open Inference Protocol's REST routes.

``GET /v2/models/stats`` (every served model), ``/v2/models/{name}/stats`` and
``/v2/models/{name}/versions/{version}/stats``: ``{"model_stats": [...]}`` with Triton's fields, summed
over every worker (service/core/stats.py ``model_statistics``, which gRPC's ``ModelStatistics`` calls
too). A model that is not served is a 404 naming it, a wrong version a 404, an invalid name a 400, as
for the other ``/v2/models`` routes; ``tritonclient``'s ``get_inference_statistics`` reads the answer.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.core.stats import model_statistics
from service.errors import ServiceError
from service.http.oip import _models
from service.http.responses import error_response


async def statistics(request: Request) -> Response:
    name, version = request.path_params.get("name"), request.path_params.get("version")
    try:
        models = _models()
        if name is None:
            pairs = sorted((n, served.version) for n, served in models.served.items())
        else:
            pairs = [(name, (await models.get(name, version)).version)]
        # reads every worker's metric files: off the event loop
        return JSONResponse({"model_stats": await asyncio.to_thread(model_statistics, pairs)})
    except ServiceError as exc:
        return error_response(exc)


# Before service/http/oip.py's routes: "/v2/models/stats" would otherwise be the metadata of a model "stats".
ROUTES = [
    Route("/v2/models/stats", statistics, methods=["GET"]),
    Route("/v2/models/{name}/stats", statistics, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/stats", statistics, methods=["GET"]),
]
