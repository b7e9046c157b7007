"""Turning what a caller holds (a path, bytes, a PIL image) into one multipart upload.

The server decodes an upload by its bytes, whatever type it declares; the declared type is
still taken from the file's magic bytes, then from its extension, so that logs, proxies and
other servers see the true one.
"""

from __future__ import annotations

import io
import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

# Extensions counted as images when walking a folder (lower case, with the dot).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".tif", ".tiff",
     ".webp", ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".tga", ".avif", ".heic"}
)

# (magic prefix, offset, extension, MIME type). Enough of the header to tell formats apart.
_MAGIC: list[tuple[bytes, int, str, str]] = [
    (b"\x89PNG\r\n\x1a\n", 0, ".png", "image/png"),
    (b"\xff\xd8\xff", 0, ".jpg", "image/jpeg"),
    (b"GIF87a", 0, ".gif", "image/gif"),
    (b"GIF89a", 0, ".gif", "image/gif"),
    (b"BM", 0, ".bmp", "image/bmp"),
    (b"II*\x00", 0, ".tif", "image/tiff"),
    (b"MM\x00*", 0, ".tif", "image/tiff"),
    (b"WEBP", 8, ".webp", "image/webp"),  # after b"RIFF" + 4-byte size
    (b"\x00\x00\x01\x00", 0, ".ico", "image/x-icon"),
    (b"ftypavif", 4, ".avif", "image/avif"),
]
_NETPBM = {b"P1": ".pbm", b"P4": ".pbm", b"P2": ".pgm", b"P5": ".pgm", b"P3": ".ppm", b"P6": ".ppm"}
SNIFF_BYTES = 16  # how much of a file sniff_image_type needs

ImageInput = Union[str, os.PathLike, bytes, bytearray, memoryview, Any]  # Any: a PIL.Image.Image


def sniff_image_type(head: bytes) -> tuple[str, str] | None:
    """(extension, MIME type) from a file's first bytes, or None if it is no image we know."""
    for magic, offset, ext, mime in _MAGIC:
        if head[offset:offset + len(magic)] == magic:
            if ext == ".webp" and not head.startswith(b"RIFF"):
                continue
            return ext, mime
    if head[:2] in _NETPBM and head[2:3] in (b" ", b"\n", b"\r", b"\t"):
        return _NETPBM[head[:2]], "image/x-portable-anymap"
    return None


def mime_for(filename: str, data: bytes) -> str:
    """The content type to declare: sniffed from the bytes, else from the name.

    A file that is no image at all (a text file named ``.png``) is still sent as its
    extension says, so the *server* names the problem with the file's name.
    """
    sniffed = sniff_image_type(data[:SNIFF_BYTES])
    if sniffed:
        return sniffed[1]
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream"


def looks_like_image(path: Path) -> bool:
    """True when the extension is a known image one, or the first bytes say image."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            return sniff_image_type(f.read(SNIFF_BYTES)) is not None
    except OSError:
        return False


@dataclass(frozen=True)
class Upload:
    """One multipart part: ``("images", (filename, data, mime))`` for httpx."""

    filename: str
    data: bytes
    mime: str

    def part(self) -> tuple[str, tuple[str, bytes, str]]:
        return ("images", (self.filename, self.data, self.mime))


def to_upload(item: ImageInput, index: int = 0) -> Upload:
    """A path, raw bytes, or a PIL image as an Upload.

    Paths keep their base name (the server's error messages name it); bytes get
    ``image<index>`` plus the sniffed extension; PIL images are encoded losslessly as PNG.
    """
    if isinstance(item, Upload):
        return item
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read image {str(path)!r}: {exc.strerror or exc}") from exc
        return Upload(path.name, data, mime_for(path.name, data))
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        sniffed = sniff_image_type(data[:SNIFF_BYTES])
        ext, mime = sniffed if sniffed else (".bin", "application/octet-stream")
        return Upload(f"image{index}{ext}", data, mime)
    if hasattr(item, "save") and hasattr(item, "mode"):  # a PIL image, without importing PIL
        buf = io.BytesIO()
        item.save(buf, format="PNG")
        return Upload(f"image{index}.png", buf.getvalue(), "image/png")
    raise TypeError(f"cannot upload {type(item).__name__}: pass a path, bytes or a PIL image")


def to_uploads(images: Any) -> list[Upload]:
    """One item or a list of items as Uploads (a lone path/bytes/PIL image is one image)."""
    if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Upload)) or hasattr(images, "mode"):
        images = [images]
    uploads = [to_upload(item, i) for i, item in enumerate(images)]
    if not uploads:
        raise ValueError("no images given")
    return uploads
