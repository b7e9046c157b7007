"""Deadlines, the queue policy and the family routes over HTTP, against a real ``bentoml serve`` (issue 31).

The shared server checks what needs no load: the family routes answer exactly as ``/models/{name}/...``
(answers and errors), malformed deadlines are 400s saying the format, and a request whose deadline has
passed is a 504 naming it and is never computed (the model's ``model_zoo_batch_size`` sum does not move).
A server of this module's own, with a bound on ``transfer-resnet18``'s queue (a ResNet-18 at 224x224 is
slow enough on CPU for requests to queue behind one large request), checks the 429, a deadline passing
while queued, and a client that disconnects while queued.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from harness import BLOCKER, SLOW_ROUTE, Blocker, photos, post_images, serve, sibling_home
from prometheus_client.parser import text_string_to_metric_families


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample on ``/metrics`` (0 when the series does not exist yet)."""
    text = httpx.get(url + "/metrics", timeout=30).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def computed(url: str, model: str) -> float:
    """Items the model has computed so far (the batch-size histogram's sum)."""
    return metric(url, "model_zoo_batch_size_sum", model=model)


def dropped(url: str, model: str, reason: str) -> float:
    return metric(url, "model_zoo_dropped_requests_total", model=model, reason=reason)


def pair(a: httpx.Response, b: httpx.Response) -> tuple:
    return (a.status_code, a.json()), (b.status_code, b.json())


# ---------------------------------------------------------------- the family routes are /models/{name}/...


def test_family_routes_answer_as_models_name_does_errors_included(zoo_server):
    url = zoo_server.url
    digits = zoo_server.digits[:5]
    cases = [digits, digits[:1], [("bad.png", b"not an image")], [("empty.png", b"")],
             [digits[0], ("trunc.png", digits[1][1][:40])]]
    for files in cases:
        alias, named = post_images(url, files), post_images(url, files, route="/models/mnist-mlp/classify")
        a, b = pair(alias, named)
        assert a == b, (files[0][0], a, b)
    assert post_images(url, digits).json()[0]["label"] == post_images(url, digits, "/models/mnist-mlp/classify").json()[0]["label"]
    for kwargs in ({"data": {"images": "text"}}, {"content": b"x", "headers": {"content-type": "text/plain"}},
                   {"files": []}):
        a, b = pair(httpx.post(url + "/classify_digit", **kwargs), httpx.post(url + "/models/mnist-mlp/classify", **kwargs))
        assert a == b and a[0] in (400, 415), (kwargs, a, b)
    history = [round(float(np.sin(0.204 * i)), 4) for i in range(20)]
    for body in ({"history": history, "steps": 5}, {"history": history, "steps": 0}, {"history": "x"}, {}):
        a, b = pair(httpx.post(url + "/forecast_sine", json=body), httpx.post(url + "/models/sine-rnn/forecast", json=body))
        assert a == b, (body, a, b)
    bad = {"Request-Timeout": "soon"}
    a, b = pair(post_images(url, digits[:1], headers=bad), post_images(url, digits[:1], "/models/mnist-mlp/classify", headers=bad))
    assert a == b and a[0] == 400


def test_family_routes_are_in_the_openapi_document_with_the_timeout_header(zoo_server):
    doc = httpx.get(zoo_server.url + "/docs.json").json()
    op = doc["paths"]["/classify_digit"]["post"]
    assert "multipart/form-data" in op["requestBody"]["content"] and "504" in op["responses"]
    assert any(p["name"] == "Request-Timeout" and p["in"] == "header" for p in op["parameters"])
    assert "timeout" in str(doc["paths"]["/v2/models/{name}/infer"]["post"]["requestBody"])


# ---------------------------------------------------------------- deadlines on the shared server


@pytest.mark.parametrize("value", ["soon", "-1", "0", "1e3", "inf"])
def test_a_malformed_request_timeout_is_a_400_saying_the_format(zoo_server, value):
    r = post_images(zoo_server.url, zoo_server.digits[:1], headers={"Request-Timeout": value})
    assert r.status_code == 400
    assert r.json()["error"] == f"Request-Timeout header {value!r} is not valid: give seconds as a positive " \
                                "decimal number, e.g. 0.25 or 2"


@pytest.mark.parametrize("value", [-5, 1.5, "100", True])
def test_a_malformed_oip_timeout_is_a_400_saying_the_format(zoo_server, value):
    body = {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}],
            "parameters": {"timeout": value}}
    r = httpx.post(zoo_server.url + "/v2/models/mnist-mlp/infer", json=body)
    assert r.status_code == 400 and "parameters.timeout" in r.json()["error"]
    assert "microseconds as a non-negative integer" in r.json()["error"]


