"""gRPC (KServe v2 / Triton ``inference.GRPCInferenceService``) against a real ``bentoml serve``, with
NVIDIA's standard client ``tritonclient.grpc`` used unchanged: health, metadata, inference on real MNIST
test digits (compared with eager PyTorch and with the REST answers), BYTES images and the classification
extension, the repository extension, the bearer token, and hostile requests (each answered with the
status and a message naming the problem, the server serving on after them).

This process imports tritonclient's generated ``inference`` stubs, never the service's own
(service/grpc/protos/__init__.py says why).
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devtools.faults import startup_failure
from devtools.launch import free_port
from harness import eager_probs, post_images, serve, sibling_home

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.grpc import service_pb2, service_pb2_grpc  # noqa: E402
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow

TOKEN = "grpc-test-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}
MAX_BODY_MB = 1  # the server's body cap, so an oversized message is cheap to send


class GrpcZoo:
    def __init__(self, server, grpc_port: int, zoo) -> None:
        self.server, self.zoo, self.port = server, zoo, grpc_port
        self.url = server.url
        self.target = f"127.0.0.1:{grpc_port}"
        self.client = grpcclient.InferenceServerClient(self.target)
        self.channel = grpc.insecure_channel(self.target)
        self.stub = service_pb2_grpc.GRPCInferenceServiceStub(self.channel)  # tritonclient's own stubs

    def rest(self, method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, self.url + path, headers={"authorization": f"Bearer {TOKEN}"}, timeout=60, **kw)


@pytest.fixture(scope="module")
def grpc_zoo(zoo_server, tmp_path_factory):
    """A server over the shared store with gRPC on and a token set (the token applies to every call)."""
    tmp = tmp_path_factory.mktemp("grpc")
    port = free_port()
    env = {"MODEL_ZOO_GRPC_PORT": str(port), "MODEL_ZOO_GRPC_HOST": "127.0.0.1",
           "MODEL_ZOO_API_TOKEN": TOKEN, "MODEL_ZOO_MAX_BODY_MB": str(MAX_BODY_MB)}
    with serve(sibling_home(zoo_server, tmp), tmp / "server.log", env) as server:
        z = GrpcZoo(server, port, zoo_server)
        yield z
        z.client.close()
        z.channel.close()


def fp32_input(x: np.ndarray, name: str = "input"):
    inp = grpcclient.InferInput(name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return inp


def images_input(files: list[bytes]):
    inp = grpcclient.InferInput("images", [len(files)], "BYTES")
    inp.set_data_from_numpy(np.array(files, dtype=np.object_))
    return inp


def refused(call, code: str, *fragments: str) -> str:
    """``call()`` fails with gRPC status ``code`` and a message containing every fragment."""
    with pytest.raises(InferenceServerException) as info:
        call()
    status, message = info.value.status(), info.value.message()
    assert status == f"StatusCode.{code}", (status, message)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_health_live_ready_without_a_token(grpc_zoo):
    health = health_pb2_grpc.HealthStub(grpc_zoo.channel)
    for service in ("", "inference.GRPCInferenceService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert grpc_zoo.client.is_server_live() and grpc_zoo.client.is_server_ready()


def test_server_and_model_metadata_equal_rest(grpc_zoo):
    meta = grpc_zoo.client.get_server_metadata(headers=AUTH, as_json=True)
    rest = grpc_zoo.rest("GET", "/v2").json()
    assert meta["name"] == rest["name"] == "model_zoo" and meta["extensions"] == rest["extensions"]
    for name in ("mnist-mlp", "sine-rnn", "transfer-resnet18"):
        got = grpc_zoo.client.get_model_metadata(name, headers=AUTH, as_json=True)
        want = grpc_zoo.rest("GET", f"/v2/models/{name}").json()
        assert got["name"] == name and got["versions"] == want["versions"] and got["platform"] == want["platform"]
        for side in ("inputs", "outputs"):  # protobuf's JSON writes int64 shapes as strings
            assert [{**t, "shape": [int(d) for d in t["shape"]]} for t in got[side]] == want[side]
        assert grpc_zoo.client.is_model_ready(name, headers=AUTH)
        assert grpc_zoo.client.is_model_ready(name, want["versions"][0], headers=AUTH)


def test_raw_fp32_infer_on_real_digits_matches_eager_and_rest(grpc_zoo):
    zoo = grpc_zoo.zoo
    x = zoo.x_test.numpy()  # 64 real MNIST test images, preprocessed as training does
    result = grpc_zoo.client.infer("mnist-mlp", [fp32_input(x)], request_id="d64", headers=AUTH)
    logits = result.as_numpy("logits")
    assert logits.shape == (64, 10) and logits.dtype == np.float32
    assert result.get_response().id == "d64" and result.get_response().model_name == "mnist-mlp"
    with np.errstate(all="ignore"):
        expected = zoo.mlp(zoo.x_test).detach().numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    rest = post_images(grpc_zoo.url, zoo.digits, headers=AUTH)  # the same digits as PNG files over REST
    assert rest.status_code == 200, rest.text
    assert [r["index"] for r in rest.json()] == logits.argmax(1).tolist()
    assert (logits.argmax(1) == zoo.y_test.numpy()).mean() > 0.8  # a trained model on real digits


def test_typed_contents_equal_raw(grpc_zoo):
    x = grpc_zoo.zoo.x_test[:3].numpy()
    request = service_pb2.ModelInferRequest(model_name="mnist-mlp")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[3, 784])
    tensor.contents.fp32_contents.extend(x.reshape(-1).tolist())
    answer = grpc_zoo.stub.ModelInfer(request, metadata=list(AUTH.items()), timeout=30)
    assert answer.outputs[0].name == "logits" and list(answer.outputs[0].shape) == [3, 10]
    typed = np.frombuffer(answer.raw_output_contents[0], dtype="<f4").reshape(3, 10)
    raw = grpc_zoo.client.infer("mnist-mlp", [fp32_input(x)], headers=AUTH).as_numpy("logits")
    np.testing.assert_array_equal(typed, raw)


def test_bytes_images_with_classification_equal_rest(grpc_zoo):
    zoo = grpc_zoo.zoo
    files = [data for _, data in zoo.digits[:4]]
    out = grpcclient.InferRequestedOutput("logits", class_count=3)
    top = grpc_zoo.client.infer("mnist-mlp", [images_input(files)], outputs=[out], headers=AUTH).as_numpy("logits")
    assert top.shape == (4, 3)
    rest = post_images(grpc_zoo.url, zoo.digits[:4], headers=AUTH).json()
    for row, answer in zip(top, rest):
        entries = [s.decode().split(":") for s in row]
        assert [int(i) for _, i, _ in entries] == [e["index"] for e in answer["top_k"][:3]]
        assert [label for _, _, label in entries] == [e["label"] for e in answer["top_k"][:3]]
        assert [float(s) for s, _, _ in entries] == pytest.approx([e["score"] for e in answer["top_k"][:3]], abs=1e-5)
    probs = eager_probs(zoo.mlp, zoo.x_test[:4])
    assert [int(r[0].decode().split(":")[1]) for r in top] == probs.argmax(1).tolist()


def test_forecaster_step_graph_equals_rest(grpc_zoo):
    x = np.sin(0.15 * np.arange(20, dtype=np.float32)).reshape(1, 20, 1)
    got = grpc_zoo.client.infer("sine-rnn", [fp32_input(x, "x")], headers=AUTH)
    body = {"inputs": [{"name": "x", "shape": [1, 20, 1], "datatype": "FP32", "data": x.reshape(-1).tolist()}]}
    want = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
            for o in grpc_zoo.rest("POST", "/v2/models/sine-rnn/infer", json=body).json()["outputs"]}
    assert set(want) == {o.name for o in got.get_response().outputs}
    for name, value in want.items():
        np.testing.assert_allclose(got.as_numpy(name), value, rtol=1e-6, atol=1e-6)


def test_repository_index_unload_load(grpc_zoo):
    client = grpc_zoo.client
    index = client.get_model_repository_index(headers=AUTH, as_json=True)["models"]
    rest = grpc_zoo.rest("POST", "/v2/repository/index").json()
    assert [(m["name"], m["version"], m["state"]) for m in index] == [(m["name"], m["version"], m["state"]) for m in rest]
    client.unload_model("transfer-resnet18", headers=AUTH)
    assert not client.is_model_ready("transfer-resnet18", headers=AUTH)
    states = {m["name"]: m for m in client.get_model_repository_index(headers=AUTH, as_json=True)["models"]}
    assert states["transfer-resnet18"]["state"] == "UNAVAILABLE" and states["transfer-resnet18"]["reason"] == "unloaded"
    refused(lambda: client.infer("transfer-resnet18", [images_input([grpc_zoo.zoo.digits[0][1]])], headers=AUTH),
            "NOT_FOUND", "not loaded", "load")
    client.load_model("transfer-resnet18", headers=AUTH)
    assert client.is_model_ready("transfer-resnet18", headers=AUTH)
    assert grpc_zoo.rest("GET", "/v2/models/transfer-resnet18/ready").status_code == 200
    refused(lambda: client.load_model("nope", headers=AUTH), "NOT_FOUND", "'nope' is not in the model store")


def test_token_required_except_health(grpc_zoo):
    client = grpc_zoo.client
    x = grpc_zoo.zoo.x_test[:1].numpy()
    for headers in (None, {"authorization": "Bearer wrong"}, {"authorization": TOKEN}):
        refused(lambda: client.get_model_metadata("mnist-mlp", headers=headers), "UNAUTHENTICATED", "Bearer")
        refused(lambda: client.infer("mnist-mlp", [fp32_input(x)], headers=headers), "UNAUTHENTICATED")
        refused(lambda: client.unload_model("mnist-mlp", headers=headers), "UNAUTHENTICATED")
    assert client.is_model_ready("mnist-mlp", headers=AUTH)  # nothing was unloaded


def _raw_request(name: str, datatype: str, shape: list[int], raw: bytes, model: str = "mnist-mlp", **timeout):
    """``timeout``: Triton's ``parameters.timeout`` as one InferParameter field (``int64_param=...``)."""
    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=shape)
    request.raw_input_contents.append(raw)
    if timeout:
        request.parameters["timeout"].CopyFrom(service_pb2.InferParameter(**timeout))
    return request


