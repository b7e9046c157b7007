"""``/docs.json``: BentoML's OpenAPI document, plus every route it cannot see.

BentoML builds its document from ``@bentoml.api`` methods only (and from mounted FastAPI apps); the
family routes, the per-model REST routes, the Open Inference Protocol and Triton's repository extension
live in a Starlette app (service/http/routes.py ``mounted()``), so each of its routes is described here (a route
without a description fails tests/test_service_units.py's route-table check) and merged into the document
BentoML generates (its public ``Service.openapi_spec``; the service is the mounted app's
``state.service``). Served at ``/docs.json`` by that app,
which BentoML mounts before its own route of the same path; Swagger UI shows it at ``/docs``
(service/http/swagger.py). Its ``info`` is this service's (``info()``), not BentoML's.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import zoo
from zoo.families import FAMILIES

JSON = "application/json"
_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_NAME = {"name": "name", "in": "path", "required": True, "description": "the model's store name",
         "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}, "example": next(iter(FAMILIES))}
_VERSION = {"name": "version", "in": "path", "required": True, "description": "a store version (not 'latest')",
            "schema": {"type": "string"}}
_TENSOR = {
    "type": "object", "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"}, "datatype": {"type": "string", "example": "FP32"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array", "items": {}, "description": "row-major values; base64 strings for BYTES"},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer"}}},
    },
}
_INFER_REQUEST = {
    "type": "object", "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "items": _TENSOR},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"},
            "parameters": {"type": "object", "properties": {
                "classification": {"type": "integer", "minimum": 1, "description": "top-K 'score:index:label'"},
                "binary_data": {"type": "boolean"}}}}}},
        "parameters": {"type": "object", "properties": {
            "binary_data_output": {"type": "boolean"},
            "timeout": {"type": "integer", "minimum": 0, "description": (
                "deadline in microseconds, as Triton takes it (0: none): past it the answer is 504 and a "
                "request still queued is never computed")}}},
    },
}
_TIMEOUT = {"name": "Request-Timeout", "in": "header", "required": False, "schema": {"type": "string"},
            "example": "0.25", "description": (
                "how long the client will wait, in seconds (a positive decimal): past it the answer is 504 and a "
                "request still queued is never computed; a malformed value is a 400")}
_INFER_RESPONSE = {"type": "object", "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
    "outputs": {"type": "array", "items": _TENSOR}}}
_CLASSIFIED = {"type": "array", "items": {"type": "object", "properties": {
    "label": {"type": "string"}, "index": {"type": "integer"}, "score": {"type": "number"},
    "top_k": {"type": "array", "items": {"type": "object", "properties": {
        "label": {"type": "string"}, "index": {"type": "integer"}, "score": {"type": "number"}}}}}}}
_FORECAST_BODY = {"type": "object", "required": ["history", "steps"], "properties": {
    "history": {"type": "array", "items": {"type": "number"}, "example": [0.0, 0.199, 0.389, 0.565, 0.717]},
    "steps": {"type": "integer", "minimum": 1, "example": 5}}}
_INDEX_ENTRY = {"type": "object", "properties": {
    "name": {"type": "string"}, "version": {"type": "string"},
    "state": {"type": "string", "enum": ["READY", "LOADING", "UNAVAILABLE"]}, "reason": {"type": "string"}}}
_STATS = {"type": "object", "properties": {"model_stats": {"type": "array", "items": {"type": "object", "properties": {
    "name": {"type": "string"}, "version": {"type": "string"}, "last_inference": {"type": "integer"},
    "inference_count": {"type": "integer"}, "execution_count": {"type": "integer"},
    "inference_stats": {"type": "object"}, "batch_stats": {"type": "array", "items": {"type": "object"}}}}}}}


def _answers(ok: dict[str, Any], *errors: int) -> dict[str, Any]:
    out = {"200": {"description": "ok", "content": {JSON: {"schema": ok}}}}
    for status in errors:
        out[str(status)] = {"description": "error", "content": {JSON: {"schema": _ERROR}}}
    return out


def _op(method: str, tag: str, summary: str, params: list[dict], ok: dict[str, Any], *errors: int,
        body: tuple[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [tag], "summary": summary, "parameters": params,
                          "responses": _answers(ok, *errors)}
    if body is not None:
        op["requestBody"] = {"required": body[0] != JSON or "required" in body[1],
                             "content": {body[0]: {"schema": body[1]}}}
    return {method: op}


def paths() -> dict[str, dict[str, Any]]:
    """The OpenAPI path items of the routes BentoML does not list."""
    oip, repo, rest = "Open Inference Protocol", "Model repository (Triton)", "Models by name"
    ready = {"type": "object", "properties": {"ready": {"type": "boolean"}}}
    infer = _op("post", oip, "inference with tensors (JSON, or the binary tensor extension)", [_NAME],
                _INFER_RESPONSE, 400, 404, 413, 429, 503, 504, body=(JSON, _INFER_REQUEST))
    uploads = {"type": "object", "required": ["images"], "properties": {
        "images": {"type": "array", "items": {"type": "string", "format": "binary"}}}}
    forecast = {"type": "object", "properties": {"forecast": {"type": "array", "items": {"type": "number"}},
                                                 "warning": {"type": "string"}}}
    out = {
        f"/{family.route}": _op("post", "Families", f"{family.summary} (the model stored as {family.name!r})",
                                [_TIMEOUT], _CLASSIFIED if family.decoder == "images" else forecast,
                                *((400, 413, 415, 429, 503, 504) if family.decoder == "images" else (400, 503)),
                                body=("multipart/form-data", uploads) if family.decoder == "images" else (JSON, _FORECAST_BODY))
        for family in FAMILIES.values()
    }
    out |= {
        "/models/{name}/classify": _op("post", rest, "classify images with any served image model", [_NAME, _TIMEOUT],
                                       _CLASSIFIED, 400, 404, 413, 415, 429, 503, 504,
                                       body=("multipart/form-data", uploads)),
        "/models/{name}/forecast": _op("post", rest, "forecast with any served sequence model", [_NAME, _TIMEOUT],
                                       forecast, 400, 404, 503, body=(JSON, _FORECAST_BODY)),
        "/v2": _op("get", oip, "server metadata", [], {"type": "object"}),
        "/v2/health/live": _op("get", oip, "liveness", [], {"type": "object", "properties": {"live": {"type": "boolean"}}}),
        "/v2/health/ready": _op("get", oip, "readiness (400 while not ready)", [], ready, 400),
        "/v2/models/{name}": _op("get", oip, "model metadata", [_NAME], {"type": "object"}, 400, 404, 503),
        "/v2/models/{name}/ready": _op("get", oip, "model readiness (400 when not ready)", [_NAME], ready, 400, 404),
        "/v2/models/{name}/infer": infer,
        "/v2/models/{name}/versions/{version}": _op("get", oip, "metadata of one version", [_NAME, _VERSION],
                                                   {"type": "object"}, 400, 404, 503),
        "/v2/models/{name}/versions/{version}/ready": _op("get", oip, "readiness of one version", [_NAME, _VERSION],
                                                         ready, 400, 404),
        "/v2/models/{name}/versions/{version}/infer": {"post": {**infer["post"], "parameters": [_NAME, _VERSION]}},
        "/v2/repository/index": _op("post", repo, "every stored model version with its state and reason", [],
                                    {"type": "array", "items": _INDEX_ENTRY}, 400,
                                    body=(JSON, {"type": "object", "properties": {"ready": {"type": "boolean"}}})),
        "/v2/repository/models/{name}/load": _op(
            "post", repo, "serve a stored model on every worker (latest, or parameters.version)", [_NAME],
            {"type": "object"}, 400, 404, 503,
            body=(JSON, {"type": "object", "properties": {"parameters": {"type": "object", "properties": {
                "version": {"type": "string"}}}}})),
        "/v2/repository/models/{name}/unload": _op("post", repo, "stop serving a model after its in-flight requests",
                                                   [_NAME], {"type": "object"}, 400, 404, 503,
                                                   body=(JSON, {"type": "object"})),
        "/v2/models/stats": _op("get", oip, "Triton's statistics of every served model, summed over the workers",
                                [], _STATS),
        "/v2/models/{name}/stats": _op("get", oip, "Triton's statistics of one model", [_NAME], _STATS, 400, 404),
        "/v2/models/{name}/versions/{version}/stats": _op("get", oip, "Triton's statistics of one version",
                                                          [_NAME, _VERSION], _STATS, 400, 404),
    }
    return out


UNDOCUMENTED = {"/", "/ui", "/ui/", "/ui/{file}", "/docs", "/docs/{file}", "/docs.json", "/v2/"}  # pages, this document, a duplicate


def info() -> dict[str, Any]:
    """The document's ``info``: this service (BentoML's is its class name, version None and its Slack and
    Twitter badges)."""
    return {
        "title": "Model Zoo Serving",
        "version": zoo.__version__,
        "description": (
            "PyTorch model families (image classifiers, a sequence forecaster) exported to ONNX/TorchScript "
            "and served together. Each family's own route (`/classify_digit` ...) answers for the model stored "
            "under the family's name; `/models/{name}/classify|forecast` for any served model by store name; "
            "the Open Inference Protocol (`/v2`) with Triton's model repository extension loads and unloads "
            "models at run time. When the service has a token (MODEL_ZOO_API_TOKEN), every route but the "
            "health probes and the pages needs `Authorization: Bearer <token>`. The browser demo is at `/ui`."),
    }


def document(service: Any, routes: list[Any]) -> dict[str, Any]:
    """BentoML's document of ``service`` with every one of ``routes`` (the mounted app's) described."""
    described = paths()
    spec = service.openapi_spec.asdict()
    spec["info"] = info()
    spec.setdefault("paths", {}).update(
        {route.path: described[route.path] for route in routes if route.path not in UNDOCUMENTED})
    return spec


async def docs_json(request: Request) -> Response:
    app = request.app
    if getattr(app.state, "document", None) is None:
        app.state.document = document(app.state.service, app.routes)
    return JSONResponse(app.state.document)


ROUTES = [Route("/docs.json", docs_json, methods=["GET"])]
