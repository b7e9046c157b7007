"""The service's gRPC port (KServe v2 / Triton ``inference.GRPCInferenceService``) from Python, through
NVIDIA's ``tritonclient.grpc`` (its aio client): ``GrpcZooClient``, with the same methods and answers as
``AsyncZooClient`` for what both protocols carry::

    async with GrpcZooClient("localhost:8001") as zoo:
        await zoo.health()                                   # live, ready, every model with its metadata
        await zoo.model_metadata("mnist-mlp")                # {"name", "versions", "platform", "inputs", "outputs"}
        (await zoo.infer("mnist-mlp", {"input": x}))["logits"]
        await zoo.classify("mnist-mlp", ["7.png"])           # images as BYTES + the classification extension

A failed call raises ``ZooError`` whose ``status`` is the HTTP status the gRPC code stands for (so
callers treat both protocols alike) and whose message is the server's. ``zoo health`` and ``zoo
classify`` use it with ``--protocol grpc``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Mapping, Sequence

import numpy as np

from clients.client import _health_report
from clients.media import to_uploads
from clients.oip import InferResult, datatype_of
from clients.transport import ZooError, default_token

GRPC_URL_ENV = "ZOO_GRPC_URL"
DEFAULT_GRPC_URL = "localhost:8001"  # the port docs/deployment.md gives MODEL_ZOO_GRPC_PORT
TOP_K = 5  # as the REST answers' "top_k"
# the HTTP status a gRPC code stands for (the inverse of service/grpc/server.py's STATUS)
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
               "ABORTED": 409, "RESOURCE_EXHAUSTED": 413, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}


def default_grpc_url(url: str | None = None) -> str:
    """host:port of the gRPC server: the argument, else $ZOO_GRPC_URL, else localhost:8001."""
    chosen = (url or os.environ.get(GRPC_URL_ENV) or DEFAULT_GRPC_URL).strip()
    chosen = chosen.removeprefix("grpc://")
    if "://" in chosen or ":" not in chosen:
        raise ValueError(f"the gRPC address must be HOST:PORT (e.g. {DEFAULT_GRPC_URL}), got {chosen!r}")
    return chosen


def add_protocol(p: argparse.ArgumentParser) -> None:
    """``--protocol grpc``: the service's gRPC port (clients/grpc_client.py) instead of REST."""
    p.add_argument("--protocol", choices=("http", "grpc"), default="http",
                   help="http (REST, --url) or grpc (KServe v2 gRPC, --grpc-url)")
    p.add_argument("--grpc-url", default=None,
                   help=f"HOST:PORT of the gRPC server (default ${GRPC_URL_ENV}, else {DEFAULT_GRPC_URL})")


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """protobuf's JSON of ModelMetadataResponse, with shapes as integers (int64 is a JSON string there)."""
    for side in ("inputs", "outputs"):
        meta[side] = [{**t, "shape": [int(d) for d in t.get("shape", [])]} for t in meta.get(side, [])]
    return meta


class GrpcZooClient:
    """Async client of the gRPC port; one channel per instance (use it as an async context manager)."""

    def __init__(self, url: str | None = None, timeout: float = 60.0, token: str | None = None) -> None:
        from tritonclient.grpc import aio as grpcclient  # imported here: only the gRPC commands need it

        self._lib = grpcclient
        self.url = default_grpc_url(url)
        self.timeout = timeout
        token = default_token(token)
        self.headers = {"authorization": f"Bearer {token}"} if token else None
        self._client = grpcclient.InferenceServerClient(self.url)

    async def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return await method(*args, headers=self.headers, client_timeout=self.timeout, **kwargs)
        except InferenceServerException as exc:
            code = (exc.status() or "").removeprefix("StatusCode.")
            status = HTTP_STATUS.get(code)
            if code == "UNAVAILABLE" and "connect" in (exc.message() or "").lower():
                status = None  # no answer came: nothing listens there
            raise ZooError(status, f"gRPC {code or 'error'}: {exc.message()}", url=f"{self.url} {what}") from None

    async def live(self) -> bool:
        return await self._call("ServerLive", self._client.is_server_live)

    async def ready(self) -> bool:
        return await self._call("ServerReady", self._client.is_server_ready)

    async def models(self, ready_only: bool = False) -> list[dict[str, Any]]:
        index = await self._call("RepositoryIndex", self._client.get_model_repository_index, as_json=True)
        return [m for m in index.get("models", []) if not ready_only or m.get("state") == "READY"]

    async def model_metadata(self, model: str) -> dict[str, Any]:
        return _metadata(await self._call("ModelMetadata", self._client.get_model_metadata, model, as_json=True))

    async def health(self) -> dict[str, Any]:
        """As ``AsyncZooClient.health``: liveness, readiness, every model with its metadata."""
        live = await self.live()
        ready = await self.ready() if live else False
        index = await self.models() if live else []
        metadata = {e["name"]: await self.model_metadata(e["name"]) for e in index if e["state"] == "READY"}
        return _health_report(f"grpc://{self.url}", live, ready, index, metadata)

    async def infer(self, model: str, inputs: Mapping[str, Any], outputs: Sequence[str | Mapping[str, Any]] | None = None,
                    version: str = "") -> InferResult:
        """ModelInfer with every input raw; ``outputs`` names (or ``{"name", "class_count"}``); numpy out."""
        tensors = []
        for name, value in inputs.items():
            array = np.asarray(value, dtype=np.object_ if isinstance(value, list) and value and
                               isinstance(value[0], bytes) else None)  # encoded files: BYTES, not numpy's S
            datatype = datatype_of(array)
            tensor = self._lib.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        wanted = None
        if outputs is not None:
            wanted = [self._lib.InferRequestedOutput(o) if isinstance(o, str) else
                      self._lib.InferRequestedOutput(o["name"], class_count=int(o.get("class_count", 0)))
                      for o in outputs]
        result = await self._call("ModelInfer", self._client.infer, model, tensors, outputs=wanted, model_version=version)
        response = result.get_response()
        return InferResult(response.model_name, {o.name: result.as_numpy(o.name) for o in response.outputs},
                           response.model_version or None, response.id or None)

    async def classify(self, model: str, images: Any) -> list[dict[str, Any]]:
        """As REST's classify: per image ``{"label", "index", "score", "top_k"}`` (encoded files sent as BYTES)."""
        files = [u.data for u in to_uploads(images)]
        result = await self.infer(model, {"images": files}, outputs=[{"name": "logits", "class_count": TOP_K}])
        answers = []
        for row in result["logits"]:
            top = []
            for entry in row:
                score, index, label = (entry.decode() if isinstance(entry, bytes) else str(entry)).split(":", 2)
                top.append({"label": label, "index": int(index), "score": float(score)})
            answers.append({**top[0], "top_k": top})
        return answers

    async def aclose(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> "GrpcZooClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
