"""Request intake: the body-size cap (ASGI middleware) and the multipart ``images`` input spec.

Why not BentoML's default parsing of a ``list[PIL.Image]``/``list[Path]`` argument: it turns a
starlette "Too many files" (over 1000 parts) into a 500, downloads a URL given as a text field,
decodes by the declared content type, and lets PIL errors escape as 500s (DESIGN.md). ``ImageUpload``
keeps BentoML's API machinery (route, OpenAPI schema with a file array) but parses the form itself,
with the per-request image cap, and hands the endpoint either the files as bytes or a ``ServiceError``
to answer with; decoding happens in the endpoint, where each file's error can name it.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import bentoml
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from service.config import Settings
from service.errors import BadRequest, ServiceError, TooLarge

FIELD = "images"  # the multipart field (DESIGN.md)


@functools.cache
def settings() -> Settings:
    """This process's settings (read once; a malformed variable fails start-up with its name)."""
    return Settings.from_env()


@dataclass
class Uploads:
    """What the endpoint receives: ``files`` as ``(filename, bytes)`` or the ``error`` to answer with."""

    files: list[tuple[str | None, bytes]] = field(default_factory=list)
    error: ServiceError | None = None


class ImageUpload(bentoml.IODescriptor):
    """Input of the classification endpoints: multipart/form-data, one or more files in ``images``."""

    images: list[Annotated[Path, bentoml.validators.ContentType("image/*")]]

    @classmethod
    async def from_http_request(cls, request: Any, serde: Any) -> "ImageUpload":
        # model_construct: skip pydantic's per-file temp-file writing; the endpoint gets an Uploads.
        return cls.model_construct(images=await read_uploads(request, settings().max_images))


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
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413 JSON before the app runs.

    Content-Length is checked first; chunked bodies are read up to the cap, then replayed to the app
    (so the app still streams them as usual). Only requests that carry a body are touched.
    """

    def __init__(self, app: Any, max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _limit(self) -> int:
        return self.max_bytes if self.max_bytes is not None else settings().max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        limit = self._limit()
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                await _send_json(send, 400, f"invalid Content-Length header {declared.decode(errors='replace')!r}")
                return
            if too_big:
                await _send_json(send, 413, _too_big(int(declared), limit))
                return
            await self.app(scope, receive, send)
            return
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > limit:
                await _send_json(send, 413, _too_big(total, limit, at_least=True))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _too_big(size: int, limit: int, at_least: bool = False) -> str:
    return (f"request body of {'at least ' if at_least else ''}{size} bytes is over the cap of {limit} bytes "
            f"({limit / 2**20:g} MiB, MODEL_ZOO_MAX_BODY_MB)")


async def _send_json(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
