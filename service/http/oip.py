"""Open Inference Protocol (KServe v2 REST) for every served model, as an ASGI app BentoML mounts.

Routes: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``GET /v2/models/{name}`` (metadata),
``/v2/models/{name}/ready``, ``POST /v2/models/{name}/infer`` (also under ``/versions/{v}``, where ``v``
is a store version: any other is a 404, never the served version by accident), and Triton's model
repository extension: ``POST /v2/repository/index``, ``/v2/repository/models/{name}/load`` and
``.../unload`` (service/control/manager.py does the work, on every worker).
Image models take either ``input`` (FP32, the preprocessed tensor the model expects) or ``images``
(BYTES, one encoded image file per element, preprocessed here as the spec says) and return
``logits`` (FP32). An output requested with ``"parameters": {"classification": K}`` comes back as
BYTES ``(N, K)`` strings ``"score:index:label"`` (score = softmax probability, as on /classify_*).
The forecaster exposes its step graph: ``x`` (N, T, 1), ``h`` [, ``c``] -> ``y``, ``h_out`` [, ``c_out``];
omitted states start at zero. Errors: ``{"error": "..."}`` with 400 or 404 (503 while loading or
overloaded, so clients retry; 403 from load and unload with ``MODEL_ZOO_MODEL_CONTROL=0``). Health and model readiness follow the spec: 200 true, 400 false.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.config import settings
from service.core import deadlines, limits, stats, timing
from service.core.interface import ServedModel
from service.errors import (
    BadRequest,
    Forbidden,
    InvalidModelName,
    ModelUnavailable,
    NotInStore,
    ServiceError,
)
from service.http.oip_codec import (
    HEADER_LENGTH,
    InferRequest,
    encode_response,
    parse_infer,
)
from service.http.drain import process_drain
from service.http.responses import error_response
from zoo.families import FAMILIES

EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "statistics"]


def _models() -> Any:
    import bentoml

    service = bentoml.get_current_service()
    if service is None:
        raise ModelUnavailable("the service is starting; retry shortly")
    return service.models


def model_control() -> None:
    """Load and unload answer only while model control is on (service/config.py says why it is by default)."""
    if not settings().model_control:
        raise Forbidden("model control is off (MODEL_ZOO_MODEL_CONTROL=0): the served models are fixed at start-up "
                        "(MODEL_ZOO_MODELS); restart with MODEL_ZOO_MODEL_CONTROL=1 to load and unload at run time")


def _version(request: Request) -> str | None:
    return request.path_params.get("version")


def metadata(name: str, model: ServedModel) -> dict[str, Any]:
    s = model.session
    platform = "onnxruntime_onnx" if s.runtime == "onnx" else "pytorch_torchscript"
    inputs, outputs = model.tensor_metadata()
    return {"name": name, "versions": [model.version], "platform": platform, "inputs": inputs, "outputs": outputs,
            "parameters": {"family": model.spec.family, "artifact": s.artifact, "provider": s.provider,
                           "panel": _panel(model.spec.family), "spec": model.spec.to_dict()}}


def _panel(family: str) -> str | None:
    """The browser demo's input panel for the family (zoo/families.py): digit, photo or forecast."""
    known = FAMILIES.get(family)
    return known.panel if known is not None else None


async def server_metadata(_: Request) -> Response:
    import bentoml

    return JSONResponse({"name": "model_zoo", "version": bentoml.__version__, "extensions": EXTENSIONS})


async def live(_: Request) -> Response:
    return JSONResponse({"live": True})


async def ready(_: Request) -> Response:
    try:
        ok = _models().is_ready()
    except ServiceError:
        ok = False
    return JSONResponse({"ready": ok}, status_code=200 if ok else 400)


