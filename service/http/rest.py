"""REST inference for every served model: ``POST /models/{name}/classify`` and ``/models/{name}/forecast``.

The same request and answer as the family routes (``/classify_digit`` ... ``/forecast_sine``,
service/http/aliases.py: this handler under the family's own name), for any
model the server serves, each with its own labels and preprocessing from its spec. Request path (the
served-model interface, service/core/interface.py): the body is parsed as the model's ``payload``
says (images: the form, with the caps of service/http/uploads.py) -> ``decode`` (a bad file gets its
own 4xx naming it) -> ``predict`` (image tensors join other requests in the model's adaptive batcher)
-> ``encode`` (softmax/top-k/labels, or the forecast).
"""

from __future__ import annotations

import math
from typing import Any, Awaitable, Callable

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from service.config import settings
from service.core import deadlines, stats, timing
from service.core.interface import ServedModel
from service.errors import BadRequest, NotFound, ServiceError
from service.http.responses import error_response, json_response
from service.http.uploads import Uploads, read_uploads


class ForecastBody(BaseModel):
    """``{"history": [float...], "steps": int}``."""

    history: list[float] = Field(description="observed values, oldest first (limits: the model's spec)",
                                 examples=[[round(math.sin(0.204 * i), 4) for i in range(20)]])
    steps: int = Field(description="how many future values to predict", examples=[10])


def parse_forecast(body: bytes) -> ForecastBody:
    """A forecast request body, or a ``BadRequest`` naming the field that is wrong."""
    try:
        # strict: "steps": true or "3" is a client's mistake, not 1 or 3 (an int still counts as a float)
        return ForecastBody.model_validate_json(body or b"{}", strict=True)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        raise BadRequest(f"invalid forecast request: {where}: {err.get('msg')} "
                         '(expected JSON {"history": [numbers...], "steps": integer})') from None


def models() -> Any:
    """The serving worker's model manager (service/control/manager.py)."""
    import bentoml

    return bentoml.get_current_service().models


async def _read_images(request: Request) -> Uploads:
    return await read_uploads(request, settings().max_images)


async def _read_history(request: Request) -> ForecastBody | ServiceError:
    try:
        return parse_forecast(await request.body())
    except BadRequest as problem:
        return problem  # the model's decode raises it, once the model is known


# A model's ``payload`` (zoo/families.py Decoder) -> how this edge parses the body of its route.
READERS: dict[str, Callable[[Request], Awaitable[Any]]] = {"images": _read_images, "history": _read_history}


def _wrong_verb(name: str, model: ServedModel, wanted: str) -> NotFound:
    return NotFound(f"model {name!r} is a {model.spec.family} model: it answers POST /models/{name}/{model.verb}, "
                    f"not /{wanted}")


async def answer(manager: Any, name: str, verb: str, request: Request, alias: bool = False) -> Response:
    """One REST inference: the body of ``request``, read only once the model is known. A
    ``Request-Timeout`` header (seconds) is the deadline. Its phases go into the request's timing record
    (``Server-Timing``, service/core/timing.py) and the model's statistics (service/core/stats.py)."""
    record, model = timing.request(), None
    try:
        deadline = deadlines.from_header(request.headers.get(deadlines.HEADER))
        async with manager.use(name, alias=alias) as model:
            if model.verb != verb:
                raise _wrong_verb(name, model, verb)
            record.begin()
            item = await model.decode(await READERS[model.payload](request))
            record.decoded(item)
            with deadlines.client_wait(deadline, request.is_disconnected):
                output = await model.predict(item)
            record.predicted()
            response = json_response(model.encode(item, output))
            record.encoded()
            stats.succeeded(model.name, record)
            return response
    except ServiceError as exc:
        if model is not None:
            stats.failed(model.name, record, stats.reason_of(type(exc)))
        return error_response(exc)
    except ClientDisconnect:  # gone, or cut off by BodyLimit, which has answered 413 already
        if model is not None:
            stats.failed(model.name, record, "client_disconnect")
        return Response(status_code=400)


async def classify_route(request: Request) -> Response:
    return await answer(models(), request.path_params["name"], "classify", request=request)


async def forecast_route(request: Request) -> Response:
    return await answer(models(), request.path_params["name"], "forecast", request=request)


ROUTES = [
    Route("/models/{name}/classify", classify_route, methods=["POST"]),
    Route("/models/{name}/forecast", forecast_route, methods=["POST"]),
]
