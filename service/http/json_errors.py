"""ASGI middleware: the framework's plain-text 404/405 answers become JSON ``{"error": ...}``.

DESIGN.md: every 4xx body is JSON with a message that names the problem. The service's own errors
are, but routing errors come from Starlette underneath BentoML as ``text/plain`` "Not Found" /
"Method Not Allowed" (an unknown path, ``GET /classify_digit``, an OIP model name with a newline;
tests/test_reliability_fuzz.py sends such requests). This rewrites only those: a 404 or
405 whose content type is not JSON; JSON errors from the endpoints pass through untouched, and the
``Allow`` header of a 405 is kept.

Redirects (Starlette's trailing-slash 307) get a relative ``Location``: Starlette builds an absolute
one from the request's ``Host`` header, so ``GET /metrics/`` with ``Host: evil.example`` sent clients
(and caches keyed on the URL) to another host.

Wiring (service/app.py)::

    ModelZoo.add_asgi_middleware(JsonErrors)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from service.http.responses import error_bytes

REWRITTEN = {404, 405}
REDIRECTS = {301, 302, 303, 307, 308}


def relative(location: bytes) -> bytes:
    """``http://any.host/path?q`` -> ``/path?q`` (RFC 9110 allows a relative Location)."""
    parts = urlsplit(location.decode("latin-1"))
    path = "/" + parts.path.lstrip("/")  # "//evil.example" would still be another host
    return (path + (f"?{parts.query}" if parts.query else "")).encode("latin-1")


def message(status: int, method: str, path: str, allow: str | None) -> str:
    if status == 405:
        # Starlette builds Allow from a set, so its order changes between runs: sort for a stable message.
        allowed = ", ".join(sorted(m.strip() for m in allow.split(","))) if allow else ""
        return f"method {method} is not allowed on {path}" + (f"; allowed: {allowed}" if allowed else "")
    return f"no such route: {method} {path} (see / for the routes, /docs.json for the API, /v2 for the Open Inference Protocol)"


class JsonErrors:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rewriting = False

        async def wrapped(msg: dict) -> None:
            nonlocal rewriting
            if msg["type"] == "http.response.start" and msg["status"] in REDIRECTS:
                msg = {**msg, "headers": [(k, relative(v) if k.lower() == b"location" else v)
                                          for k, v in msg.get("headers", [])]}
            if msg["type"] == "http.response.start" and msg["status"] in REWRITTEN:
                headers = {k.lower(): v for k, v in msg.get("headers", [])}
                if not headers.get(b"content-type", b"").startswith(b"application/json"):
                    rewriting = True
                    allow = headers.get(b"allow")
                    text = message(msg["status"], scope.get("method", "?"), scope.get("path", "?"),
                                   allow.decode("latin-1") if allow else None)
                    body = error_bytes(text)
                    out = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                    if allow:
                        out.append((b"allow", allow))
                    await send({"type": "http.response.start", "status": msg["status"], "headers": out})
                    await send({"type": "http.response.body", "body": body})
                    return
            if rewriting:  # the original plain-text body: already answered
                return
            await send(msg)

        await self.app(scope, receive, wrapped)
