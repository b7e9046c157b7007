"""The family routes (``/classify_digit`` ... ``/forecast_sine``): one BentoML API per family of
zoo/families.py, answering for the model stored under the family's own name, as
``/models/{name}/{verb}`` does for any model (service/http/rest.py). A family whose model is not in the
store answers 503 saying how to add it."""

from __future__ import annotations

from typing import Any

import bentoml
from pydantic import Field
from starlette.requests import ClientDisconnect

from service.adapters import input_as_parsed
from service.errors import BadRequest, ServiceError
from service.http import rest
from service.http.uploads import ImageUpload, Uploads
from zoo.families import FAMILIES, Family


class ForecastRequest(bentoml.IODescriptor):
    """``{"history": [float...], "steps": int}``; a malformed body becomes a 400 naming the field."""

    history: list[float] = Field(description=rest.ForecastBody.model_fields["history"].description,
                                 examples=rest.ForecastBody.model_fields["history"].examples)
    steps: int = Field(description="how many future values to predict", examples=[10])

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> "ForecastRequest":
        try:
            body = rest.parse_forecast(await request.body())
        except ClientDisconnect:  # gone, or cut off by BodyLimit, which has answered 413 already
            return input_as_parsed(cls, history=BadRequest("the request body was cut off"), steps=0)
        except BadRequest as problem:
            return input_as_parsed(cls, history=problem, steps=0)  # the endpoint answers with it
        return input_as_parsed(cls, history=body.history, steps=body.steps)


def family_route(family: Family) -> Any:
    """The BentoML API ``/<family.route>`` (a method of the service: ``self.models`` serves the models)."""
    if family.decoder == "images":
        async def endpoint(self: Any, images: Uploads) -> list[dict[str, Any]]:
            return await rest.answer(self.models, family.name, family.verb, images, alias=True)
        spec: type = ImageUpload
    else:
        async def endpoint(self: Any, history: list[float], steps: int) -> dict[str, list[float]]:
            body = history if isinstance(history, ServiceError) else rest.ForecastBody.model_construct(
                history=history, steps=steps)
            return await rest.answer(self.models, family.name, family.verb, body, alias=True)
        spec = ForecastRequest
    endpoint.__name__ = endpoint.__qualname__ = family.route
    endpoint.__doc__ = f"{family.summary} (the model stored as {family.name!r}; any model: /models/{{name}}/{family.verb})"
    return bentoml.api(input_spec=spec)(endpoint)


def family_routes() -> dict[str, Any]:
    """Method name -> BentoML API, one per family."""
    return {family.route: family_route(family) for family in FAMILIES.values()}
