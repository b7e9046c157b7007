"""Request intake: the body-size cap (ASGI middleware) and the multipart ``images`` form.

Why not BentoML's default parsing of a ``list[PIL.Image]``/``list[Path]`` argument: it turns a
starlette "Too many files" (over 1000 parts) into a 500, downloads a URL given as a text field,
decodes by the declared content type, and lets PIL errors escape as 500s (DESIGN.md). ``read_uploads``
parses the form itself with python-multipart (``ImagesForm``), with the per-request image cap, and hands
the endpoint either the files as bytes or a ``ServiceError`` to answer with; decoding happens in the
endpoint, where each file's error can name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
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


class _Malformed(Exception):
    """A multipart body this service refuses (400), in its words."""


class _TooManyFiles(Exception):
    pass


class ImagesForm:
    """python-multipart's parser over one request body, keeping only what the endpoint uses: the file
    parts of ``FIELD`` as ``(filename, bytes)`` in order, where a text part sits among them, and the
    names of the other fields (their values are not kept).

    Starlette's ``request.form()`` spooled every file part into a ``SpooledTemporaryFile`` wrapped in an
    ``UploadFile``, written and read back through awaits; for a one-digit upload that was most of the
    parsing cost (``python -m benchmarks.studies.middleware_cost`` has the service's other per-request
    costs; docs/benchmarks.md, "The lone request"). The caps are Starlette's: files (413) and text fields.
    """

    def __init__(self, max_files: int, max_fields: int) -> None:
        self.max_files, self.max_fields = max_files, max_fields
        self.files: list[tuple[str | None, bytes]] = []
        self.text_at: int | None = None  # the index in FIELD of its first text part
        self.others: set[str] = set()  # names of the parts outside FIELD
        self._files = self._fields = self._in_field = 0
        self._header, self._value, self._disposition = b"", b"", b""
        self._name: str | None = None
        self._filename: str | None = None
        self._chunks: list[bytes] | None = None

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self._begin, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished, "on_part_data": self._data, "on_part_end": self._end}

    def _begin(self) -> None:
        self._disposition, self._chunks = b"", None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise _Malformed('a part\'s Content-Disposition header has no "name"')
        self._name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            self._files += 1
            if self._files > self.max_files:
                raise _TooManyFiles()
            self._filename = options[b"filename"].decode("utf-8", "replace")
        else:
            self._fields += 1
            if self._fields > self.max_fields:
                raise _Malformed(f"too many text fields: the cap is {self.max_fields}")
            self._filename = None
        self._chunks = [] if self._name == FIELD and self._filename is not None else None

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._chunks is not None:
            self._chunks.append(data[start:end])

    def _end(self) -> None:
        if self._name != FIELD:
            self.others.add(self._name or "")
        elif self._chunks is None:  # a text part in the images field
            if self.text_at is None:
                self.text_at = self._in_field
            self._in_field += 1
        else:
            self.files.append((self._filename, b"".join(self._chunks)))
            self._in_field += 1


async def read_uploads(request: Any, max_images: int) -> Uploads:
    """Parse the form; never raises for a client mistake (the error travels in ``Uploads.error``)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        return Uploads(error=ServiceError(
            f"expected multipart/form-data with one or more image files in the field {FIELD!r}, "
            f"got content type {content_type or 'none'!r}", status=415))
    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        return Uploads(error=BadRequest("malformed multipart body: no boundary parameter in its Content-Type"))
    # the caps refuse an over-cap request while it is parsed: the parser stops at once
    form = ImagesForm(max_files=max_images, max_fields=max_images + 16)
    try:
        parser = MultipartParser(boundary, form.callbacks())
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ClientDisconnect:  # gone, or cut off by BodyLimit (which has answered 413 already)
        return Uploads(error=BadRequest("the client disconnected before the body was complete"))
    except _TooManyFiles:
        return Uploads(error=TooLarge(f"too many images in one request: the cap is {max_images} "
                                      "(MODEL_ZOO_MAX_IMAGES); split the files over several requests"))
    except (_Malformed, FormParserError) as exc:
        return Uploads(error=BadRequest(f"malformed multipart body: {exc}"))
    if form.text_at is not None:
        return Uploads(error=BadRequest(
            f"{FIELD}[{form.text_at}] is a text field, not a file: upload the image bytes as a file part "
            "(URLs are not fetched)"))
    if not form.files:
        hint = f" (fields sent: {', '.join(sorted(form.others))})" if form.others else ""
        return Uploads(error=BadRequest(f"no images: send one or more files in the multipart field {FIELD!r}{hint}"))
    return Uploads(files=form.files)


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
