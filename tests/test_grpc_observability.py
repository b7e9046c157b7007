"""gRPC inferences in the observability and under deadlines, against a real ``bentoml serve``.

With ``tritonclient.grpc`` used unchanged: ModelInfer counts in Triton's statistics exactly as REST
inferences do (``get_inference_statistics`` over gRPC equals the REST statistics route, and the counts
equal the requests sent over both protocols); a call whose deadline passes while it is queued behind a
slow ``transfer-resnet18`` request is answered DEADLINE_EXCEEDED and never computed, and a call the
client cancels while queued is dropped (the model's ``inference_count`` says what was computed).

This process imports tritonclient's ``inference`` stubs, never the service's own
(service/grpc/protos/__init__.py says why).
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from google.protobuf.json_format import MessageToDict
from harness import BLOCKER, Blocker, photos, post_images, serve, sibling_home
from test_deadlines_http import metric

from devtools.launch import free_port

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow

SLOW = "transfer-resnet18"


@pytest.fixture(scope="module")
def server(zoo_server, tmp_path_factory):
    """One worker (a queued call and the request it waits behind meet in one batcher), gRPC on."""
    tmp = tmp_path_factory.mktemp("grpc-observability")
    port = free_port()
    env = {"MODEL_ZOO_GRPC_PORT": str(port), "MODEL_ZOO_GRPC_HOST": "127.0.0.1",
           "MODEL_ZOO_MODELS": f"mnist-mlp,{SLOW}"}
    with serve(sibling_home(zoo_server, tmp), tmp / "server.log", env) as srv:
        srv.grpc = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        yield srv
        srv.grpc.close()


def rest_stats(url: str, name: str | None = None) -> list[dict]:
    path = "/v2/models/stats" if name is None else f"/v2/models/{name}/stats"
    r = httpx.get(url + path, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["model_stats"]


def grpc_stats(client, name: str = "") -> list[dict]:
    """``get_inference_statistics`` as plain numbers (protobuf's JSON writes uint64 as strings and
    leaves zeros out: every field is written here, as the REST route writes it)."""
    response = client.get_inference_statistics(name)
    entries = MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

    def numbers(value):
        if isinstance(value, dict):
            return {k: numbers(v) for k, v in value.items()}
        if isinstance(value, list):
            return [numbers(v) for v in value]
        return int(value) if isinstance(value, str) and value.isdigit() else value

    out = numbers(entries["model_stats"])
    for entry in out:  # tritonclient's proto has response_stats (decoupled models); ours leaves it out
        assert entry.pop("response_stats") == {}
    return out


def fp32_input(x: np.ndarray):
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def images_input(files: list[tuple[str, bytes]]):
    inp = grpcclient.InferInput("images", [len(files)], "BYTES")
    inp.set_data_from_numpy(np.array([data for _, data in files], dtype=np.object_))
    return inp


def test_grpc_inferences_count_in_tritons_statistics_as_rest_ones_do(server, zoo_server):
    url, client, x = server.url, server.grpc, zoo_server.x_test.numpy()
    [before] = rest_stats(url, "mnist-mlp")
    grpc_rows, rest_rows = [1, 2, 3, 4, 5], [2, 3, 1]
    for n in grpc_rows:  # one after another: each request is a model call of its own rows
        assert client.infer("mnist-mlp", [fp32_input(x[:n])]).as_numpy("logits").shape == (n, 10)
    bad = grpcclient.InferInput("input", [1, 100], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 100), np.float32))
    with pytest.raises(InferenceServerException) as info:
        client.infer("mnist-mlp", [bad])
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    for n in rest_rows[:2]:
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, 784], "data": x[:n].ravel().tolist()}]}
        assert httpx.post(url + "/v2/models/mnist-mlp/infer", json=body, timeout=30).status_code == 200
    assert post_images(url, zoo_server.digits[: rest_rows[2]]).status_code == 200

    [grpc_after], [after] = grpc_stats(client, "mnist-mlp"), rest_stats(url, "mnist-mlp")
    assert grpc_after == after  # one set of numbers, whichever protocol reads it
    sent = len(grpc_rows) + len(rest_rows)

    def delta(*keys: str) -> int:
        a, b = after, before
        for key in keys:
            a, b = a[key], b[key]
        return a - b

    assert delta("inference_stats", "success", "count") == sent
    assert delta("inference_stats", "fail", "count") == 1  # the gRPC request of the wrong shape
    assert delta("inference_stats", "compute_infer", "count") == sent
    assert delta("inference_stats", "success", "ns") > 0
    assert delta("inference_count") == sum(grpc_rows) + sum(rest_rows)
    assert delta("execution_count") == sent
    # every served model, in the same order and with the same numbers as the REST route
    assert grpc_stats(client) == rest_stats(url)
    assert [e["name"] for e in grpc_stats(client)] == ["mnist-mlp", SLOW]


def test_statistics_of_an_unknown_model_or_version_name_the_problem(server):
    for name, version, code, fragment in [("nope", "", "NOT_FOUND", "'nope' is not in the model store"),
                                          ("mnist-mlp", "0000", "NOT_FOUND", "no version '0000'"),
                                          ("Bad.Name", "", "INVALID_ARGUMENT", "invalid model name")]:
        with pytest.raises(InferenceServerException) as info:
            server.grpc.get_inference_statistics(name, version)
        assert info.value.status() == f"StatusCode.{code}" and fragment in info.value.message(), info.value


def computed(url: str) -> int:
    """Items the slow model has computed for requests so far (Triton's ``inference_count``)."""
    return rest_stats(url, SLOW)[0]["inference_count"]


def gone_requests(url: str) -> float:
    return metric(url, "model_zoo_request_failures_total", model=SLOW, reason="client_disconnect")


def fails(url: str) -> int:
    return rest_stats(url, SLOW)[0]["inference_stats"]["fail"]["count"]


def test_a_deadline_passing_while_queued_is_answered_and_never_computed(server):
    url, client = server.url, server.grpc
    before, failed = computed(url), fails(url)
    blocker = Blocker(url)
    with pytest.raises(InferenceServerException) as info:
        client.infer(SLOW, [images_input(photos(2))], client_timeout=0.2)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
    assert not blocker.done.is_set()  # answered while the model was still busy with the blocker
    blocker.join(120)
    assert blocker.response.status_code == 200
    assert client.infer(SLOW, [images_input(photos(1))]).as_numpy("logits").shape[0] == 1  # formed after it
    assert computed(url) == before + BLOCKER + 1  # the two images of the late call never were
    assert fails(url) == failed + 1  # the server ended it too, not only the client


def test_the_oip_timeout_parameter_is_a_deadline_over_grpc_too(server):
    """tritonclient's ``timeout=`` (Triton's ``parameters.timeout``, microseconds), with no call deadline:
    answered DEADLINE_EXCEEDED naming the parameter while the model is still busy, as over REST."""
    url, client = server.url, server.grpc
    before = computed(url)
    blocker = Blocker(url)
    with pytest.raises(InferenceServerException) as info:
        client.infer(SLOW, [images_input(photos(2))], timeout=200_000)
    assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED", info.value
    assert "timeout" in info.value.message(), info.value.message()
    assert not blocker.done.is_set()  # answered while the model was still busy with the blocker
    blocker.join(120)
    assert blocker.response.status_code == 200
    assert computed(url) == before + BLOCKER  # the two images never were


def test_a_call_cancelled_while_queued_is_dropped(server):
    url, client = server.url, server.grpc
    before, failed, gone = computed(url), fails(url), gone_requests(url)
    blocker = Blocker(url)
    answers: list = []
    call = client.async_infer(SLOW, [images_input(photos(3))], callback=lambda result, error: answers.append(error))
    time.sleep(0.2)  # sent and queued behind the blocker
    call.cancel()
    assert not blocker.done.is_set()
    blocker.join(120)
    assert blocker.response.status_code == 200
    assert client.infer(SLOW, [images_input(photos(1))]).as_numpy("logits").shape[0] == 1
    assert computed(url) == before + BLOCKER + 1  # the cancelled call's three images never were
    assert fails(url) == failed + 1 and gone_requests(url) == gone + 1  # the server dropped it as a cancellation
    assert len(answers) == 1 and "CANCELLED" in str(answers[0].status())