async def model_metadata(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        return JSONResponse(metadata(name, await _models().get(name, _version(request))))
    except ServiceError as exc:
        return error_response(exc)


async def model_ready(request: Request) -> Response:
    name = request.path_params["name"]
    try:
        await _models().get(name, _version(request))
    except (NotInStore, InvalidModelName) as exc:  # the repository has no such model (or version)
        return error_response(exc)
    except ServiceError:  # loading, failed or not loaded: the model exists and is not ready
        return JSONResponse({"name": name, "ready": False}, status_code=400)
    return JSONResponse({"name": name, "ready": True})


def output_tensors(model: ServedModel, req: InferRequest,
                   results: dict[str, np.ndarray]) -> list[tuple[dict[str, Any], Any, bool]]:
    """The requested outputs (all when none is named), as (metadata, values, binary?); an output with
    ``classification: K`` becomes BYTES ``"score:index:label"`` strings. gRPC answers with these too."""
    binary_default = bool(req.parameters.get("binary_data_output", False))
    wanted = req.outputs or [{"name": n} for n in results]
    out = []
    for o in wanted:
        name, params = o["name"], o.get("parameters") or {}
        if name not in results:
            raise BadRequest(f"unknown output {name!r}; this model returns {sorted(results)}")
        binary = bool(params.get("binary_data", binary_default))
        value = results[name]
        k = params.get("classification")
        if k is not None:
            rows = model.classification(name, value, k)  # 400 from a model without the extension
            k = len(rows[0]) if rows else k  # at most the model's classes
            strings = [f"{e['score']:.6f}:{e['index']}:{e['label']}".encode() for row in rows for e in row]
            out.append(({"name": name, "datatype": "BYTES", "shape": [len(rows), k]}, strings, binary))
        else:
            value = np.asarray(value, dtype=np.float32)
            out.append(({"name": name, "datatype": "FP32", "shape": list(value.shape)}, value, binary))
    return out


async def infer(request: Request) -> Response:
    name, start = request.path_params["name"], time.monotonic()
    record, model = timing.request(), None  # the phases: service/core/timing.py
    try:
        async with _models().use(name, _version(request)) as model:
            record.begin()
            raw, framing = await request.body(), request.headers.get(HEADER_LENGTH)
            # a large JSON body takes the parser a good part of a second: not on the event loop
            big = len(raw) > limits.OFF_LOOP_BYTES
            req = await asyncio.to_thread(parse_infer, raw, framing) if big else parse_infer(raw, framing)
            deadline = deadlines.from_oip(req.parameters, start)  # Triton's parameters.timeout, microseconds
            feeds = await model.decode_tensors(req)
            record.decoded(feeds)
            with deadlines.client_wait(deadline, request.is_disconnected):
                results = await model.predict_tensors(feeds)
            record.predicted()
            header: dict[str, Any] = {"model_name": name, "model_version": model.version}
            if req.id is not None:
                header["id"] = req.id

            def encode() -> tuple[bytes, dict[str, str]]:
                return encode_response(header, output_tensors(model, req, results))

            large = sum(v.size for v in results.values()) > limits.OFF_LOOP_VALUES
            body, headers = await asyncio.to_thread(encode) if large else encode()  # the loop keeps answering
            record.encoded()
            stats.succeeded(model.name, record)
            return Response(body, headers=headers)
    except ServiceError as exc:
        if model is not None:
            stats.failed(model.name, record, stats.reason_of(type(exc)))
        return error_response(exc)
    except ClientDisconnect:  # gone, or cut off by BodyLimit, which has answered 413 already
        if model is not None:
            stats.failed(model.name, record, "client_disconnect")
        return Response(status_code=400)


async def _json_object(request: Request) -> dict[str, Any]:
    """A repository request body: empty or a JSON object (Triton sends ``{"parameters": {...}}``)."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest("request body must be a JSON object") from None
    if not isinstance(body, dict):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    return body


async def repository_index(request: Request) -> Response:
    """Triton: every model the store holds, ``[{"name", "version", "state", "reason"}]``."""
    try:
        body = await _json_object(request)
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise BadRequest(f"'ready' must be true or false, got {ready!r}")
        return JSONResponse(await asyncio.to_thread(_models().repository.index, ready))
    except ServiceError as exc:
        return error_response(exc)
    except ClientDisconnect:  # as in infer
        return Response(status_code=400)


async def repository_load(request: Request) -> Response:
    """Triton: load ``name`` (the latest stored version, or ``{"parameters": {"version": V}}``), warm it
    up on every worker, then answer 200."""
    name = request.path_params["name"]
    try:
        model_control()
        params = (await _json_object(request)).get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest("'parameters' must be a JSON object")
        unsupported = sorted(k for k in params if k != "version")
        if unsupported:  # Triton's config / file: overrides describe its own model formats
            raise BadRequest(f"unsupported load parameter(s) {unsupported}: models come from the model store "
                             "as exported (python -m export); only 'version' may be given")
        version = params.get("version")
        if version is not None and not isinstance(version, str):
            raise BadRequest(f"'version' must be a string, got {version!r}")
        tag = await process_drain().until(_models().repository.load(name, version), changed("load", name))  # SIGTERM: 503 at once
        return JSONResponse({"name": name, "version": tag.split(":", 1)[1], "state": "READY"})
    except ServiceError as exc:
        return error_response(exc)
    except ClientDisconnect:
        return Response(status_code=400)


def changed(what: str, name: str) -> str:
    return (f"the {what} of model {name!r} was requested but not confirmed on every worker; "
            "POST /v2/repository/index on a running server shows its state")


async def repository_unload(request: Request) -> Response:
    """Triton: stop serving ``name`` on every worker once its in-flight requests are answered."""
    name = request.path_params["name"]
    try:
        model_control()
        await _json_object(request)  # Triton's unload_dependents parameter: nothing depends on a model here
        await process_drain().until(_models().repository.unload(name), changed("unload", name))
        return JSONResponse({"name": name, "state": "UNAVAILABLE"})
    except ServiceError as exc:
        return error_response(exc)
    except ClientDisconnect:
        return Response(status_code=400)


ROUTES = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/", server_metadata, methods=["GET"]),
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    Route("/v2/models/{name}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
    Route("/v2/repository/index", repository_index, methods=["POST"]),
    Route("/v2/repository/models/{name}/load", repository_load, methods=["POST"]),
    Route("/v2/repository/models/{name}/unload", repository_unload, methods=["POST"]),
]
oip_app = Starlette(routes=ROUTES)
