"""The errors the service answers with, one type per HTTP status a client can cause.

Every failure a client can cause is a ``ServiceError`` carrying its HTTP status; the endpoints choose
the status from its class and answer with service/http/responses.py's ``error_response`` (DESIGN.md: every
4xx body is JSON that names the problem, and the file for uploads); ``zoo.errors.first_line`` is how
any exception becomes one line of such a message. Standard library only, so the OIP app, the middleware
and the unit tests share it.
"""

from __future__ import annotations


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


class Forbidden(ServiceError):
    """A request this server's settings refuse (403): the message names the setting that allows it."""

    status = 403


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


class Superseded(ServiceError):
    """A load or unload that a later change to the same model overtook before every worker applied it
    (409): the message says what is served now."""

    status = 409


class InsufficientStorage(ServiceError):
    """The disk holding the server's files is full (507): a load or unload could not be recorded; what is
    loaded goes on being served."""

    status = 507


class ModelUnavailable(ServiceError):
    """A model that is not in the store, or not loaded yet (503): the message says how to add it."""

    status = 503


class ShuttingDown(ModelUnavailable):
    """The worker began its graceful shutdown while the request waited (503; retry on another worker)."""


class Overloaded(ServiceError):
    """The adaptive batcher predicted a wait past ``max_latency_ms`` (503 + Retry-After, clients back off)."""

    status = 503

    def __init__(self, model: str) -> None:
        super().__init__(
            f"model {model!r} is overloaded: the request would wait longer than the batching latency budget; "
            "retry after a short backoff",
            headers={"Retry-After": "1"},
        )


class Behind(ServiceError):
    """This worker cannot answer an inference request in time: refused before it is read (503 +
    Retry-After; service/http/admission.py). One constructor per cause."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})

    @classmethod
    def lagging(cls, lag_s: float, limit_s: float) -> "Behind":
        """The event loop runs more than ``MODEL_ZOO_SHED_LAG_MS`` behind."""
        return cls(f"overloaded: this worker is {lag_s * 1e3:.0f} ms behind its requests "
                   f"(MODEL_ZOO_SHED_LAG_MS={limit_s * 1e3:g}); retry after a short backoff")

    @classmethod
    def ahead(cls, waiting: int, wait_s: float, timeout_s: float, source: str = "Request-Timeout") -> "Behind":
        """The requests ahead would take more of the request's deadline (``source``) than it leaves to answer."""
        return cls(f"overloaded: {waiting} requests ahead of this one would take about "
                   f"{wait_s * 1e3:.0f} ms of its {timeout_s * 1e3:.0f} ms {source}; retry after a short backoff")


class QueueFull(ServiceError):
    """A model's queue is at its bound (``MODEL_ZOO_MAX_QUEUE`` requests, or ``MODEL_ZOO_MAX_QUEUE_DELAY_MS``
    of waiting): 429 + Retry-After, the client backs off (service/core/deadlines.py)."""

    status = 429

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class DeadlineExceeded(ServiceError):
    """The client's deadline (``Request-Timeout``, OIP ``parameters.timeout``, the gRPC deadline or the
    model's default) passed before the answer was ready (504); a queued request past it is never computed."""

    status = 504

