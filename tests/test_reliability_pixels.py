"""Decoded size of uploads (service/core/limits.py, ImageClassifier.prepare): caps from the headers, and
decoding on the event loop only when the request is small in bytes *and* in pixels.

A 702-byte lossless WebP decodes to 16.7 M pixels; with a byte-size rule alone such files were decoded
on the event loop and blocked every other request for seconds (issue 18). Over HTTP the hostile corpus
(tests/hostile/corpus.py: webp-4096-lossless, request-pixel-budget) checks the 413s.
"""

from __future__ import annotations

import asyncio
import io
import time

import pytest
from PIL import Image

from service.config import Settings
from service.core.classifier import ImageClassifier
from service.core.preprocess import preprocess_many
from service.errors import TooLarge
from training.specs import make_spec


def classifier(family: str = "mnist-mlp", **settings) -> ImageClassifier:
    """The real classifier's preparation path, without a session (prepare never calls the model)."""
    clf = object.__new__(ImageClassifier)
    clf.spec = make_spec(family, **({"classes": ["a", "b"]} if family == "transfer-resnet18" else {}))
    clf.settings = Settings(**settings)
    return clf


def png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 30).save(buf, "PNG")
    return buf.getvalue()


def webp(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (width, height), 30).save(buf, "WEBP", lossless=True)
    return buf.getvalue()


def test_each_models_pixel_cap_follows_its_input_size():
    assert classifier().pixel_cap == 4096 * 28 * 28  # 3.2 M: a 28x28 model has no use for 16.7 M
    assert classifier("transfer-resnet18").pixel_cap == 4096 * 4096  # 224x224: MODEL_ZOO_MAX_PIXELS decides
    assert classifier(max_pixels=5000).pixel_cap == 5000


def test_caps_are_checked_from_the_headers_before_decoding():
    clf = classifier(max_request_pixels=3_000_000)
    small = [("a.png", png(1000, 1000))] * 3  # 3 M pixels: exactly the budget
    assert clf.measure(small) == 3_000_000
    with pytest.raises(TooLarge, match="3100000 pixels, over the cap of 3000000 per request"):
        clf.measure(small + [("b.png", png(100, 1000))])
    with pytest.raises(TooLarge, match=r"images\[1\] \('big.png'\): 2000x2000 = 4000000 pixels is over the cap of 3211264"):
        classifier().measure([("ok.png", png(28, 28)), ("big.png", png(2000, 2000))])


def test_small_files_that_decode_to_many_pixels_are_decoded_off_the_event_loop():
    files = [(f"{i}.webp", webp(1700, 1700)) for i in range(8)]  # a few hundred bytes each, 2.9 M pixels
    assert sum(len(d) for _, d in files) < 16 * 1024
    clf = classifier()
    t0 = time.perf_counter()
    preprocess_many(files, clf.spec.image, clf.pixel_cap)
    decode_s = time.perf_counter() - t0

    async def run() -> float:
        worst, done = 0.0, False

        async def ticker() -> None:
            nonlocal worst
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                worst, last = max(worst, now - last), now

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.02)
        x = await clf.prepare(files)
        done = True
        await tick
        assert x.shape == (8, 784)
        return worst

    worst = asyncio.run(run())
    assert worst < max(0.5 * decode_s, 0.05), f"event loop blocked {worst:.3f} s of a {decode_s:.3f} s decode"


def test_a_few_small_digits_are_still_decoded_inline():
    from service.core.limits import INLINE_DECODE_PIXELS

    files = [(f"{i}.png", png(28, 28)) for i in range(8)]
    clf = classifier()
    assert clf.measure(files) <= INLINE_DECODE_PIXELS

    async def run():
        task = asyncio.ensure_future(clf.prepare(files))
        await asyncio.sleep(0)  # one step of the loop: an inline decode is finished by then
        return task.done()

    assert asyncio.run(run())
