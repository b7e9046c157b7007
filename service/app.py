"""The BentoML service: every stored model behind DESIGN.md's HTTP surface.

``bentoml serve service.app:ModelZoo``. Which models are served is data (service/control/manager.py):
every stored model of a known family at start-up, or exactly ``MODEL_ZOO_MODELS``, changed at run
time through Triton's model repository extension (``/v2/repository/...``). Each is served under its
store name at ``/models/{name}/classify|forecast`` (service/http/rest.py) and over the Open Inference
Protocol (service/http/oip.py). The family routes (``/classify_digit`` ...), made from the family registry
(zoo/families.py), answer for the model stored under the family's own name; one whose model is
not in the store answers 503 saying how to add it. Models load and warm up in the background after
start-up; ``/readyz`` is 200 once every worker serves every start-up model.
"""

from __future__ import annotations

import atexit
import logging
import shutil
from typing import Any

import bentoml
from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect

from service.adapters import bind_api_methods, input_as_parsed
from service.config import settings
from service.control.manager import Zoo, publish_initial
from service.control.preflight import check_or_exit, in_worker
from service.control.shared_state import SharedState
from service.errors import BadRequest, ServiceError
from service.http import balance, connections, openapi, pages, rest, routes
from service.http.auth import BearerAuth
from service.http.json_errors import JsonErrors
from service.http.oip import ROUTES as OIP_ROUTES
from service.http.uploads import BodyLimit, ImageUpload, Uploads
from zoo.families import FAMILIES, Family, load_plugins

logger = logging.getLogger("model_zoo.service")

# Families registered by plugin modules ($MODEL_ZOO_FAMILIES, zoo/families.py) join the table before
# preflight reads the store and before the alias routes below are declared.
load_plugins()

# Before anything reads the store: a broken entry or a malformed MODEL_ZOO_* variable ends
# `bentoml serve` with one line per problem (service/control/preflight.py; MODEL_ZOO_SKIP_PREFLIGHT=1 to start anyway).
check_or_exit()
# The process that starts the workers makes their shared state and publishes the start-up set;
# each worker inherits MODEL_ZOO_STATE_DIR and reads it (service/control/shared_state.py).
if in_worker():
    STATE = SharedState.from_env(create=False)
    balance.enable(STATE.root, settings().workers, bentoml.server_context.worker_index)
else:
    STATE = SharedState.from_env(create=True)
    atexit.register(shutil.rmtree, STATE.root, ignore_errors=True)
    publish_initial(STATE, settings())


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
    """The BentoML API ``/<family.route>``: the model stored under the family's own name."""
    if family.decoder == "images":
        async def endpoint(self: Any, images: Uploads) -> list[dict[str, Any]]:
            return await rest.classify(self.zoo, family.name, images, alias=True)
        spec: type = ImageUpload
    else:
        async def endpoint(self: Any, history: list[float], steps: int) -> dict[str, list[float]]:
            body = history if isinstance(history, ServiceError) else rest.ForecastBody.model_construct(
                history=history, steps=steps)
            return await rest.forecast(self.zoo, family.name, body, alias=True)
        spec = ForecastRequest
    endpoint.__name__ = endpoint.__qualname__ = family.route
    endpoint.__doc__ = f"{family.summary} (the model stored as {family.name!r}; any model: /models/{{name}}/{family.verb})"
    return bentoml.api(input_spec=spec)(endpoint)


class _ModelZoo:
    def __init__(self) -> None:
        self.zoo = Zoo(settings(), STATE, bentoml.server_context.worker_index or 1)
        bind_api_methods(self, ModelZoo.apis)  # the bentoml.Service built from this class: every @bentoml.api
        logging.getLogger("model_zoo").setLevel(logging.INFO)  # our load/provider lines next to BentoML's
        logger.info("model zoo worker %d: settings %s", self.zoo.worker, settings())

    @bentoml.on_startup
    async def _start_loading(self) -> None:
        self.zoo.start()  # background: /livez answers now, /readyz once every worker is warm

    @bentoml.on_shutdown
    async def _stop(self) -> None:
        await self.zoo.stop()

    async def __is_ready__(self) -> bool:
        return self.zoo.is_ready()


for _family in FAMILIES.values():
    setattr(_ModelZoo, _family.route, family_route(_family))
# Per-model REST, the Open Inference Protocol, Triton's repository extension (routes BentoML's API
# decorators cannot express: a model name in the path), the front page, the browser demo and the
# OpenAPI document of the whole surface; BentoML mounts it passively at /.
MODELS_APP = Starlette(routes=[*OIP_ROUTES, *rest.ROUTES, *pages.ROUTES, *openapi.ROUTES])

ModelZoo = bentoml.service(
    name="model_zoo",
    traffic={"timeout": 120, "max_concurrency": 256},  # concurrent requests per worker; beyond: BentoML 429 JSON
    workers=settings().workers,  # each worker loads every served model; ORT threads = cores / workers
    metrics={"enabled": True},
    # Per-request middlewares that cost a measurable share of a tiny model's request (service/README.md,
    # "Per-request overhead"): off for the inference routes; a BentoML config file turns them back on.
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/classify_", "/forecast_", "/models/", "/v2/models/"]},
)(bentoml.asgi_app(MODELS_APP, path="/", name="models")(_ModelZoo))
# `bentoml build` packs the models the service starts with.
ModelZoo.models.extend(bentoml.models.BentoModel(tag) for tag in STATE.read_desired().models.values())

# Outermost first: a worker holding more than its share of keep-alive connections asks the client to
# reconnect (service/http/balance.py); an unauthenticated request is refused before its body is read (service/http/auth.py;
# off unless MODEL_ZOO_API_TOKEN is set), then bodies over the size cap get 413 (counted as received);
# innermost, the router's plain-text 404/405 become JSON and its redirects relative.
ModelZoo.add_asgi_middleware(balance.Rebalance)
ModelZoo.add_asgi_middleware(BearerAuth)
ModelZoo.add_asgi_middleware(BodyLimit)
ModelZoo.add_asgi_middleware(JsonErrors)
# BentoML's metrics label requests by route template, not raw path (bounded series; service/http/routes.py),
# and a connection that sends no complete request headers is closed (service/http/connections.py).
routes.install(routes.route_templates(ModelZoo, MODELS_APP))
connections.install(settings().header_timeout_s)
