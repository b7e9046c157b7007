"""What one request may cost the server: caps that are not a plain body size, in one place.

A request's body is capped by ``BodyLimit`` (service/http/uploads.py); these caps bound the work and the
memory a small body can ask for: decoded pixels per image and per request, items and time steps of an
OIP tensor, the size of a response built on the event loop, and which requests carry a body at all.
Every refusal is a ``TooLarge`` (413) naming the cap and the variable or the fix.
"""

from __future__ import annotations

from service.config import Settings
from service.errors import TooLarge

# OIP forecasters: time steps (N x T) per request. The step graph answers N x T outputs; at this cap the
# JSON response is about 1.5 MB, so a 4 MB binary request cannot ask for hundreds of MB of JSON.
MAX_SERIES_VALUES = 2**16
# Outputs with more values than this are encoded, and OIP bodies larger than this parsed, in a worker
# thread: the event loop keeps answering meanwhile.
OFF_LOOP_VALUES = 4096
OFF_LOOP_BYTES = 256 * 1024
# A model's per-image pixel cap: this many decoded pixels per input pixel (28x28 -> 3.2 M, about
# 2048x1568; a photo of a digit still fits), never above MODEL_ZOO_MAX_PIXELS.
PIXELS_PER_INPUT_PIXEL = 4096
# Decoded pixels a request may hold on the event loop (the rest go to a thread): about 32 MNIST digits.
INLINE_DECODE_PIXELS = 32 * 28 * 28


def has_body(scope: dict) -> bool:
    """Whether an HTTP/1.1 request carries a body: chunked, or a non-zero Content-Length."""
    for key, value in scope.get("headers") or []:
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


def items(n: int, what: str, settings: Settings) -> None:
    """Items per request (images, tensor rows, series) share MODEL_ZOO_MAX_IMAGES."""
    if n > settings.max_images:
        raise TooLarge(f"{what}: {n} items is over the cap of {settings.max_images} per request "
                       "(MODEL_ZOO_MAX_IMAGES); split them over several requests")


def series(n: int, steps: int, settings: Settings) -> None:
    """OIP forecaster input ``x`` (N, T, 1): N series and N x T time steps per request."""
    items(n, "input 'x'", settings)
    if n * steps > MAX_SERIES_VALUES:
        raise TooLarge(f"input 'x': {n} x {steps} = {n * steps} time steps is over the cap of "
                       f"{MAX_SERIES_VALUES} per request; send fewer or shorter series per request")


def image_pixel_cap(height: int, width: int, settings: Settings) -> int:
    """Decoded pixels one image may have for a model whose input is ``height`` x ``width``."""
    return min(settings.max_pixels, max(PIXELS_PER_INPUT_PIXEL * height * width, 64))


def request_pixels(total: int, settings: Settings) -> None:
    if total > settings.max_request_pixels:
        raise TooLarge(f"the images of this request decode to {total} pixels, over the cap of "
                       f"{settings.max_request_pixels} per request (MODEL_ZOO_MAX_REQUEST_PIXELS); "
                       "send fewer or smaller images per request")
