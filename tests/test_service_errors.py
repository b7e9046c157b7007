"""Hostile and mistaken requests against the real server: each gets a 4xx JSON naming the problem
(and the file), never a 500, and the server stays healthy. A second server with tight caps, the
TorchScript runtime and a tiny batching latency budget checks the configurable caps and that
overload answers 503 + Retry-After instead of hanging.
"""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image

from harness import eager_forecast, eager_probs, post_images, serve, sibling_home

pytestmark = pytest.mark.slow


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def assert_healthy(url: str) -> None:
    assert httpx.get(url + "/readyz").status_code == 200
    assert httpx.get(url + "/livez").status_code == 200


def upload_cases(digit: bytes) -> dict[str, tuple[list, int, str]]:
    """name -> (multipart parts, expected status, fragment of the error message)."""
    f = lambda name, data: ("images", (name, data, "image/png"))  # noqa: E731
    return {
        "empty file": ([f("empty.png", b"")], 400, "images[0] ('empty.png'): empty file"),
        "not an image": ([f("notes.png", b"just some text, not pixels")], 400, "('notes.png'): not a recognised image"),
        "truncated png": ([f("cut.png", digit[: len(digit) // 2])], 400, "('cut.png'): corrupt or truncated"),
        "bad file among good": ([f("ok.png", digit), f("ok2.png", digit), f("bad.gif", b"GIF89a\x00")], 400, "images[2] ('bad.gif')"),
        "decompression bomb": ([f("bomb.png", png(Image.new("1", (20000, 20000))))], 413, "('bomb.png'): refused as a decompression bomb"),
        "over the pixel cap": ([f("big.png", png(Image.new("L", (5000, 4000))))], 413, "over the cap of 3211264 pixels"),  # the 28x28 model's own cap
        "too many images": ([f(f"{i}.png", digit) for i in range(257)], 413, "too many images in one request: the cap is 256"),
        "over 1000 parts": ([f(f"{i}.png", digit) for i in range(1001)], 413, "too many images"),
        "text field, not a file": ([("images", (None, "http://169.254.169.254/latest"))], 400, "images[0] is a text field"),
        "wrong field name": ([("image", ("a.png", digit, "image/png"))], 400, "no images: send one or more files in the multipart field 'images' (fields sent: image)"),
    }


@pytest.mark.parametrize("case", list(upload_cases(b"")))
def test_bad_uploads_get_4xx_json_naming_the_file(zoo_server, case):
    parts, status, fragment = upload_cases(zoo_server.digits[0][1])[case]
    r = httpx.post(zoo_server.url + "/classify_digit", files=parts, timeout=60)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert fragment in r.json()["error"]
    assert_healthy(zoo_server.url)


@pytest.mark.parametrize("content_type,body,status,fragment", [
    ("application/json", b'{"images": "x"}', 415, "expected multipart/form-data"),
    ("image/png", b"\x89PNG\r\n\x1a\n", 415, "expected multipart/form-data"),
    ("multipart/form-data", b"--x\r\n", 400, "malformed multipart body"),  # no boundary parameter
    (None, b"", 415, "got content type 'none'"),
])
def test_wrong_content_types(zoo_server, content_type, body, status, fragment):
    headers = {"content-type": content_type} if content_type else {}
    r = httpx.post(zoo_server.url + "/classify_digit", content=body, headers=headers)
    assert r.status_code == status and fragment in r.json()["error"], r.text


def test_body_over_the_size_cap_is_413(zoo_server):
    big = b"\0" * (32 * 2**20 + 1)
    r = httpx.post(zoo_server.url + "/classify_digit", files=[("images", ("huge.png", big, "image/png"))], timeout=60)
    assert r.status_code == 413 and "over the cap of 33554432 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(33):
            yield b"\0" * 2**20

    r = httpx.post(zoo_server.url + "/forecast_sine", content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert r.status_code == 413 and "MODEL_ZOO_MAX_BODY_MB" in r.json()["error"]
    assert_healthy(zoo_server.url)


@pytest.mark.parametrize("body,fragment", [
    ('{"history": [0.1, 0.2, NaN], "steps": 3}', "history[2] is nan"),
    ('{"history": [0.1, Infinity], "steps": 3}', "history[1] is inf"),
    ('{"history": [0.1, 1e999], "steps": 3}', "history[1] is inf"),
    ('{"history": [0.1], "steps": 3}', "'history' must have between 2 and 400 values, got 1"),
    (json.dumps({"history": [0.0] * 401, "steps": 3}), "between 2 and 400 values, got 401"),
    ('{"history": [0.1, 0.2], "steps": 0}', "'steps' must be between 1 and 50, got 0"),
    ('{"history": [0.1, 0.2], "steps": 51}', "'steps' must be between 1 and 50, got 51"),
    ('{"history": [0.1, 0.2], "steps": 2.5}', "steps"),
    ('{"history": [0.1, 0.2], "steps": true}', "steps: Input should be a valid integer"),  # not 1
    ('{"history": [0.1, 0.2], "steps": "3"}', "steps: Input should be a valid integer"),  # not 3
    ('{"history": [true, 0.2], "steps": 2}', "history.0: Input should be a valid number"),
    ('{"history": "0.1, 0.2", "steps": 2}', "history: Input should be a valid array"),
    ('{"history": [0.1, "a"], "steps": 2}', "history.1"),
    ('{"steps": 2}', "history: Field required"),
    ("not json", "invalid forecast request"),
])
def test_bad_forecast_requests(zoo_server, body, fragment):
    r = httpx.post(zoo_server.url + "/forecast_sine", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["error"]


def test_unknown_route_and_method(zoo_server):
    assert httpx.post(zoo_server.url + "/classify_everything", json={}).status_code == 404
    assert httpx.get(zoo_server.url + "/classify_digit").status_code == 405


# ---------------------------------------------------------------------------- a second, tightly capped server


@pytest.fixture(scope="module")
def tight_server(zoo_server, tmp_path_factory):
    """Same store, TorchScript runtime, caps of 4 images / 1 MiB / 4096 pixels, 5 ms latency budget,
    two of the three stored models enabled."""
    tmp = tmp_path_factory.mktemp("tight")
    home = sibling_home(zoo_server, tmp)  # own metrics directory, same store
    log = tmp / "server.log"
    with serve(home, log, {
        "MODEL_ZOO_RUNTIME": "torchscript", "MODEL_ZOO_MAX_IMAGES": "4", "MODEL_ZOO_MAX_BODY_MB": "1",
        "MODEL_ZOO_MAX_PIXELS": "4096", "MODEL_ZOO_MAX_LATENCY_MS": "5", "MODEL_ZOO_MAX_BATCH": "4",
        "MODEL_ZOO_MODELS": "mnist-mlp,sine-rnn"}) as server:  # the transfer entry has no model.ts (exported onnx only)
        yield server.url, log


def test_torchscript_runtime_gives_the_same_answers(zoo_server, tight_server):
    url, log = tight_server
    assert "torchscript model.ts on torch:cpu" in log.read_text()
    r = post_images(url, zoo_server.digits[:4])
    assert r.status_code == 200, r.text
    probs = eager_probs(zoo_server.mlp, zoo_server.x_test[:4])
    assert [x["index"] for x in r.json()] == list(probs.argmax(1))
    np.testing.assert_allclose([x["score"] for x in r.json()], probs.max(1), atol=1e-5)
    history = [float(np.sin(0.2 * k)) for k in range(12)]
    r = httpx.post(url + "/forecast_sine", json={"history": history, "steps": 5})
    np.testing.assert_allclose(r.json()["forecast"], eager_forecast(zoo_server.rnn, history, 5), rtol=1e-4, atol=1e-5)


def test_caps_are_configurable(zoo_server, tight_server):
    url, _ = tight_server
    r = post_images(url, zoo_server.digits[:1], route="/classify_image")
    # stored but left out by MODEL_ZOO_MODELS=mnist-mlp,sine-rnn: the family route says how to load it
    assert r.status_code == 503 and "is in the model store" in r.json()["error"] and \
        "POST /v2/repository/models/transfer-resnet18/load" in r.json()["error"]
    r = post_images(url, zoo_server.digits[:5])
    assert r.status_code == 413 and "the cap is 4 (MODEL_ZOO_MAX_IMAGES)" in r.json()["error"]
    r = post_images(url, [("wide.png", png(Image.new("L", (100, 41))))])
    assert r.status_code == 413 and "100x41 = 4100 pixels is over the cap of 4096" in r.json()["error"]
    r = post_images(url, [("big.png", b"\0" * (2**20 + 10))])
    assert r.status_code == 413 and "1 MiB" in r.json()["error"]


def test_overload_answers_503_with_retry_after_not_a_hang(zoo_server, tight_server):
    url, _ = tight_server

    async def flood() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            parts = [("images", (n, d, "image/png")) for n, d in zoo_server.digits[:4]]
            return await asyncio.gather(*(client.post("/classify_digit", files=parts) for _ in range(60)))

    responses = asyncio.run(flood())
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503}, statuses
    shed = [r for r in responses if r.status_code == 503]
    assert shed, "a 5 ms budget with 60 concurrent requests should shed some load"
    assert all("overloaded" in r.json()["error"] and r.headers.get("retry-after") == "1" for r in shed)
    assert_healthy(url)
    assert post_images(url, zoo_server.digits[:1]).status_code == 200  # and it recovers
