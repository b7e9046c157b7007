"""Open Inference Protocol (KServe v2 REST) against the real server: JSON and binary tensors, BYTES
image inputs, the classification extension, errors, and NVIDIA's standard client (tritonclient)
unchanged. Results are compared with eager PyTorch on real MNIST test images.
"""

from __future__ import annotations

import base64
import json
import struct

import httpx
import numpy as np
import pytest

from harness import eager_probs

pytestmark = pytest.mark.slow


def infer(url: str, model: str, body: dict, **kw) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=60, **kw)


def test_server_and_model_metadata(zoo_server):
    u = zoo_server.url
    meta = httpx.get(u + "/v2").json()
    assert meta["name"] == "model_zoo" and {"binary_tensor_data", "classification"} <= set(meta["extensions"])
    assert httpx.get(u + "/v2/health/live").status_code == 200
    assert httpx.get(u + "/v2/health/ready").status_code == 200
    m = httpx.get(u + "/v2/models/mnist-mlp").json()
    assert m["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 784]},
                           {"name": "images", "datatype": "BYTES", "shape": [-1]}]
    assert m["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}]
    assert m["platform"] == "onnxruntime_onnx" and m["parameters"]["spec"]["labels"] == [str(i) for i in range(10)]
    r = httpx.get(u + "/v2/models/sine-rnn").json()
    rnn = zoo_server.rnn  # its recurrent state is an input and an output: h, and c for an LSTM
    state = ["h", "c"] if rnn.cell == "lstm" else ["h"]
    assert [t["name"] for t in r["inputs"]] == ["x", *state]
    assert all(t["shape"] == [rnn.num_layers, -1, rnn.hidden_size] for t in r["inputs"][1:])
    assert httpx.get(u + "/v2/models/mnist-mlp/ready").status_code == 200
    missing = httpx.get(u + "/v2/models/cifar10-resnet18")
    assert missing.status_code == 404 and "not in the model store" in missing.json()["error"]
    unknown = httpx.get(u + "/v2/models/nope/ready")
    assert unknown.status_code == 404 and "served here: mnist-mlp, sine-rnn" in unknown.json()["error"]


def test_json_infer_matches_eager(zoo_server):
    x = zoo_server.x_test[:5].numpy()
    body = {"id": "r1", "inputs": [{"name": "input", "shape": [5, 784], "datatype": "FP32", "data": x.tolist()}]}
    r = infer(zoo_server.url, "mnist-mlp", body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == "mnist-mlp" and out["id"] == "r1"
    (logits,) = out["outputs"]
    assert logits["name"] == "logits" and logits["shape"] == [5, 10] and logits["datatype"] == "FP32"
    with np.errstate(all="ignore"):
        expected = zoo_server.mlp(zoo_server.x_test[:5]).detach().numpy()
    np.testing.assert_allclose(np.asarray(logits["data"]).reshape(5, 10), expected, rtol=1e-4, atol=1e-4)


def test_binary_bytes_images_with_classification(zoo_server):
    images = [data for _, data in zoo_server.digits[:3]]
    blob = b"".join(struct.pack("<I", len(b)) + b for b in images)
    header = json.dumps({
        "inputs": [{"name": "images", "shape": [3], "datatype": "BYTES", "parameters": {"binary_data_size": len(blob)}}],
        "outputs": [{"name": "logits", "parameters": {"classification": 2, "binary_data": True}}],
    }).encode()
    r = httpx.post(zoo_server.url + "/v2/models/mnist-mlp/infer", content=header + blob,
                   headers={"Inference-Header-Content-Length": str(len(header)), "content-type": "application/octet-stream"})
    assert r.status_code == 200, r.text
    split = int(r.headers["inference-header-content-length"])
    meta = json.loads(r.content[:split])["outputs"][0]
    assert meta["datatype"] == "BYTES" and meta["shape"] == [3, 2]
    raw, items, pos = r.content[split:], [], 0
    assert len(raw) == meta["parameters"]["binary_data_size"]
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        items.append(raw[pos + 4:pos + 4 + n].decode())
        pos += 4 + n
    probs = eager_probs(zoo_server.mlp, zoo_server.x_test[:3])
    for i in range(3):
        for rank in range(2):
            score, index, label = items[2 * i + rank].split(":")
            best = np.argsort(-probs[i], kind="stable")[rank]
            assert int(index) == best and label == str(best)
            assert float(score) == pytest.approx(probs[i, best], abs=1e-5)


def test_json_base64_images_equal_the_tensor_path(zoo_server):
    b64 = [base64.b64encode(d).decode() for _, d in zoo_server.digits[:2]]
    r1 = infer(zoo_server.url, "mnist-mlp", {"inputs": [{"name": "images", "shape": [2], "datatype": "BYTES", "data": b64}]})
    x = zoo_server.x_test[:2].numpy()
    r2 = infer(zoo_server.url, "mnist-mlp", {"inputs": [{"name": "input", "shape": [2, 784], "datatype": "FP32", "data": x.reshape(-1).tolist()}]})
    assert r1.status_code == r2.status_code == 200
    np.testing.assert_allclose(r1.json()["outputs"][0]["data"], r2.json()["outputs"][0]["data"], atol=1e-5)


def test_forecast_step_graph_binary_roundtrip(zoo_server):
    x = np.sin(0.15 * np.arange(20, dtype=np.float32)).reshape(1, 20, 1)
    header = json.dumps({"inputs": [{"name": "x", "shape": [1, 20, 1], "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    r = httpx.post(zoo_server.url + "/v2/models/sine-rnn/infer", content=header + x.tobytes(),
                   headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 200, r.text
    split = int(r.headers["inference-header-content-length"])
    outs, raw, pos = json.loads(r.content[:split])["outputs"], r.content[split:], 0
    arrays = {}
    for o in outs:
        n = o["parameters"]["binary_data_size"]
        arrays[o["name"]] = np.frombuffer(raw[pos:pos + n], dtype="<f4").reshape(o["shape"])
        pos += n
    import torch

    with torch.no_grad():
        y, state = zoo_server.rnn(torch.from_numpy(x))
    np.testing.assert_allclose(arrays["y"], y.numpy(), rtol=1e-4, atol=1e-5)
    for name, want in zip(("h_out", "c_out"), state):  # (h,) for rnn/gru, (h, c) for lstm
        np.testing.assert_allclose(arrays[name], want.numpy(), rtol=1e-4, atol=1e-5)
    assert len(arrays) == 1 + len(state)


def _tensor(name, shape, datatype, data):
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


@pytest.mark.parametrize("model,body,status,fragment", [
    ("mnist-mlp", _tensor("input", [2, 784], "FP32", [0.0] * 784), 400, "needs 1568 elements, 'data' has 784"),
    ("mnist-mlp", _tensor("input", [1, 28, 28], "FP32", [0.0] * 784), 400, "shape [1, 28, 28] does not match [-1, 784]"),
    ("mnist-mlp", _tensor("input", [1, 784], "INT32", [0] * 784), 400, "datatype must be FP32, got INT32"),
    ("mnist-mlp", _tensor("input", [1, 784], "FP17", [0] * 784), 400, "unknown datatype 'FP17'"),
    ("mnist-mlp", _tensor("pixels", [1, 784], "FP32", [0] * 784), 400, "unknown input(s) ['pixels']"),
    ("mnist-mlp", _tensor("images", [1], "BYTES", ["not base64!"]), 400, "not valid base64"),
    ("mnist-mlp", _tensor("images", [1], "BYTES", [base64.b64encode(b"GIF89a").decode()]), 400, "images[0]: "),
    ("mnist-mlp", {"inputs": []}, 400, "non-empty 'inputs'"),
    ("mnist-mlp", {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}],
                   "outputs": [{"name": "probs"}]}, 400, "unknown output 'probs'"),
    ("sine-rnn", _tensor("x", [1, 3, 1], "FP32", [0.1, float("nan"), 0.2]), 400, "NaN or infinite"),
    ("sine-rnn", _tensor("x", [1, 3], "FP32", [0.1, 0.2, 0.3]), 400, "does not match [-1, -1, 1]"),
    ("nope", _tensor("x", [1], "FP32", [0.1]), 404, "model 'nope' is not in the model store"),
    ("cifar10-resnet18", _tensor("input", [1], "FP32", [0.1]), 404, "not in the model store"),
])
def test_oip_errors(zoo_server, model, body, status, fragment):
    r = httpx.post(f"{zoo_server.url}/v2/models/{model}/infer", content=json.dumps(body),
                   headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]


@pytest.mark.parametrize("header_length,body,fragment", [
    ("5", b'{"inputs": []}', "not valid JSON"),
    ("999", b"{}", "does not fit a body of 2 bytes"),
    ("x", b"{}", "is not an integer"),
])
def test_binary_framing_errors(zoo_server, header_length, body, fragment):
    r = httpx.post(zoo_server.url + "/v2/models/mnist-mlp/infer", content=body,
                   headers={"Inference-Header-Content-Length": header_length})
    assert r.status_code == 400 and fragment in r.json()["error"]


def test_binary_size_mismatch(zoo_server):
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 100}}]}).encode()
    r = httpx.post(zoo_server.url + "/v2/models/mnist-mlp/infer", content=header + b"\0" * 100,
                   headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and "needs 3136 bytes, binary_data_size is 100" in r.json()["error"]


def test_standard_triton_client_works_unchanged(zoo_server):
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(url=zoo_server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mnist-mlp")
    assert client.get_model_metadata("mnist-mlp")["outputs"][0]["name"] == "logits"
    x = zoo_server.x_test[:6].numpy()
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=True)
    outputs = [httpclient.InferRequestedOutput("logits", binary_data=True)]
    logits = client.infer("mnist-mlp", [inp], outputs=outputs).as_numpy("logits")
    probs = eager_probs(zoo_server.mlp, zoo_server.x_test[:6])
    assert list(logits.argmax(1)) == list(probs.argmax(1))
    # classification extension through the client, with encoded PNGs as a BYTES tensor
    images = httpclient.InferInput("images", [2], "BYTES")
    images.set_data_from_numpy(np.array([d for _, d in zoo_server.digits[:2]], dtype=np.object_), binary_data=True)
    top = client.infer("mnist-mlp", [images],
                       outputs=[httpclient.InferRequestedOutput("logits", binary_data=False, class_count=3)])
    labels = top.as_numpy("logits")
    assert labels.shape == (2, 3)
    best = [str(s.decode() if isinstance(s, bytes) else s) for s in labels[:, 0]]  # JSON BYTES come back as str
    assert [int(s.split(":")[1]) for s in best] == list(probs[:2].argmax(1))
    with pytest.raises(Exception, match="model 'nope' is not in the model store"):
        client.get_model_metadata("nope")
    client.close()


def test_docs_json_is_the_whole_surface(zoo_server):
    doc = httpx.get(zoo_server.url + "/docs.json").json()
    paths = set(doc["paths"])
    assert {"/classify_digit", "/forecast_sine", "/models/{name}/classify", "/models/{name}/forecast",
            "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer", "/v2/repository/index",
            "/v2/repository/models/{name}/load", "/v2/repository/models/{name}/unload"} <= paths
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["requestBody"]["content"]["application/json"]["schema"]["required"] == ["inputs"]
    assert {"400", "404", "503"} <= set(infer["responses"])
