"""What every route answers with: a JSON result, or ``{"error": "<one line naming the problem>"}``."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse, Response

from service.errors import ServiceError


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"error": message, **extra}


def error_bytes(message: str) -> bytes:
    """The error body, encoded: for the ASGI middlewares that answer before any route runs."""
    return json.dumps(error_body(message)).encode()


async def send_error(send: Any, status: int, message: str, close: bool = True, retry_after: bool = False,
                     extra: list[tuple[bytes, bytes]] = ()) -> None:
    """An ASGI middleware's own JSON refusal. ``close``: the body was not read, so the connection closes
    rather than have the server drain it. ``extra``: more headers."""
    body = error_bytes(message)
    await send({"type": "http.response.start", "status": status,
                "headers": error_headers(body, close, retry_after, extra)})
    await send({"type": "http.response.body", "body": body})


def error_headers(body: bytes, close: bool, retry_after: bool, extra: list[tuple[bytes, bytes]] = ()) -> list[tuple[bytes, bytes]]:
    """The headers of an error ``body`` answered before any route ran (``send_error``, the protocol's 503)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    if close:
        headers.append((b"connection", b"close"))
    if retry_after:
        headers.append((b"retry-after", b"1"))
    return headers


def error_response(exc: ServiceError) -> JSONResponse:
    return JSONResponse(error_body(exc.message), status_code=exc.status, headers=exc.headers)


def json_response(payload: Any) -> Response:
    """A finished 200 JSON response for an endpoint's result (lists/dicts of str, int, float).

    BentoML passes a ``Response`` returned by an endpoint through as is; returning the result itself
    makes BentoML build the output model's JSON schema and serialise it through pydantic on every
    request (a measurable share of a small model's request: service/README.md, "Per-request overhead").
    """
    return Response(json.dumps(payload, separators=(",", ":")).encode(), media_type="application/json")
