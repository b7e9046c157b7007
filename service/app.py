"""The BentoML service: every stored model behind DESIGN.md's HTTP surface.

``bentoml serve service.app:ModelZoo``. Which models are served is data (service/control/manager.py):
every stored model of a known family at start-up, or exactly ``MODEL_ZOO_MODELS``, changed at run
time through Triton's model repository extension (``/v2/repository/...``). Each is served under its
store name at ``/models/{name}/classify|forecast`` (service/http/rest.py) and over the Open Inference
Protocol (service/http/oip.py). The family routes (``/classify_digit`` ..., service/http/aliases.py) answer for
the model stored under the family's own name; one whose model is not in the store answers 503 saying
how to add it. Models load and warm up in the background after
start-up; ``/readyz`` is 200 once every worker serves every start-up model.
"""

from __future__ import annotations

import logging

import bentoml
from starlette.applications import Starlette

from service import startup
from service.config import settings
from service.control.manager import ModelManager
from service.grpc import grpc_server
from service.http import balance, routes
from service.http.admission import AdmitWhileCurrent
from service.http.auth import BearerAuth
from service.http.bodies import SlowBodies
from service.http.json_errors import JsonErrors
from service.http.linger import LingeringClose
from service.http.origin import OriginGuard
from service.http.request_ids import RequestIds
from service.http.uploads import BodyLimit

logger = logging.getLogger("model_zoo.service")

STATE = startup.prepare_process(settings())  # preflight and the workers' shared state (service/startup.py)


class _ModelZoo:
    def __init__(self) -> None:
        self.models = ModelManager(settings(), STATE, bentoml.server_context.worker_index or 1)
        self.grpc = grpc_server(self.models, settings())  # None unless MODEL_ZOO_GRPC_PORT (service/grpc/)
        logging.getLogger("model_zoo").setLevel(logging.INFO)  # our load/provider lines next to BentoML's
        logger.info("model zoo worker %d: settings %s", self.models.worker, settings())

    @bentoml.on_startup
    async def _start_loading(self) -> None:
        self.models.start()  # background: /livez answers now, /readyz once every worker is warm
        if self.grpc is not None:
            await self.grpc.start()

    @bentoml.on_shutdown
    async def _stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()
        await self.models.stop()

    async def __is_ready__(self) -> bool:
        return self.models.is_ready() and (self.grpc is None or self.grpc.started)


# The family routes, per-model REST, the Open Inference Protocol, Triton's repository extension, the
# front page, the browser demo and the OpenAPI document of the whole surface; BentoML mounts it passively
# at /. No @bentoml.api: its wrapper costs each request more than a mounted route (service/http/aliases.py).
MODELS_APP = Starlette(routes=routes.mounted())  # after prepare_process: plugin families have their routes

ModelZoo = bentoml.service(
    name="model_zoo",
    traffic={"timeout": 120, "max_concurrency": 256},  # concurrent requests per worker; beyond: BentoML 429 JSON
    workers=settings().workers,  # each worker loads every served model; ORT threads = cores / workers
    metrics={"enabled": True},
    # Per-request middlewares that cost a measurable share of a tiny model's request (service/README.md,
    # "Per-request overhead"): off for the inference routes; a BentoML config file turns them back on.
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/classify_", "/forecast_", "/models/", "/v2/models/"]},
)(bentoml.asgi_app(MODELS_APP, path="/", name="models")(type("ModelZoo", (_ModelZoo,), {})))
MODELS_APP.state.service = ModelZoo  # its OpenAPI document (service/http/openapi.py)
# `bentoml build` packs the models the service starts with.
ModelZoo.models.extend(bentoml.models.BentoModel(tag) for tag in STATE.read_desired().models.values())

# Outermost first: while this worker's event loop is more than MODEL_ZOO_SHED_LAG_MS behind, an inference
# request gets 503 before anything else is done for it (service/http/admission.py); a worker holding more than its share of keep-alive connections asks the client to
# reconnect (service/http/balance.py); an answer sent before the body was read waits while a bounded rest
# of the body is read and discarded, so a client still sending gets it, not a reset (service/http/linger.py);
# a request a web page could have made on its own (a foreign Origin
# or Host, a form posted to model control) gets 403 (service/http/origin.py); an unauthenticated request
# is refused before its body is read (service/http/auth.py; off unless MODEL_ZOO_API_TOKEN is set), then
# bodies over the size cap get 413
# (counted as received); innermost, the router's plain-text 404/405 become JSON and its redirects relative.
ModelZoo.add_asgi_middleware(AdmitWhileCurrent, shed_lag_ms=settings().shed_lag_ms,
                             default_timeout_ms=settings().default_timeout_ms.default)
ModelZoo.add_asgi_middleware(RequestIds)  # X-Request-Id on every answer, Server-Timing on inference answers
ModelZoo.add_asgi_middleware(balance.Rebalance)
ModelZoo.add_asgi_middleware(LingeringClose)
ModelZoo.add_asgi_middleware(OriginGuard)
ModelZoo.add_asgi_middleware(BearerAuth)
ModelZoo.add_asgi_middleware(SlowBodies)  # a stalled body: 408; too many bodies at once from one address: 429
ModelZoo.add_asgi_middleware(BodyLimit)
ModelZoo.add_asgi_middleware(JsonErrors)
startup.adapt_server(ModelZoo, MODELS_APP, settings())
