"""The hostile-upload corpus: every case generated here (no committed binaries), with its documented answer.

Each ``Case`` is one request to the service (multipart parts, or a raw body with a content type) and
the answer docs/reliability.md promises for it: the HTTP status and a fragment of the JSON ``error``
message (empty for 200). Files are derived from one real MNIST digit (service/examples/digit7.png)
so the accepted ones have a reference answer: the same pixels sent as a plain 8-bit PNG.

    python tests/hostile/corpus.py OUT_DIR      # write the files, to try them by hand (zoo classify OUT_DIR)
    python tests/hostile/corpus.py --markdown   # the table for docs/reliability.md
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
DIGIT = ROOT / "service" / "examples" / "digit7.png"  # a real MNIST test digit, 28x28 L
MAX_BODY = 32 * 2**20  # the service's default MODEL_ZOO_MAX_BODY_MB, in bytes
MAX_IMAGES = 256  # the default MODEL_ZOO_MAX_IMAGES
MODEL_PIXELS = 4096 * 28 * 28  # mnist-mlp's own per-image cap (service/core/limits.py: 4096 per input pixel)


@dataclass
class Case:
    name: str  # short id (the pytest parameter)
    what: str  # one line for the docs table
    status: int
    fragment: str = ""  # must appear in the JSON "error" (4xx); empty for 200
    files: list[tuple[str, bytes, str]] = field(default_factory=list)  # (filename, bytes, declared type)
    body: bytes | None = None  # a raw body instead of multipart
    content_type: str | None = None
    same_as: bytes | None = None  # 200 cases: the plain PNG whose answer must be identical
    fields: list[tuple[str, str]] = field(default_factory=list)  # extra non-file form fields


def digit() -> Image.Image:
    return Image.open(DIGIT).convert("L")


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def flip_bytes(data: bytes, start: int, count: int, seed: int = 0) -> bytes:
    """XOR ``count`` bytes from ``start`` with random non-zero values (deterministic)."""
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    for i in range(start, min(len(out), start + count)):
        out[i] ^= int(rng.integers(1, 256))
    return bytes(out)


def elf_executable() -> bytes:
    """A minimal, valid x86-64 ELF executable (exit(0)): 64-byte header, one program header, code."""
    code = bytes.fromhex("b83c0000004831ff0f05")  # mov eax, 60; xor rdi, rdi; syscall
    entry = 0x400000 + 64 + 56
    header = struct.pack("<4sBBBBB7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, 2, 0x3E, 1,
                         entry, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, 0x400000, 0x400000, 120 + len(code), 120 + len(code), 0x1000)
    return header + phdr + code


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A 1-bit PNG of zeros, written chunk by chunk: ``width*height`` pixels in a few hundred KiB."""
    row = b"\0" + b"\0" * ((width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def gif_screen_bomb() -> bytes:
    """A valid GIF whose logical screen is 65535x65535 (4.3 G pixels) around a 1x1 frame."""
    small = encode(Image.new("L", (1, 1)), "GIF")
    return small[:6] + struct.pack("<HH", 65535, 65535) + small[10:]


def animated(fmt: str, frames: list[Image.Image]) -> bytes:
    kw = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "WEBP":
        kw["lossless"] = True
    return encode(frames[0].convert("RGB") if fmt == "WEBP" else frames[0], fmt, **kw)


def cases() -> list[Case]:
    img = digit()
    png = encode(img, "PNG")
    jpeg = encode(img, "JPEG", quality=95)
    gif = encode(img, "GIF")
    webp = encode(img, "WEBP", lossless=True)
    other = Image.fromarray(255 - np.asarray(img))  # a second, different frame
    arr16 = np.asarray(img).astype(np.uint16) * 257  # 0..255 -> 0..65535: the same picture at 16 bits
    wide = Image.fromarray(np.tile(np.asarray(img.resize((28, 10))), (1, 358))[:, :10000])  # 10000x10
    tall = wide.transpose(Image.Transpose.TRANSPOSE)  # 10x10000
    pal = img.convert("P")  # web palette with dithering: its own pixels, so its own reference
    pal_ref = encode(pal.convert("RGB"), "PNG")  # index 0 is black: flattening transparency keeps it

    def up(name: str, data: bytes, declared: str = "image/png") -> list[tuple[str, bytes, str]]:
        return [(name, data, declared)]

    bad = "corrupt or truncated image data"
    unknown = "not a recognised image"
    return [
        # --- truncated and corrupt files: 400 naming the file
        Case("png-truncated", "PNG cut in half", 400, f"('cut.png'): {bad}", up("cut.png", png[: len(png) // 2])),
        Case("png-bad-crc", "PNG with flipped bytes inside IDAT (CRC mismatch)", 400, f"('crc.png'): {bad}",
             up("crc.png", flip_bytes(png, 60, 16))),
        Case("png-header-only", "PNG signature + IHDR, no data", 400, "('hdr.png')", up("hdr.png", png[:33])),
        Case("jpeg-truncated", "JPEG cut in half", 400, f"('cut.jpg'): {bad}",
             up("cut.jpg", jpeg[: len(jpeg) // 2], "image/jpeg")),
        Case("jpeg-no-scan", "JPEG headers only (SOI..SOS cut)", 400, "('head.jpg')", up("head.jpg", jpeg[:200], "image/jpeg")),
        Case("gif-truncated", "GIF cut in half", 400, f"('cut.gif'): {unknown}", up("cut.gif", gif[: len(gif) // 2], "image/gif")),
        Case("gif-header-only", "GIF89a header and nothing else", 400, "('h.gif')", up("h.gif", b"GIF89a\x00", "image/gif")),
        Case("webp-truncated", "WebP cut in half", 400, "('cut.webp')", up("cut.webp", webp[: len(webp) // 2], "image/webp")),
        Case("webp-corrupt", "WebP with flipped bytes in the bitstream", 400, "('bad.webp')",
             up("bad.webp", flip_bytes(webp, 30, 24), "image/webp")),
        # --- not images at all
        Case("zero-bytes", "zero-byte file", 400, "('empty.png'): empty file (0 bytes)", up("empty.png", b"")),
        Case("text-as-png", "a text file named .png", 400, f"('notes.png'): {unknown}", up("notes.png", b"hello, not pixels\n" * 20)),
        Case("elf-as-png", "an ELF executable named .png", 400, f"('run.png'): {unknown}", up("run.png", elf_executable())),
        Case("svg-as-png", "SVG (XML) named .png", 400, f"('v.png'): {unknown}",
             up("v.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"/>')),
        Case("eps-refused", "EPS (PIL would run Ghostscript): format refused", 400, f"('x.eps'): {unknown}",
             up("x.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\nshowpage\n", "image/png")),
        Case("path-filename", "a path-traversal file name (name is only echoed)", 400, "('../../etc/passwd'): empty file",
             up("../../etc/passwd", b"")),
        # --- decompression bombs and the pixel cap: 413 before decoding
        Case("png-bomb", "1-bit PNG 20000x20000 (400 M pixels, ~50 KiB)", 413, "('bomb.png'):", up("bomb.png", png_bomb(20000, 20000))),
        Case("gif-screen-bomb", "GIF with a 65535x65535 logical screen", 413, "('screen.gif'):",
             up("screen.gif", gif_screen_bomb(), "image/gif")),
        Case("over-pixel-cap", "PNG 5000x4000 (20 M pixels, over the 28x28 model's 3.2 M cap)", 413,
             f"over the cap of {MODEL_PIXELS} pixels", up("big.png", encode(Image.new("L", (5000, 4000)), "PNG"))),
        # --- decoded size: tiny files that decode to huge images, refused from their headers
        Case("webp-4096-lossless", "lossless WebP 4096x4096 (702 bytes, 16.7 M pixels)", 413,
             f"('w.webp'): 4096x4096 = 16777216 pixels is over the cap of {MODEL_PIXELS}",
             up("w.webp", encode(Image.new("L", (4096, 4096)), "WEBP", lossless=True), "image/webp")),
        Case("request-pixel-budget", "40 PNGs of 1500x1500 (2 KiB each, 90 M pixels in all)", 413,
             "over the cap of 67108864 per request (MODEL_ZOO_MAX_REQUEST_PIXELS)",
             files=[(f"{i}.png", encode(Image.new("L", (1500, 1500)), "PNG"), "image/png") for i in range(40)]),
        # --- unusual but valid images: 200, the same answer as the plain PNG of the same pixels
        Case("png-16bit", "16-bit grayscale PNG", 200, files=up("g16.png", encode(Image.fromarray(arr16), "PNG")), same_as=png),
        Case("jpeg-cmyk", "CMYK JPEG", 200, files=up("cmyk.jpg", encode(img.convert("CMYK"), "JPEG", quality=100), "image/jpeg")),
        Case("png-palette", "palette PNG", 200, files=up("p.png", encode(pal, "PNG")), same_as=pal_ref),
        Case("png-palette-trns", "palette PNG with a transparent colour", 200,
             files=up("pt.png", encode(pal, "PNG", transparency=0)), same_as=pal_ref),
        Case("gif-animated", "animated GIF (first frame is used)", 200,
             files=up("anim.gif", animated("GIF", [img, other, img]), "image/gif"), same_as=png),
        Case("webp-animated", "animated WebP (first frame is used)", 200,
             files=up("anim.webp", animated("WEBP", [img, other]), "image/webp"), same_as=png),
        Case("png-apng", "animated PNG (APNG, first frame is used)", 200,
             files=up("anim.png", animated("PNG", [img, other])), same_as=png),
        Case("one-pixel", "1x1 image (upscaled: the same as a flat 28x28)", 200,
             files=up("dot.png", encode(Image.new("L", (1, 1), 200), "PNG")),
             same_as=encode(Image.new("L", (28, 28), 200), "PNG")),
        Case("wide-10000x10", "10000x10 image", 200, files=up("wide.png", encode(wide, "PNG")),
             same_as=encode(wide, "TIFF")),
        Case("tall-10x10000", "10x10000 image", 200, files=up("tall.png", encode(tall, "PNG")),
             same_as=encode(tall, "BMP")),
        Case("jpeg-declared-png", "a JPEG declared image/png (sniffed, not trusted)", 200,
             files=up("j.png", jpeg), same_as=jpeg),
        Case("png-declared-octet", "a PNG declared application/octet-stream", 200,
             files=up("o.bin", png, "application/octet-stream"), same_as=png),
        # --- request shape: bodies, parts, content types
        Case("huge-body", "one 33 MiB part (over the 32 MiB body cap)", 413, "over the cap of 33554432 bytes",
             up("huge.png", b"\0" * (MAX_BODY + 2**20))),
        Case("thousands-of-parts", "5000 tiny file parts", 413, f"the cap is {MAX_IMAGES}",
             files=[(f"{i}.png", b"x", "image/png") for i in range(5000)]),
        Case("thousands-of-fields", "1 file + 3000 tiny text fields", 400, "malformed multipart body",
             up("a.png", png), fields=[(f"f{i}", "x") for i in range(3000)]),
        Case("many-valid-images", f"{MAX_IMAGES} valid images (exactly the cap)", 200,
             files=[(f"{i}.png", png, "image/png") for i in range(MAX_IMAGES)]),
        Case("json-body", "a JSON body", 415, "expected multipart/form-data", body=b'{"images": []}',
             content_type="application/json"),
        Case("raw-png-body", "a raw PNG body (no multipart)", 415, "expected multipart/form-data", body=png,
             content_type="image/png"),
        Case("urlencoded", "an urlencoded form", 415, "expected multipart/form-data", body=b"images=a.png",
             content_type="application/x-www-form-urlencoded"),
        Case("no-content-type", "no Content-Type header", 415, "got content type 'none'", body=b"x"),
        Case("no-boundary", "multipart/form-data without a boundary", 400, "malformed multipart body",
             body=b"--x\r\n", content_type="multipart/form-data"),
        Case("cut-multipart", "multipart body that stops mid-part (no closing boundary)", 400, "no images",
             body=b'--b\r\nContent-Disposition: form-data; name="images"; filename="a.png"\r\n\r\n\x89PNG',
             content_type="multipart/form-data; boundary=b"),
    ]


def markdown(all_cases: list[Case]) -> str:
    rows = ["| input | status | message (fragment) |", "|---|---:|---|"]
    for c in all_cases:
        msg = f"`{c.fragment}`" if c.fragment else ("same prediction as the same pixels in a plain image" if c.same_as else "")
        msg = msg.replace("|", "\\|")  # a pipe would end the table cell
        rows.append(f"| {c.what} | {c.status} | {msg} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--markdown"]:
        print(markdown(cases()))
        return 0
    if len(argv) != 1:
        print("usage: python tests/hostile/corpus.py OUT_DIR | --markdown", file=sys.stderr)
        return 2
    out = Path(argv[0])
    for c in cases():
        for i, (name, data, _) in enumerate(c.files[:3]):
            target = out / c.name / Path(name).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    print(f"wrote the corpus under {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
