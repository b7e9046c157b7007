"""Integration: the REST endpoints of a real ``bentoml serve`` (``zoo_server`` in conftest.py), compared
with eager PyTorch on real MNIST test images and the same sine checkpoint."""

from __future__ import annotations

import asyncio
import io
import re

import httpx
import numpy as np
import pytest
from PIL import Image

from harness import eager_forecast, eager_probs, post_images

pytestmark = pytest.mark.slow


# ---------------------------------------------------------------------------- health


def test_readiness_turns_200_only_after_warmup(zoo_server):
    assert zoo_server.early, "never saw the server before warm-up finished"
    assert all(live == 200 and ready == 503 for live, ready, _ in zoo_server.early)
    assert zoo_server.early[0][2] == 400  # OIP readiness: 4xx means false (it may flip during the last poll)
    assert httpx.get(zoo_server.url + "/readyz").status_code == 200
    assert httpx.get(zoo_server.url + "/v2/health/ready").status_code == 200
    log = zoo_server.log.read_text()
    assert "mnist-mlp:" in log and "CPUExecutionProvider" in log  # the provider actually used is logged


# ---------------------------------------------------------------------------- classification


def test_classify_digit_many_images_match_eager(zoo_server):
    r = post_images(zoo_server.url, zoo_server.digits)
    assert r.status_code == 200, r.text
    results = r.json()
    assert len(results) == 64
    probs = eager_probs(zoo_server.mlp, zoo_server.x_test)
    for res, p, y in zip(results, probs, zoo_server.y_test.tolist()):
        assert res["index"] == int(p.argmax()) and res["label"] == str(res["index"])
        assert res["score"] == pytest.approx(p.max(), abs=1e-4)
        assert [e["index"] for e in res["top_k"]] == list(np.argsort(-p, kind="stable")[:5])
        assert res["top_k"][0] == {"label": res["label"], "index": res["index"], "score": res["score"]}
    accuracy = np.mean([res["index"] == y for res, y in zip(results, zoo_server.y_test.tolist())])
    assert accuracy > 0.8  # a briefly trained MLP on real digits: the pipeline keeps what it learned


@pytest.mark.parametrize("convert", ["RGB", "P", "LA", "I;16", "CMYK", "JPEG-as-png"])
def test_colour_modes_and_formats_are_converted(zoo_server, convert):
    name, data = zoo_server.digits[0]
    img = Image.open(io.BytesIO(data))
    buf = io.BytesIO()
    if convert == "I;16":
        Image.fromarray(np.asarray(img).astype(np.uint16) * 257).save(buf, "PNG")  # 16-bit grayscale PNG
    elif convert in ("CMYK", "JPEG-as-png"):
        img.convert("CMYK" if convert == "CMYK" else "L").save(buf, "JPEG", quality=98)
    else:
        img.convert(convert).save(buf, "PNG")
    r = post_images(zoo_server.url, [("digit.png", buf.getvalue())])  # declared image/png in every case
    assert r.status_code == 200, r.text
    expected = int(eager_probs(zoo_server.mlp, zoo_server.x_test[:1]).argmax())
    assert r.json()[0]["index"] == expected


def test_concurrent_requests_are_batched_together(zoo_server):
    def batch_stats() -> tuple[float, float]:
        text = httpx.get(zoo_server.url + "/metrics").text
        count = float(re.search(r'model_zoo_batch_size_count\{model="mnist-mlp"\} (\S+)', text).group(1))
        total = float(re.search(r'model_zoo_batch_size_sum\{model="mnist-mlp"\} (\S+)', text).group(1))
        return count, total

    count0, sum0 = batch_stats()

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=zoo_server.url, timeout=60) as client:
            reqs = []
            for i in range(48):
                name, data = zoo_server.digits[i % 64]
                reqs.append(client.post("/classify_digit", files=[("images", (name, data, "image/png"))]))
            return await asyncio.gather(*reqs)

    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200][:3]
    for i, r in enumerate(responses):  # each request got its own image's answer back
        assert r.json()[0]["index"] == int(eager_probs(zoo_server.mlp, zoo_server.x_test[i % 64:i % 64 + 1]).argmax())
    count1, sum1 = batch_stats()
    assert sum1 - sum0 == 48  # every image went through the batcher exactly once
    assert count1 - count0 < 48, "no two requests shared a model call"
    text = httpx.get(zoo_server.url + "/metrics").text
    assert 'model_zoo_inference_seconds_count{model="mnist-mlp"}' in text
    assert "bentoml_service_request_duration_seconds" in text  # BentoML's own metrics are still there


