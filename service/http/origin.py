"""What a web page the operator happens to visit cannot make this server do (ASGI middleware).

With no token set (``make serve``, the image's default), any page in a browser that can reach the port
could otherwise call it. Three checks close that; each refusal is a 403 ``{"error": ...}`` naming the
problem and the setting that changes it (service/config.py):

- **Host** (DNS rebinding): a page on a name its author controls, re-pointed at this server's address, is
  same-origin to the browser, and its requests carry that name in ``Host``. Only the names in
  ``MODEL_ZOO_ALLOWED_HOSTS`` (default ``localhost``, ``*.localhost``; any with a token set) are answered.
  An IP address always is: a rebinding page cannot make a browser send one, and Kubernetes probes use the
  pod's. A request with no ``Host`` (HTTP/1.0) passes: browsers always send one.
- **Origin** (cross-site requests): a request of any method but GET/HEAD/OPTIONS whose ``Origin`` is
  neither this server's own (scheme://host[:port] with the ``Host`` it was sent to) nor listed in
  ``MODEL_ZOO_ALLOWED_ORIGINS``. Browsers send Origin with every cross-origin POST, the "simple" ones
  made without a preflight (forms, ``text/plain`` fetches) included; other clients send none and pass.
  Inference is covered too: a page could not read the answer, but could keep the server busy.
- **Content type** of model control (``POST /v2/repository/models/{name}/load|unload``): none
  (tritonclient sends its JSON body without one) or ``application/json``, which a page cannot send
  cross-site without a preflight; the form, multipart and ``text/plain`` bodies it can send are refused,
  for browsers or extensions that strip Origin.

Not Starlette's TrustedHostMiddleware: it answers 400 in plain text, takes ``[::1]:3000`` for the host
``[`` and has no rule for IP addresses. Wiring (service/app.py): outside BearerAuth, so the order of the
answers is 403 (where from), then 401 (who).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from service.config import settings
from service.core.limits import has_body
from service.http.responses import send_error

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # change nothing: a page may send them (links, images)
MODEL_CONTROL = re.compile(r"^/v2/repository/models/[^/]+/(?:load|unload)/?$")
JSON = "application/json"
HOSTS_REMEMBERED = 1024  # Host header values whose verdict is kept, per worker


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> list[str]:
    return [v.decode("latin-1").strip() for k, v in headers if k.lower() == name]


def host_name(host: str) -> str:
    """The name in a ``Host`` header, lower-case, without port, brackets or final dot: ``[::1]:3000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.index("]")] if "]" in host else host
    return host.partition(":")[0].rstrip(".")


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    """``name`` is an IP address, listed, or under a listed ``*.domain`` (``*`` allows every name)."""
    if "*" in allowed or is_ip(name):
        return True
    return any(name == entry or (entry.startswith("*.") and name.endswith(entry[1:])) for entry in allowed)


def same_origin(origin: str, host: str) -> bool:
    """``origin`` (``scheme://host[:port]``) names the server at ``host`` (the request's Host header)."""
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc.lower() == host.strip().lower()


class OriginGuard:
    """ASGI middleware; ``hosts``/``origins`` default to ``MODEL_ZOO_ALLOWED_HOSTS``/``_ORIGINS``."""

    def __init__(self, app: Any, hosts: tuple[str, ...] | None = None, origins: tuple[str, ...] | None = None) -> None:
        self.app = app
        self.hosts = hosts if hosts is not None else settings().allowed_hosts
        self.origins = origins if origins is not None else settings().allowed_origins
        self._hosts: dict[str, bool] = {}  # Host header -> allowed: a client sends the same one every time

    def _host_allowed(self, host: str) -> bool:
        allowed = self._hosts.get(host)
        if allowed is None:
            allowed = host_allowed(host_name(host), self.hosts)
            if len(self._hosts) < HOSTS_REMEMBERED:  # bounded: a client inventing names costs only the check
                self._hosts[host] = allowed
        return allowed

    def refusal(self, scope: dict) -> str | None:
        """Why the request is refused, or None."""
        headers = scope.get("headers") or []
        hosts = _header(headers, b"host")
        if len(hosts) > 1:
            return "more than one Host header"
        host = hosts[0] if hosts else ""
        if host and not self._host_allowed(host):
            return (f"host {host_name(host)!r} is not served here (DNS-rebinding guard): add it to "
                    "MODEL_ZOO_ALLOWED_HOSTS")
        method = scope.get("method", "GET")
        if method in SAFE_METHODS:
            return None
        for origin in _header(headers, b"origin"):
            if origin.lower().rstrip("/") not in self.origins and not same_origin(origin, host):
                return (f"cross-origin {method} refused: Origin {origin!r} is not this server; "
                        "add it to MODEL_ZOO_ALLOWED_ORIGINS")
        if MODEL_CONTROL.match(scope.get("path", "")):
            for kind in _header(headers, b"content-type"):
                if kind.partition(";")[0].strip().lower() != JSON:
                    return f"model control takes a JSON body: Content-Type {kind!r} refused (send {JSON} or none)"
        return None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        why = self.refusal(scope) if scope["type"] in ("http", "websocket") else None
        if why is None:
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":  # no HTTP answer possible: close with "policy violation"
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_error(send, 403, why, close=has_body(scope))  # a body was not read: do not drain it