@pytest.mark.parametrize("request_, code, fragments", [
    (_raw_request("input", "INT32", [1, 784], b"\0" * 3136), "INVALID_ARGUMENT", ("datatype must be FP32",)),
    (_raw_request("input", "FP32", [1, 100], b"\0" * 400), "INVALID_ARGUMENT", ("shape [1, 100] does not match",)),
    (_raw_request("input", "FP32", [1, 784], b"\0" * 100), "INVALID_ARGUMENT", ("needs 3136 bytes, got 100",)),
    (_raw_request("input", "FP99", [1, 784], b""), "INVALID_ARGUMENT", ("unknown datatype 'FP99'",)),
    (_raw_request("input", "FP32", [-1, 784], b""), "INVALID_ARGUMENT", ("non-negative integers",)),
    (_raw_request("input", "FP32", [2**31 - 1, 784], b"\0" * 3136), "INVALID_ARGUMENT", ("bytes, got 3136",)),
    (_raw_request("input", "FP32", [300, 784], b"\0" * (300 * 3136)), "RESOURCE_EXHAUSTED",
     ("300 items is over the cap of 256", "MODEL_ZOO_MAX_IMAGES")),
    (_raw_request("images", "BYTES", [1], struct.pack("<I", 9) + b"not a png"), "INVALID_ARGUMENT", ("image",)),
    (_raw_request("images", "BYTES", [2], struct.pack("<I", 99) + b"short"), "INVALID_ARGUMENT",
     ("runs past the tensor's data",)),
    (_raw_request("pixels", "FP32", [1], b"\0" * 4), "INVALID_ARGUMENT", ("unknown input(s) ['pixels']",)),
    (_raw_request("input", "FP32", [1, 784], b"\0" * 3136, model="nope"), "NOT_FOUND", ("'nope' is not in the model store",)),
    (_raw_request("input", "FP32", [1, 784], b"\0" * 3136, model="Bad.Name"), "INVALID_ARGUMENT", ("invalid model name",)),
    (_raw_request("input", "FP32", [1, 784], b"\0" * 3136, string_param="soon"), "INVALID_ARGUMENT",
     ("parameters.timeout 'soon' is not valid", "microseconds")),
    (_raw_request("input", "FP32", [1, 784], b"\0" * 3136, int64_param=-5), "INVALID_ARGUMENT",
     ("parameters.timeout -5 is not valid",)),
])
def test_hostile_infer_requests(grpc_zoo, request_, code, fragments):
    with pytest.raises(grpc.RpcError) as info:
        grpc_zoo.stub.ModelInfer(request_, metadata=list(AUTH.items()), timeout=30)
    assert info.value.code().name == code, info.value.details()
    for fragment in fragments:
        assert fragment in info.value.details(), info.value.details()


