"""The hostile OIP corpus (tests/hostile/oip_corpus.py): in process through the codec, and over HTTP.

Each case once answered a plain-text 500 or cost the server far more than it sent (issue 18); each
must now be its documented 4xx JSON error, answered quickly, and the server must stay ready. Plus the
tensors the service *does* accept: flat data and data nested exactly as the shape.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from service.errors import BadRequest
from service.http.oip_codec import parse_infer

sys.path.insert(0, str(Path(__file__).parent / "hostile"))
import oip_corpus  # noqa: E402

CASES = {c.name: c for c in oip_corpus.cases()}
CODEC = ["huge-zero-shape", "datatype-list", "int-4301-digits", "nested-100k", "output-params-string",
         "ragged", "ragged-same-count", "too-many-dims"]  # refused by the codec itself, no model needed


@pytest.mark.parametrize("name", CODEC)
def test_codec_refuses_with_a_named_400(name):
    case = CASES[name]
    with pytest.raises(BadRequest) as err:
        parse_infer(case.body, case.headers.get("inference-header-content-length"))
    assert case.fragment in err.value.message and len(err.value.message) < 500


def test_codec_accepts_flat_and_exactly_nested_data():
    for data in ([1, 2, 3, 4, 5, 6], [[1, 2], [3, 4], [5, 6]]):
        req = parse_infer(json.dumps({"inputs": [{"name": "a", "shape": [3, 2], "datatype": "INT32", "data": data}]})
                          .encode(), None)
        np.testing.assert_array_equal(req.inputs["a"].value, [[1, 2], [3, 4], [5, 6]])
    deep = json.dumps({"inputs": [{"name": "x", "shape": [1, 2, 1], "datatype": "FP32", "data": [[[0.5], [1.5]]]}]})
    assert parse_infer(deep.encode(), None).inputs["x"].value.shape == (1, 2, 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_hostile_oip_request_gets_its_documented_answer(zoo_server, name):
    case = CASES[name]
    t0 = time.monotonic()
    r = httpx.post(f"{zoo_server.url}/v2/models/{case.model}/infer", content=case.body,
                   headers={"content-type": "application/json", **case.headers}, timeout=60)
    seconds = time.monotonic() - t0
    assert r.status_code == case.status, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    assert set(r.json()) == {"error"} and case.fragment in r.json()["error"], r.json()
    assert len(r.content) < 2000 and seconds < 10, (len(r.content), seconds)  # refused, not computed
    assert httpx.get(zoo_server.url + "/readyz", timeout=10).status_code == 200


@pytest.mark.slow
def test_the_largest_accepted_forecast_batch_is_answered_and_the_loop_stays_free(zoo_server):
    """N x T at the cap (256 x 256): answered in full; /livez answers quickly meanwhile (encoded off the loop)."""
    import threading

    body, headers = oip_corpus.binary([("x", "FP32", [256, 256, 1], np.zeros(256 * 256, "<f4").tobytes())])
    live: list[float] = []

    def probe() -> None:
        for _ in range(10):
            t0 = time.monotonic()
            httpx.get(zoo_server.url + "/livez", timeout=30)
            live.append(time.monotonic() - t0)

    thread = threading.Thread(target=probe)
    thread.start()
    r = httpx.post(zoo_server.url + "/v2/models/sine-rnn/infer", content=body, headers=headers, timeout=60)
    thread.join()
    assert r.status_code == 200, r.text[:300]
    y = next(o for o in r.json()["outputs"] if o["name"] == "y")
    assert y["shape"] == [256, 256, 1] and len(y["data"]) == 256 * 256
    assert max(live) < 5.0, live


@pytest.mark.slow
def test_a_large_json_body_is_parsed_off_the_event_loop(zoo_server):
    """~30 MB of JSON numbers (under the body cap): the parse and the 400 happen in a thread, /livez answers."""
    import threading

    body = b'{"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [' + \
        b"0," * 14_000_000 + b"0]}]}"
    live: list[float] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            httpx.get(zoo_server.url + "/livez", timeout=60)
            live.append(time.monotonic() - t0)
            time.sleep(0.05)

    thread = threading.Thread(target=probe)
    thread.start()
    t0 = time.monotonic()
    r = httpx.post(zoo_server.url + "/v2/models/mnist-mlp/infer", content=body, timeout=120)
    took = time.monotonic() - t0
    done.set()
    thread.join()
    assert r.status_code == 400 and "needs 784 elements" in r.json()["error"], r.text[:300]
    # json.loads holds the GIL while it parses, so /livez still waits for that part; on the event loop
    # it would wait for the whole request. Half of it was too tight on a slow VM (0.54-0.56 in 2 of 3 runs).
    assert len(live) >= 3 and max(live) < max(0.75 * took, 0.3), (max(live), took)
