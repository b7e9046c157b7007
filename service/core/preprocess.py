"""Encoded image bytes -> the float32 tensor a model takes, built from ``ImageSpec`` alone.

Steps (the spec's contract, the same as training's eval transforms): sniff and decode with PIL
(the declared content type is ignored: a JPEG sent as image/png is still a JPEG), check the pixel
cap *before* decoding (decompression bombs), load every pixel (so a truncated file fails here, not
later), apply the EXIF orientation, take the first frame, convert the colour mode, resize (shorter
side then center crop, or straight to size), scale to [0, 1], normalise, and lay out as
``(C, H, W)`` or flat ``(C*H*W,)`` for ``layout == "NF"``.

Colour modes: palette/CMYK/YCbCr/1-bit convert through PIL; 16-bit and 32-bit grayscale are scaled
to 8 bits (PIL's own ``convert("L")`` clips them to 255); transparency is flattened onto black
(a transparent pixel has zero intensity: MNIST's background), the same rule for every model.
Geometry matches torchvision's ``Resize(s)`` + ``CenterCrop`` on PIL images (bilinear, antialiased).
No torch import: a CPU ONNX deployment runs this without it.
"""

from __future__ import annotations

import io
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import TooLarge, UnsupportedImage
from zoo.errors import first_line
from zoo.spec import ImageSpec

# Formats PIL may sniff. Others (EPS would run Ghostscript; TGA has no magic number) are refused.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def describe(index: int, filename: str | None) -> str:
    """How an error names an upload: its position and, when the client sent one, its file name."""
    return f"images[{index}] ({filename!r})" if filename else f"images[{index}]"


def _check_pixels(width: int, height: int, label: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise TooLarge(f"{label}: {width}x{height} = {width * height} pixels is over the cap of {max_pixels} "
                       "pixels per image for this model (MODEL_ZOO_MAX_PIXELS, lower for a model with a small "
                       "input); downscale the image")


def measure(data: bytes, label: str, max_pixels: int) -> int:
    """Pixels ``data`` decodes to, from its header alone (no pixel data is read), checked against the cap.

    0 when PIL cannot tell: ``decode`` then names the problem. A few microseconds per file, so the
    decoded size of a request is known before any decoding is scheduled.
    """
    if not data:
        return 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data), formats=FORMATS).size
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{label}: refused as a decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            MemoryError, struct.error):
        return 0
    _check_pixels(width, height, label, max_pixels)
    return width * height


def decode(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """Bytes -> a fully loaded PIL image (first frame, EXIF orientation applied); 4xx errors name ``label``."""
    if not data:
        raise UnsupportedImage(f"{label}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own cap decides below
            img = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = img.size
        _check_pixels(width, height, label, max_pixels)
        if width == 0 or height == 0:
            raise UnsupportedImage(f"{label}: image has no pixels ({width}x{height})")
        img.seek(0)
        img.load()  # reads every pixel: truncated or corrupt data fails now
        img = ImageOps.exif_transpose(img)
    except (TooLarge, UnsupportedImage):
        raise
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{label}: refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise UnsupportedImage(f"{label}: not a recognised image (accepted formats: {', '.join(FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, MemoryError,
            Image.DecompressionBombWarning) as exc:
        # PIL reports truncated/corrupt data as OSError ("image file is truncated", "broken data stream"),
        # SyntaxError (bad PNG chunks), ValueError/EOFError/IndexError from individual decoders.
        raise UnsupportedImage(f"{label}: corrupt or truncated image data: {first_line(exc)}") from None
    return img


def to_mode(img: Image.Image, color_mode: str, label: str) -> Image.Image:
    """Any PIL mode -> ``"L"`` or ``"RGB"`` (see module docstring for the rules)."""
    try:
        if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
            img = _high_depth_to_l(img)
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode in ("LA", "La", "PA", "RGBA", "RGBa") or (img.mode == "L" and "transparency" in img.info):
            img = _flatten_alpha(img)
        if img.mode != color_mode:
            img = img.convert(color_mode)
    except (ValueError, OSError) as exc:
        raise UnsupportedImage(f"{label}: cannot convert colour mode {img.mode!r} to {color_mode}: {exc}") from None
    return img


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit (and 32-bit int/float) grayscale -> 8-bit L, scaling instead of clipping."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode in _SIXTEEN_BIT or (img.mode == "I" and arr.max(initial=0) > 255):
        arr = arr / 257.0  # 0..65535 -> 0..255
    elif img.mode == "F" and arr.max(initial=0) <= 1.0:
        arr = arr * 255.0  # float images in [0, 1]
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def _flatten_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def resize(img: Image.Image, spec: ImageSpec) -> Image.Image:
    """torchvision ``Resize(resize_shorter)`` + ``CenterCrop((h, w))``, or a straight resize to (h, w)."""
    if spec.resize_shorter is None:
        if img.size != (spec.width, spec.height):
            img = img.resize((spec.width, spec.height), Image.BILINEAR)
        return img
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = spec.resize_shorter, int(spec.resize_shorter * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BILINEAR)
    return center_crop(img, spec.height, spec.width)


def center_crop(img: Image.Image, height: int, width: int) -> Image.Image:
    """torchvision's center_crop: rounded offsets, zero padding when the image is smaller."""
    w, h = img.size
    if w < width or h < height:
        padded = Image.new(img.mode, (max(w, width), max(h, height)))
        padded.paste(img, ((max(w, width) - w) // 2, (max(h, height) - h) // 2))
        img, (w, h) = padded, padded.size
    top = int(round((h - height) / 2.0))
    left = int(round((w - width) / 2.0))
    return img.crop((left, top, left + width, top + height))


def normalise(img: Image.Image, spec: ImageSpec) -> np.ndarray:
    """PIL (L or RGB) -> float32 ``(C, H, W)`` or ``(C*H*W,)``, (x/255 - mean) / std per channel."""
    arr = np.asarray(img, dtype=np.float32) / 255.0  # (H, W) or (H, W, 3), [0, 1]
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)
    mean = np.asarray(spec.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(spec.std, dtype=np.float32)[:, None, None]
    arr = (arr - mean) / std
    return np.ascontiguousarray(arr.reshape(-1) if spec.layout == "NF" else arr, dtype=np.float32)


def preprocess(data: bytes, spec: ImageSpec, max_pixels: int, label: str = "image") -> np.ndarray:
    """One encoded image -> the model's input for one item (shape ``spec.input_shape()``)."""
    img = decode(data, label, max_pixels)
    img = to_mode(img, spec.color_mode, label)
    return normalise(resize(img, spec), spec)


def preprocess_many(files: list[tuple[str | None, bytes]], spec: ImageSpec, max_pixels: int) -> np.ndarray:
    """``[(filename, bytes), ...]`` -> ``(N, *input_shape)``; the first bad file raises, named."""
    items = [preprocess(data, spec, max_pixels, describe(i, name)) for i, (name, data) in enumerate(files)]
    return np.stack(items).astype(np.float32, copy=False)
