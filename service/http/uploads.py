"""Request intake: the body-size cap (ASGI middleware) and the multipart ``images`` form.

Why not BentoML's default parsing of a ``list[PIL.Image]``/``list[Path]`` argument: it turns a
starlette "Too many files" (over 1000 parts) into a 500, downloads a URL given as a text field,
decodes by the declared content type, and lets PIL errors escape as 500s (DESIGN.md). ``read_uploads``
parses the form itself, with the per-request image cap, and hands the endpoint either the files as bytes
or a ``ServiceError`` to answer with; decoding happens in the endpoint, where each file's error can name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect

from service.config import settings
from service.core.limits import has_body
from service.errors import BadRequest, ServiceError, TooLarge
from service.http.responses import send_error

FIELD = "images"  # the multipart field (DESIGN.md)


@dataclass
class Uploads:
    """What the endpoint receives: ``files`` as ``(filename, bytes)`` or the ``error`` to answer with."""

    files: list[tuple[str | None, bytes]] = field(default_factory=list)
    error: ServiceError | None = None


async def read_uploads(request: Any, max_images: int) -> Uploads:
    """Parse the form; never raises for a client mistake (the error travels in ``Uploads.error``)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return Uploads(error=ServiceError(
            f"expected multipart/form-data with one or more image files in the field {FIELD!r}, "
            f"got content type {content_type or 'none'!r}", status=415))
    try:
        # max_files: our cap, so over-cap requests are refused while parsing (starlette stops at once)
        form = await request.form(max_files=max_images, max_fields=max_images + 16)
    except ClientDisconnect:  # gone, or cut off by BodyLimit (which has answered 413 already)
        return Uploads(error=BadRequest("the client disconnected before the body was complete"))
    except (MultiPartException, HTTPException) as exc:
        message = getattr(exc, "message", None) or getattr(exc, "detail", None) or str(exc)
        if "Too many files" in message:
            return Uploads(error=TooLarge(f"too many images in one request: the cap is {max_images} "
                                          "(MODEL_ZOO_MAX_IMAGES); split the files over several requests"))
        return Uploads(error=BadRequest(f"malformed multipart body: {message}"))
    values = form.getlist(FIELD)
    if not values:
        others = sorted(set(form.keys()))
        hint = f" (fields sent: {', '.join(others)})" if others else ""
        return Uploads(error=BadRequest(f"no images: send one or more files in the multipart field {FIELD!r}{hint}"))
    files: list[tuple[str | None, bytes]] = []
    for i, value in enumerate(values):
        if not isinstance(value, UploadFile):
            return Uploads(error=BadRequest(
                f"{FIELD}[{i}] is a text field, not a file: upload the image bytes as a file part "
                "(URLs are not fetched)"))
        files.append((value.filename, await value.read()))
    return Uploads(files=files)


class BodyLimit:
    """ASGI middleware: request bodies over ``max_bytes`` get 413 JSON; conflicting framing gets 400.

    It counts the bytes actually received, on every method: a declared ``Content-Length`` only lets a
    request be refused before any of it is read (h11 frames a body by ``Transfer-Encoding`` when both
    headers come, so a small declared length proved nothing). A request with both is refused (RFC 9112
    6.3 allows it; it is how request smuggling starts). Nothing is buffered here: the app streams the
    body as usual, and once the count passes the cap the app sees the client disconnect and the client
    gets the 413. A response sent before the body was read in full closes the connection, so an unread
    body is not drained off a kept-alive connection.
    """

    def __init__(self, app: Any, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _limit(self) -> int:
        return self.max_bytes if self.max_bytes is not None else settings().max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        limit = self._limit()
        headers = scope.get("headers") or []
        lengths = [v for k, v in headers if k == b"content-length"]
        if lengths and any(k == b"transfer-encoding" for k, _ in headers):
            await send_error(send, 400, "conflicting framing headers: Content-Length together with "
                             "Transfer-Encoding; send one of them")
            return
        if lengths:
            try:
                declared = int(lengths[0])
            except ValueError:
                await send_error(send, 400, f"invalid Content-Length header {lengths[0].decode(errors='replace')!r}")
                return
            if declared > limit:
                await send_error(send, 413, _too_big(declared, limit))
                return
        received, finished, started, refused, answered = 0, False, False, False, False

        async def counted() -> dict:
            nonlocal received, finished, refused, answered
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:  # else the app's own answer is under way: let it finish
                        answered = True
                        await send_error(send, 413, _too_big(received, limit, at_least=True))
                    return {"type": "http.disconnect"}  # the app stops reading
                finished = not message.get("more_body", False)
            return message

        async def guarded(message: dict) -> None:
            nonlocal started
            if answered:  # our 413 is the answer; whatever the app says after the disconnect is dropped
                return
            if message["type"] == "http.response.start":
                started = True
                if not finished:
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted, guarded)


def _too_big(size: int, limit: int, at_least: bool = False) -> str:
    return (f"request body of {'at least ' if at_least else ''}{size} bytes is over the cap of {limit} bytes "
            f"({limit / 2**20:g} MiB, MODEL_ZOO_MAX_BODY_MB)")
