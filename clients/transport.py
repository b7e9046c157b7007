"""What the sync and async clients share: settings, errors, retry policy.

Only the I/O differs between ``ZooClient`` and ``AsyncZooClient``; everything that
decides *whether* and *when* to retry, and what an error says, lives here so both
behave identically.
"""

from __future__ import annotations

import email.utils
import json
import os
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_URL = "http://localhost:3000"
URL_ENV = "ZOO_URL"
TOKEN_ENV = "MODEL_ZOO_API_TOKEN"

# 429 Too Many Requests and 503 (BentoML's adaptive batcher: "process is overloaded")
# mean "come back later"; every other status is the answer.
RETRY_STATUSES = frozenset({429, 503})

# Failures before or while talking to the server that a retry can cure. A read
# *timeout* is not among them: the server may still be working on the request, and
# re-sending it would only add load.
RETRY_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


class ZooError(Exception):
    """A request that failed: ``status`` is the HTTP status, or None when no answer came.

    ``message`` is the server's own error text (``{"error": ...}``) when it sent one,
    so ``str(err)`` reads e.g. ``HTTP 400 from POST /classify_digit: file 'x.png' is not an image``.
    """

    def __init__(self, status: int | None, message: str, *, url: str = "", body: Any = None) -> None:
        self.status = status
        self.message = message
        self.url = url
        self.body = body  # the decoded JSON body (or text) for callers that want details
        where = f" from {url}" if url else ""
        prefix = f"HTTP {status}{where}: " if status is not None else ""
        super().__init__(prefix + message)

    @property
    def is_client_error(self) -> bool:
        """True for 4xx: the request itself was wrong (a bad file, a bad argument)."""
        return self.status is not None and 400 <= self.status < 500 and self.status not in RETRY_STATUSES


def default_url(url: str | None = None) -> str:
    """The service URL: the argument, else $ZOO_URL, else http://localhost:3000."""
    chosen = (url or os.environ.get(URL_ENV) or DEFAULT_URL).strip().rstrip("/")
    if not chosen.lower().startswith(("http://", "https://")):
        raise ValueError(f"the service URL must start with http:// or https://, got {chosen!r}")
    return chosen


def default_token(token: str | None = None) -> str | None:
    return token or os.environ.get(TOKEN_ENV) or None


def base_headers(token: str | None) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "model-zoo-client/0.1"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def error_message(response: httpx.Response) -> tuple[str, Any]:
    """The server's message and decoded body for a failed response.

    Our service answers ``{"error": "..."}``. BentoML itself answers the same shape,
    except that for its own 4xx exceptions 1.4.40 wraps it in a list
    (``[{"error": "..."}]``) and pydantic validation errors add ``"detail"``.
    Anything else (a proxy's HTML page) is reported by its first line.
    """
    try:
        body: Any = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        text = response.text.strip()
        first = text.splitlines()[0][:200] if text else (response.reason_phrase or "no message")
        return first, text
    item = body[0] if isinstance(body, list) and body and isinstance(body[0], dict) else body
    if isinstance(item, dict) and "error" in item:
        message = str(item["error"])
        details = item.get("detail")
        if isinstance(details, list):  # pydantic: [{"loc": [...], "msg": "..."}]
            parts = [f"{'.'.join(map(str, d.get('loc', ())))}: {d.get('msg')}" for d in details if isinstance(d, dict)]
            if parts:
                message += " (" + "; ".join(parts) + ")"
        return message, body
    return json.dumps(body)[:200], body


def check(response: httpx.Response) -> httpx.Response:
    """Raise ZooError for any non-2xx response; return the response otherwise."""
    if response.is_success:
        return response
    message, body = error_message(response)
    where = f"{response.request.method} {response.request.url.path}"
    raise ZooError(response.status_code, message, url=where, body=body)


class Unreachable(ZooError):
    """No connection to the service at all (refused, unresolvable, timed out connecting): nothing listens
    at that URL, as opposed to a service that answered or broke off mid-request."""


def transport_error(exc: Exception, url: str) -> ZooError:
    """A ZooError naming the server URL for a failure that got no HTTP answer (``Unreachable`` when no
    connection was made)."""
    kind = {
        httpx.ConnectError: "cannot connect to",
        httpx.ConnectTimeout: "timed out connecting to",
        httpx.ReadTimeout: "timed out waiting for an answer from",
        httpx.WriteTimeout: "timed out sending to",
        httpx.PoolTimeout: "no free connection to",
    }.get(type(exc), "connection failed to")
    detail = str(exc) or type(exc).__name__
    error = Unreachable if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) else ZooError
    return error(None, f"{kind} {url} ({detail})", url=url)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; Retry-After wins when the server sends it.

    ``retries`` is the number of *extra* attempts: 3 means at most 4 requests.
    Delay before retry n (0-based) is uniform in [0, min(max_delay, base * 2**n)] --
    full jitter spreads out clients that were all refused at the same moment.
    """

    retries: int = 3
    base_delay: float = 0.25  # seconds
    max_delay: float = 8.0  # seconds, cap for both backoff and Retry-After

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        if retry_after is not None:
            # Honour the server, capped so a bogus header cannot hang a client;
            # a little jitter keeps a crowd of clients from returning in lockstep.
            return min(self.max_delay, retry_after) + (rng or random).uniform(0, self.base_delay / 4)
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        return (rng or random).uniform(0, ceiling)

    def should_retry_status(self, status: int, attempt: int) -> bool:
        return status in RETRY_STATUSES and attempt < self.retries

    def should_retry_exception(self, exc: Exception, attempt: int) -> bool:
        return isinstance(exc, RETRY_EXCEPTIONS) and attempt < self.retries