# ---------------------------------------------------------------------------- forecast


def test_forecast_matches_eager_rollout(zoo_server):
    history = [float(np.sin(0.1 * 1.3 * k)) for k in range(40)]
    r = httpx.post(zoo_server.url + "/forecast_sine", json={"history": history, "steps": 25})
    assert r.status_code == 200, r.text
    forecast = np.asarray(r.json()["forecast"])
    assert forecast.shape == (25,)
    np.testing.assert_allclose(forecast, eager_forecast(zoo_server.rnn, history, 25), rtol=1e-4, atol=1e-5)


def test_original_sine_example_forecasts_within_target(zoo_server):
    """sin(t) at 50 evenly spaced points over 10 time units (0.204 rad per step), from several start points:
    the served model's 40-step rollout after the first 10 points has MSE <= 1e-3, on both routes."""
    t = np.linspace(0, 10, 50)
    for t0 in np.arange(6) * 2 * np.pi / 6:
        x = np.sin(t0 + t)
        for route in ("/forecast_sine", "/models/sine-rnn/forecast"):
            r = httpx.post(zoo_server.url + route, json={"history": x[:10].tolist(), "steps": 40})
            assert r.status_code == 200, r.text
            body = r.json()
            assert "warning" not in body, body  # inside the trained band
            mse = float(np.mean((np.asarray(body["forecast"]) - x[10:]) ** 2))
            assert mse <= 1e-3, f"start {t0:.2f} via {route}: rollout MSE {mse:.2e}"


@pytest.mark.parametrize("history, says", [
    (np.sin(0.5 * np.arange(20)), "angular frequency 5 rad per time unit"),  # 0.5 rad per step, far above the band
    (3.0 * np.sin(0.204 * np.arange(20)), "amplitude 3 is outside"),
    ([0.1, 0.2, 0.3], "too few to check"),
])
def test_forecast_outside_the_band_comes_with_a_warning(zoo_server, history, says):
    for route in ("/forecast_sine", "/models/sine-rnn/forecast"):
        r = httpx.post(zoo_server.url + route, json={"history": list(map(float, history)), "steps": 5})
        assert r.status_code == 200, r.text
        assert len(r.json()["forecast"]) == 5
        assert says in r.json().get("warning", ""), r.json()


def test_missing_model_answers_503_with_how_to(zoo_server):
    r = post_images(zoo_server.url, zoo_server.digits[:1], route="/classify_cifar10")
    assert r.status_code == 503
    assert "not in the model store" in r.json()["error"] and "make models" in r.json()["error"]
    assert "CIFAR-10" in r.json()["error"]


def test_classify_image_rgb_resize_crop_matches_eager_transfer_model(zoo_server):
    """Non-square RGB, grayscale and RGBA uploads -> resize 256 + center crop 224 -> ResNet-18, as training's
    eval transform (torchvision) + eager PyTorch compute it; labels are the ImageFolder's classes."""
    import torch
    from training.data import transfer_transform

    rng = np.random.default_rng(7)
    images = [Image.fromarray(rng.integers(0, 256, (180, 300, 3), dtype=np.uint8), "RGB"),
              Image.fromarray(rng.integers(0, 256, (400, 260), dtype=np.uint8), "L"),
              Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), "RGB")]
    files = []
    for i, img in enumerate(images):
        buf = io.BytesIO()
        img.save(buf, "PNG")
        files.append((f"photo{i}.png", buf.getvalue()))
    r = post_images(zoo_server.url, files, route="/classify_image")
    assert r.status_code == 200, r.text
    with torch.no_grad():
        x = torch.stack([transfer_transform(False)(img) for img in images])  # (3, 3, 224, 224)
        probs = torch.softmax(zoo_server.transfer(x).double(), dim=1).numpy()
    for res, p in zip(r.json(), probs):
        assert res["index"] == int(p.argmax()) and res["label"] == zoo_server.classes[res["index"]]
        assert res["score"] == pytest.approx(p.max(), abs=1e-4)
        assert len(res["top_k"]) == 3  # fewer classes than 5