def test_a_request_whose_deadline_passed_is_a_504_naming_it_and_is_never_computed(zoo_server):
    url = zoo_server.url
    before, before_504 = computed(url, "mnist-mlp"), dropped(url, "mnist-mlp", "deadline")
    r = post_images(url, zoo_server.digits[:3], headers={"Request-Timeout": "0.000001"})  # 1 us: past on arrival
    assert r.status_code == 504 and r.headers["content-type"] == "application/json"
    assert r.json()["error"] == ("model 'mnist-mlp': the request's deadline passed before its answer was ready "
                                 "(Request-Timeout header of 0.001 ms)")
    body = {"inputs": [{"name": "input", "shape": [2, 784], "datatype": "FP32", "data": [0.0] * 1568}],
            "parameters": {"timeout": 1}}
    r = httpx.post(url + "/v2/models/mnist-mlp/infer", json=body)
    assert r.status_code == 504 and "parameters.timeout of 0.001 ms" in r.json()["error"]
    assert computed(url, "mnist-mlp") == before  # neither was computed
    assert dropped(url, "mnist-mlp", "deadline") == before_504 + 2
    ok = post_images(url, zoo_server.digits[:3], headers={"Request-Timeout": "30"})
    body["parameters"]["timeout"] = 30_000_000
    assert ok.status_code == 200 and httpx.post(url + "/v2/models/mnist-mlp/infer", json=body).status_code == 200
    assert computed(url, "mnist-mlp") == before + 5


# ---------------------------------------------------------------- a slow model with a bounded queue

@pytest.fixture(scope="module")
def slow_server(zoo_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deadlines")
    env = {"MODEL_ZOO_MODELS": "transfer-resnet18", "MODEL_ZOO_MAX_QUEUE": "transfer-resnet18=2"}
    with serve(sibling_home(zoo_server, tmp), tmp / "server.log", env) as server:
        yield server


def test_a_deadline_passing_while_queued_is_answered_at_once_and_never_computed(slow_server):
    url = slow_server.url
    before = computed(url, "transfer-resnet18")
    blocker = Blocker(url)
    r = post_images(url, photos(2), route=SLOW_ROUTE, headers={"Request-Timeout": "0.2"})
    assert r.status_code == 504 and "Request-Timeout header of 200 ms" in r.json()["error"]
    assert not blocker.done.is_set()  # answered while the model was still busy with the blocker
    blocker.join(120)
    assert blocker.response.status_code == 200
    assert post_images(url, photos(1), route=SLOW_ROUTE).status_code == 200  # formed after the dropped one
    assert computed(url, "transfer-resnet18") == before + BLOCKER + 1  # the 504's two images never were
    assert dropped(url, "transfer-resnet18", "deadline") >= 1


def test_a_client_that_disconnects_while_queued_is_never_computed(slow_server):
    url = slow_server.url
    before, gone_before = computed(url, "transfer-resnet18"), dropped(url, "transfer-resnet18", "disconnected")
    blocker = Blocker(url)
    request = httpx.Request("POST", url + SLOW_ROUTE, files=[("images", (n, d, "image/png")) for n, d in photos(3)])
    head = f"POST {SLOW_ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() != "host") + "\r\n"
    with socket.create_connection(("127.0.0.1", slow_server.port)) as sock:
        sock.sendall(head.encode() + request.read())
        time.sleep(0.2)  # read and queued behind the blocker
    assert not blocker.done.is_set()
    blocker.join(120)
    assert blocker.response.status_code == 200
    assert post_images(url, photos(1), route=SLOW_ROUTE).status_code == 200
    assert dropped(url, "transfer-resnet18", "disconnected") == gone_before + 1
    assert computed(url, "transfer-resnet18") == before + BLOCKER + 1


def test_a_full_queue_answers_429_with_retry_after(slow_server):
    url = slow_server.url
    full_before = dropped(url, "transfer-resnet18", "queue_full")
    blocker = Blocker(url)
    with httpx.Client(timeout=120) as client:
        results: list[httpx.Response] = []

        def send() -> None:
            results.append(client.post(url + SLOW_ROUTE, files=[("images", (n, d, "image/png")) for n, d in photos(2)]))

        threads = [threading.Thread(target=send) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    blocker.join(120)
    statuses = sorted(r.status_code for r in results)
    # the blocker is being computed: two are queued, the others find the queue full (one may come late)
    assert len(statuses) == 5 and statuses.count(429) >= 2 and statuses.count(200) >= 2, statuses
    assert set(statuses) == {200, 429}, statuses
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert "2 requests are already queued (MODEL_ZOO_MAX_QUEUE)" in refused.json()["error"]
    assert dropped(url, "transfer-resnet18", "queue_full") == full_before + statuses.count(429)


def test_the_log_has_no_traceback(slow_server):
    assert "Traceback" not in Path(slow_server.log).read_text()
