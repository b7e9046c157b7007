"""The BentoML service: every model in the store behind DESIGN.md's HTTP surface.

``bentoml serve service.service:ModelZoo``. Model references sit at class scope
(``bentoml.models.BentoModel``) for the families present in the store, so ``bentoml build`` packs
them; a family missing from the store is not an import error: its endpoint answers 503 JSON saying
how to add it, and the rest works. Sessions are created and warmed up in the background after
start-up; ``/readyz`` is 200 once all of them are warm.

Request path for images: ``ImageUpload`` parses the form (caps, no 500s) -> the endpoint decodes and
preprocesses each file (a bad file gets its own 4xx naming it) -> the float tensor joins other
requests in the model's adaptive batcher (service/batching.py) -> softmax/top-k/labels.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import bentoml
from pydantic import Field, ValidationError
from starlette.requests import ClientDisconnect

from service import connections, metrics_labels
from service.auth import BearerAuth
from service.errors import BadRequest, ServiceError, error_response, json_response
from service.json_errors import JsonErrors
from service.models import Forecaster, ImageClassifier
from service.oip import oip_app
from service.preflight import check_or_exit
from service.registry import Zoo, store_entry
from service.uploads import BodyLimit, ImageUpload, Uploads, settings

logger = logging.getLogger("model_zoo.service")

# Before the class body reads the store: a broken entry (missing/corrupt graph, wrong family) or a
# malformed MODEL_ZOO_* variable ends `bentoml serve` with one line per problem instead of a server
# that stays unready forever (service/preflight.py; MODEL_ZOO_SKIP_PREFLIGHT=1 to start anyway).
check_or_exit()


def model_ref(name: str) -> bentoml.models.BentoModel | None:
    """A class-scope reference for ``bentoml build``, only for models present (and enabled) now."""
    if name not in settings().models or store_entry(name) is None:
        return None
    return bentoml.models.BentoModel(f"{name}:latest")


class ForecastRequest(bentoml.IODescriptor):
    """``{"history": [float...], "steps": int}``; a malformed body becomes a 400 naming the field."""

    history: list[float] = Field(description="observed values, oldest first (limits: the model's spec)",
                                 examples=[[round(math.sin(0.2 * i), 4) for i in range(20)]])
    steps: int = Field(description="how many future values to predict", examples=[10])

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> "ForecastRequest":
        try:
            body = await request.body()
        except ClientDisconnect:  # gone, or cut off by BodyLimit, which has answered 413 already
            body = b""
        try:
            # strict: "steps": true or "3" is a client's mistake, not 1 or 3 (an int still counts as a float)
            return cls.model_validate_json(body or b"{}", strict=True)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            problem = BadRequest(f"invalid forecast request: {where}: {err.get('msg')} "
                                 '(expected JSON {"history": [numbers...], "steps": integer})')
            return cls.model_construct(history=problem, steps=0)  # the endpoint answers with it


@bentoml.service(
    name="model_zoo",
    traffic={"timeout": 120, "max_concurrency": 256},  # concurrent requests per worker; beyond: BentoML 429 JSON
    workers=1,  # one process owns the cores; ORT's intra-op threads use them (MODEL_ZOO_THREADS)
    metrics={"enabled": True},
    # Per-request middlewares measured at c=32 on /classify_digit (tiny model: HTTP dominates): the
    # access log line and OpenTelemetry's span bookkeeping (a no-op span without an exporter, still
    # ~15% of the worker's CPU). Off for the inference routes by default; a BentoML config file can
    # turn them back on (docs in service/README.md). /metrics is unaffected.
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": ["/classify_", "/forecast_", "/v2/models/"]},
)
@bentoml.asgi_app(oip_app, path="/", name="oip")  # routes carry /v2; PassiveMount claims only those
class ModelZoo:
    mnist_mlp = model_ref("mnist-mlp")
    cifar10_resnet18 = model_ref("cifar10-resnet18")
    transfer_resnet18 = model_ref("transfer-resnet18")
    sine_rnn = model_ref("sine-rnn")

    def __init__(self) -> None:
        refs = {"mnist-mlp": self.mnist_mlp, "cifar10-resnet18": self.cifar10_resnet18,
                "transfer-resnet18": self.transfer_resnet18, "sine-rnn": self.sine_rnn}
        # attribute access on a BentoModel reference resolves it to the stored model (its path, metadata)
        stored = {name: ref for name, ref in refs.items() if ref is not None}
        self.zoo = Zoo(settings(), stored)
        # BentoML looks an endpoint up on this instance for every request, and its descriptor
        # (_bentoml_sdk APIMethod.__get__) rebuilds the method's wrapper with inspect.signature each
        # time: ~4% of the worker's CPU at 32 concurrent /classify_digit clients. Resolved once here
        # (an instance attribute wins over that non-data descriptor); the wrapper is the same one.
        for api in ModelZoo.apis:  # the bentoml.Service built from this class: every @bentoml.api
            self.__dict__[api] = getattr(self, api)
        logging.getLogger("model_zoo").setLevel(logging.INFO)  # our load/provider lines next to BentoML's
        logger.info("model zoo: %s in the store; settings %s", ", ".join(stored) or "no models", settings())

    @bentoml.on_startup
    async def _start_loading(self) -> None:
        self.zoo.start()  # background: /livez answers now, /readyz once every model is warm

    @bentoml.on_shutdown
    async def _stop(self) -> None:
        await self.zoo.stop()

    async def __is_ready__(self) -> bool:
        return self.zoo.is_ready()

    async def _classify(self, name: str, images: Uploads) -> Any:
        try:
            model = self.zoo.get(name)  # a missing model's 503 says how to add it, whatever was sent
            if images.error is not None:
                raise images.error
            assert isinstance(model, ImageClassifier)
            return json_response(await model.classify(images.files))  # no per-request schema/pydantic
        except ServiceError as exc:
            return error_response(exc)

    @bentoml.api(input_spec=ImageUpload)
    async def classify_digit(self, images: Uploads) -> list[dict[str, Any]]:
        """MNIST digit classifier: one result per uploaded image, in upload order."""
        return await self._classify("mnist-mlp", images)

    @bentoml.api(input_spec=ImageUpload)
    async def classify_cifar10(self, images: Uploads) -> list[dict[str, Any]]:
        """CIFAR-10 classifier (ResNet-18): one result per uploaded image."""
        return await self._classify("cifar10-resnet18", images)

    @bentoml.api(input_spec=ImageUpload)
    async def classify_image(self, images: Uploads) -> list[dict[str, Any]]:
        """Transfer-learned classifier with its dataset's class names: one result per uploaded image."""
        return await self._classify("transfer-resnet18", images)

    @bentoml.api(input_spec=ForecastRequest)
    async def forecast_sine(self, history: list[float], steps: int) -> dict[str, list[float]]:
        """Autoregressive forecast of the next ``steps`` values after ``history``."""
        try:
            model = self.zoo.get("sine-rnn")
            if isinstance(history, ServiceError):
                raise history
            assert isinstance(model, Forecaster)
            return json_response({"forecast": await anyio.to_thread.run_sync(model.forecast, history, steps)})
        except ServiceError as exc:
            return error_response(exc)


# Outermost first: an unauthenticated request is refused before its body is read (service/auth.py;
# off unless MODEL_ZOO_API_TOKEN is set), then bodies over the size cap get 413 (counted as received);
# innermost, the router's plain-text 404/405 become JSON and its redirects relative.
ModelZoo.add_asgi_middleware(BearerAuth)
ModelZoo.add_asgi_middleware(BodyLimit)
ModelZoo.add_asgi_middleware(JsonErrors)
# BentoML's metrics label requests by route template, not raw path (bounded series; service/metrics_labels.py),
# and a connection that sends no complete request headers is closed (service/connections.py).
metrics_labels.install(metrics_labels.route_templates(ModelZoo, oip_app))
connections.install(settings().header_timeout_s)


