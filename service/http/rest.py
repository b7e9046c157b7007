"""REST inference for every served model: ``POST /models/{name}/classify`` and ``/models/{name}/forecast``.

The same request and answer as the family routes (``/classify_digit`` ... ``/forecast_sine``, which
service/app.py keeps as aliases for the model stored under the family's own name), for any
model the server serves, each with its own labels and preprocessing from its spec. Request path for
images: the form is parsed with the caps (service/http/uploads.py) -> each file is decoded and
preprocessed (a bad file gets its own 4xx naming it) -> the tensor joins other requests in the
model's adaptive batcher -> softmax/top-k/labels.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from service.config import settings
from service.core.served import Forecaster, ImageClassifier
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


def _zoo() -> Any:
    import bentoml

    return bentoml.get_current_service().zoo


def _wrong_task(name: str, model: Any, wanted: str) -> NotFound:
    have = "classify" if isinstance(model, ImageClassifier) else "forecast"
    return NotFound(f"model {name!r} is a {model.spec.family} model: it answers POST /models/{name}/{have}, "
                    f"not /{wanted}")


async def classify(zoo: Any, name: str, uploads: Uploads | None, request: Request | None = None,
                   alias: bool = False) -> Response:
    """Classify the uploads (or the form of ``request``, read only once the model is known)."""
    try:
        async with zoo.use(name, alias=alias) as model:
            if not isinstance(model, ImageClassifier):
                raise _wrong_task(name, model, "classify")
            if uploads is None:
                uploads = await read_uploads(request, settings().max_images)
            if uploads.error is not None:
                raise uploads.error
            return json_response(await model.classify(uploads.files))
    except ServiceError as exc:
        return error_response(exc)
    except ClientDisconnect:  # gone, or cut off by BodyLimit, which has answered 413 already
        return Response(status_code=400)


async def forecast(zoo: Any, name: str, body: ForecastBody | ServiceError | None, request: Request | None = None,
                   alias: bool = False) -> Response:
    try:
        async with zoo.use(name, alias=alias) as model:
            if not isinstance(model, Forecaster):
                raise _wrong_task(name, model, "forecast")
            if body is None:
                body = parse_forecast(await request.body())
            if isinstance(body, ServiceError):
                raise body
            return json_response(await asyncio.to_thread(model.answer, body.history, body.steps))
    except ServiceError as exc:
        return error_response(exc)
    except ClientDisconnect:  # as above
        return Response(status_code=400)


async def classify_route(request: Request) -> Response:
    return await classify(_zoo(), request.path_params["name"], None, request)


async def forecast_route(request: Request) -> Response:
    return await forecast(_zoo(), request.path_params["name"], None, request)


ROUTES = [
    Route("/models/{name}/classify", classify_route, methods=["POST"]),
    Route("/models/{name}/forecast", forecast_route, methods=["POST"]),
]
