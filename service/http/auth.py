"""Optional bearer-token authentication (ASGI middleware) for every route but the health probes.

Off unless ``MODEL_ZOO_API_TOKEN`` is set (non-empty). When on, every HTTP request must carry
``Authorization: Bearer <token>``, except ``GET``/``HEAD`` of the routes orchestrators probe without
credentials (``/livez``, ``/readyz``, ``/healthz`` and ``/v2/health/*``) and of the static front page and
browser demo and Swagger UI (``/``, ``/ui``, ``/ui/<file>``, ``/docs``, ``/docs/<file>``: no data in them, and the page must load to ask for the
token; the model list and answers it shows come from protected routes). Any other method on them needs
the token too, so an unauthenticated body is never read on any route. ``/metrics`` needs the token
(service/README.md says why). Deny by default: a route added later is protected without anyone
remembering to list it. A missing, malformed or wrong
token gets the same ``401 {"error": "unauthorized"}`` with ``WWW-Authenticate: Bearer`` -- no detail,
so the answer does not tell a guesser which part was wrong. Tokens are compared with
``hmac.compare_digest`` (time independent of where the first differing byte is).

Wiring (service/app.py), outermost of our middlewares so an unauthenticated body is never read::

    ModelZoo.add_asgi_middleware(BearerAuth)   # before ModelZoo.add_asgi_middleware(BodyLimit)

The token is read when the middleware is built (once per worker at start-up); rotate it by restarting.
"""

from __future__ import annotations

import hmac
import logging
import os
from typing import Any

from service.core.limits import has_body
from service.http.responses import error_bytes

logger = logging.getLogger("model_zoo.auth")

TOKEN_ENV = "MODEL_ZOO_API_TOKEN"
# Paths answered without a token (GET/HEAD only): liveness/readiness probes, OIP health.
OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/v2/health/live", "/v2/health/ready"})
OPEN_PREFIXES = ("/v2/health/",)
OPEN_METHODS = frozenset({"GET", "HEAD"})  # methods without a body: nothing to read before auth
# static pages (service/http/pages.py, swagger.py): the front page, the demo, Swagger UI and their files,
# one path segment under /ui/ or /docs/ (/docs.json is not a page: it needs the token)
UI_PATHS = frozenset({"/", "/ui", "/docs"})
UI_PREFIXES = ("/ui/", "/docs/")

_UNAUTHORIZED = error_bytes("unauthorized")
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_UNAUTHORIZED)).encode()),
    (b"www-authenticate", b"Bearer"),
]
_CLOSE = [*_HEADERS, (b"connection", b"close")]  # the body was not read: do not drain it off the connection


def token_from_env() -> bytes | None:
    """The configured token as bytes, or None when auth is off (unset or blank)."""
    raw = os.environ.get(TOKEN_ENV, "").strip()
    return raw.encode() if raw else None


def is_open(path: str) -> bool:
    """Health probes and the static pages stay reachable without a token (GET/HEAD: see ``allowed``)."""
    path = path.rstrip("/") or "/"
    if path in UI_PATHS or any(path.startswith(p) and "/" not in path[len(p):] for p in UI_PREFIXES):
        return True
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def presented_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of ``Authorization: Bearer <token>`` (scheme case-insensitive), else None.

    More than one Authorization header is refused (None): which one a proxy forwards is ambiguous.
    """
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    token = token.strip()
    return token or None


class BearerAuth:
    """ASGI middleware; ``token=None`` reads ``MODEL_ZOO_API_TOKEN`` (unset: every request passes)."""

    def __init__(self, app: Any, token: str | bytes | None = None) -> None:
        self.app = app
        if isinstance(token, str):
            token = token.encode()
        self.token = token if token is not None else token_from_env()
        if self.token:
            logger.info("bearer-token auth is on (%s); open without a token (GET/HEAD): %s",
                        TOKEN_ENV, ", ".join(sorted(OPEN_PATHS)))

    def allowed(self, scope: dict) -> bool:
        if not self.token:
            return True
        if is_open(scope.get("path", "/")) and scope.get("method", "GET") in OPEN_METHODS:
            return True
        given = presented_token(scope.get("headers") or [])
        # compare_digest on equal-type bytes; a wrong length also takes the constant-time path
        return given is not None and hmac.compare_digest(given, self.token)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # no HTTP answer possible: close with "policy violation"
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 401, "headers": _CLOSE if has_body(scope) else _HEADERS})
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})
