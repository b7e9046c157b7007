"""Errors the service answers with, and the one JSON shape they all take.

Every failure a client can cause is a ``ServiceError`` carrying its HTTP status; the endpoints turn it
into ``{"error": "<one line naming the problem>"}`` (DESIGN.md: every 4xx body is JSON that names the
problem, and the file for uploads). Nothing here imports BentoML, so the OIP app, the middleware and
the unit tests share it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response


class ServiceError(Exception):
    """An error with an HTTP status and a message meant for the client."""

    status = 500

    def __init__(self, message: str, status: int | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(ServiceError):
    """The request itself is wrong (400): bad JSON, a field out of range, a wrong tensor shape."""

    status = 400


class UnsupportedImage(ServiceError):
    """An upload that is not a decodable image (415 would mislead: the request's media type is fine)."""

    status = 400


class TooLarge(ServiceError):
    """A body, an image or a request over a configured cap (413)."""

    status = 413


class NotFound(ServiceError):
    """An unknown model name (404); the message lists the known ones."""

    status = 404


class InvalidModelName(BadRequest):
    """A model name or version in a URL or body that no store tag can have (slashes, dots, control characters)."""


class NotInStore(NotFound):
    """A model name (or version) the model store does not hold."""


class NotLoaded(NotFound):
    """A stored model this server does not serve now (never loaded, or unloaded)."""


class LoadFailed(BadRequest):
    """A load request for a stored model that cannot be served (corrupt entry, unknown family)."""


class ModelUnavailable(ServiceError):
    """A model that is not in the store, or not loaded yet (503): the message says how to add it."""

    status = 503


class Overloaded(ServiceError):
    """The adaptive batcher predicted a wait past ``max_latency_ms`` (503 + Retry-After, clients back off)."""

    status = 503

    def __init__(self, model: str) -> None:
        super().__init__(
            f"model {model!r} is overloaded: the request would wait longer than the batching latency budget; "
            "retry after a short backoff",
            headers={"Retry-After": "1"},
        )


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, **extra}


def json_response(payload: Any) -> Response:
    """A finished 200 JSON response for an endpoint's result (lists/dicts of str, int, float).

    BentoML passes a ``Response`` returned by an endpoint through as is. Returning the result itself
    makes BentoML build the output model's JSON schema on every request (``IOMixin.mime_type``) and
    serialise it through pydantic: measured at c=32 on /classify_digit that was ~19% of the worker's
    CPU. ``json.dumps`` of these small results is a few microseconds.
    """
    return Response(json.dumps(payload, separators=(",", ":")).encode(), media_type="application/json")


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(error_body(exc.message), status_code=exc.status, headers=exc.headers)