def test_unknown_version_oversized_message_metadata_flood_and_deadline(grpc_zoo):
    client, x = grpc_zoo.client, grpc_zoo.zoo.x_test[:1].numpy()
    refused(lambda: client.infer("mnist-mlp", [fp32_input(x)], model_version="0000", headers=AUTH),
            "NOT_FOUND", "no version '0000'")
    big = np.zeros((MAX_BODY_MB * 2**20 // 3136 + 2, 784), np.float32)  # just over the body cap
    refused(lambda: client.infer("mnist-mlp", [fp32_input(big)], headers=AUTH), "RESOURCE_EXHAUSTED", "larger than max")
    flood = {**AUTH, **{f"x-flood-{i}": "v" * 1000 for i in range(40)}}  # 40 KB of metadata
    refused(lambda: client.infer("mnist-mlp", [fp32_input(x)], headers=flood), "RESOURCE_EXHAUSTED")
    # an impossible deadline (1 us, Triton's parameters.timeout): answered DEADLINE_EXCEEDED, never computed. (Not
    # client_timeout=1e-6: grpc keeps such a deadline only roughly, and a model answering at once (the batcher's
    # fast path) beat it in one CI run, so the call succeeded; the gRPC deadline is tested on a slow model in
    # test_grpc_observability.py)
    refused(lambda: client.infer("mnist-mlp", [fp32_input(x)], headers=AUTH, timeout=1), "DEADLINE_EXCEEDED",
            "parameters.timeout")
    # the server serves on, over both protocols
    assert client.infer("mnist-mlp", [fp32_input(x)], headers=AUTH).as_numpy("logits").shape == (1, 10)
    assert grpc_zoo.rest("GET", "/readyz").status_code == 200


def test_python_client_and_zoo_cli_over_grpc(grpc_zoo, tmp_path, capsys):
    import asyncio

    from clients.cli import main
    from clients.grpc_client import GrpcZooClient

    zoo = grpc_zoo.zoo

    async def calls():
        async with GrpcZooClient(grpc_zoo.target, token=TOKEN) as client:
            report = await client.health()
            meta = await client.model_metadata("mnist-mlp")
            logits = (await client.infer("mnist-mlp", {"input": zoo.x_test[:8].numpy()}))["logits"]
            labels = await client.classify("mnist-mlp", [data for _, data in zoo.digits[:8]])
        return report, meta, logits, labels

    report, meta, logits, labels = asyncio.run(calls())
    assert report["live"] and report["ready"] and report["models"]["mnist-mlp"]["ready"]
    assert meta["inputs"] == grpc_zoo.rest("GET", "/v2/models/mnist-mlp").json()["inputs"]
    rest = post_images(grpc_zoo.url, zoo.digits[:8], headers=AUTH).json()
    assert [r["index"] for r in labels] == [r["index"] for r in rest] == logits.argmax(1).tolist()
    assert [r["top_k"][1]["label"] for r in labels] == [r["top_k"][1]["label"] for r in rest]

    assert main(["health", "--protocol", "grpc", "--grpc-url", grpc_zoo.target, "--token", TOKEN]) == 0
    out = capsys.readouterr().out
    assert "grpc://" in out and "mnist-mlp: ready" in out and "input[-1, 784] FP32" in out
    folder = tmp_path / "digits"
    folder.mkdir()
    for name, data in zoo.digits[:5]:
        (folder / name).write_bytes(data)
    (folder / "broken.png").write_bytes(b"not a png")
    assert main(["classify", str(folder), "--model", "mnist-mlp", "--protocol", "grpc", "--grpc-url", grpc_zoo.target,
                 "--token", TOKEN, "--no-progress"]) != 0  # one rejected file: a partial run
    captured = capsys.readouterr()
    want = {name: str(r["label"]) for (name, _), r in zip(zoo.digits[:5], rest)}
    got = {line.split("\t")[0].rsplit("/", 1)[-1]: line.split("\t")[1] for line in captured.out.splitlines()}
    assert got == want
    assert "rejected" in captured.err and "broken.png" in captured.err and "gRPC INVALID_ARGUMENT" in captured.err
    # a wrong token ends the run with one line naming the status
    assert main(["health", "--protocol", "grpc", "--grpc-url", grpc_zoo.target, "--token", "wrong"]) == 1
    assert "UNAUTHENTICATED" in capsys.readouterr().err


def test_every_worker_serves_the_port_and_stops_it_on_sigterm(zoo_server, tmp_path):
    """Two workers bind the same port (SO_REUSEPORT); fresh connections are answered; SIGTERM stops both."""
    port = free_port()
    env = {"MODEL_ZOO_GRPC_PORT": str(port), "MODEL_ZOO_GRPC_HOST": "127.0.0.1", "MODEL_ZOO_WORKERS": "2",
           "MODEL_ZOO_MODELS": "mnist-mlp"}
    x = zoo_server.x_test[:2].numpy()
    with serve(sibling_home(zoo_server, tmp_path), tmp_path / "server.log", env) as server:
        for _ in range(12):  # a new connection each time: the kernel picks a worker per connection
            client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
            assert client.is_server_ready()
            assert client.infer("mnist-mlp", [fp32_input(x)]).as_numpy("logits").argmax(1).tolist() == \
                eager_probs(zoo_server.mlp, zoo_server.x_test[:2]).argmax(1).tolist()
            client.close()
        log = server.log.read_text()
        assert all(f"GRPCInferenceService on 127.0.0.1:{port} (worker {w})" in log for w in (1, 2)), log[-3000:]
    log = server.log.read_text()
    assert all(f"gRPC server on 127.0.0.1:{port} stopped (worker {w})" in log for w in (1, 2)), log[-3000:]


def test_a_second_server_on_a_taken_grpc_port_stops_with_one_line(grpc_zoo, tmp_path):
    """The workers bind with SO_REUSEPORT: without the arbiter's check this server would share the port."""
    env = {"MODEL_ZOO_GRPC_PORT": str(grpc_zoo.port), "MODEL_ZOO_GRPC_HOST": "127.0.0.1", "MODEL_ZOO_MODELS": "mnist-mlp"}
    res = startup_failure(sibling_home(grpc_zoo.zoo, tmp_path), tmp_path / "second.log", exit_timeout=60, env=env)
    assert res["exit_code"] == 1 and not res["livez_200_seen"], res["output"][-1500:]
    out = res["output"]
    assert f"MODEL_ZOO_GRPC_PORT={grpc_zoo.port}: cannot bind 127.0.0.1:{grpc_zoo.port} for gRPC" in out, out[-1500:]
    assert "Traceback" not in out, out[-1500:]
    assert grpc_zoo.client.is_server_ready()  # the first server serves on


KSERVE_PYTHON = Path(__file__).resolve().parents[1] / ".venv-kserve" / "bin" / "python"


def test_kserve_grpc_client_unchanged(grpc_zoo, tmp_path):
    """KServe's own InferenceGRPCClient (kserve 0.21, in .venv-kserve: it pins protobuf<7) against the
    service: ready, and ModelInfer on real MNIST digits gives the logits eager PyTorch gives."""
    if not KSERVE_PYTHON.exists():
        pytest.fail(f"{KSERVE_PYTHON} is missing: `make test` makes it from tests/kserve/requirements.txt")
    x = grpc_zoo.zoo.x_test[:16].numpy().astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    done = subprocess.run([str(KSERVE_PYTHON), str(Path(__file__).parent / "kserve" / "infer.py"), grpc_zoo.target,
                           TOKEN, "mnist-mlp", str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["ready"] is True and answer["model"] == "mnist-mlp" and answer["output"] == "logits"
    logits = np.array(answer["logits"], dtype=np.float32)
    with np.errstate(all="ignore"):
        expected = grpc_zoo.zoo.mlp(grpc_zoo.zoo.x_test[:16]).detach().numpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
