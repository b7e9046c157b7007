"""Unit tests of the client's pieces that need no server: encoding, retries, results, discovery."""

from __future__ import annotations

import io
import json
import os
import random

import httpx
import numpy as np
import pytest
from PIL import Image

from clients.client import model_path
from clients.discover import find_images, path_key
from clients.media import sniff_image_type, to_upload, to_uploads
from clients.oip import HEADER_LENGTH, decode_response, encode_request
from clients.records import ResultStore, confusion_matrix, format_confusion, make_record
from clients.transport import RetryPolicy, ZooError, check, parse_retry_after


def _image_bytes(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (8, 8), 128).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt,mime", [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("BMP", "image/bmp"),
                                      ("GIF", "image/gif"), ("TIFF", "image/tiff"), ("WEBP", "image/webp"),
                                      ("PPM", "image/x-portable-anymap")])
def test_sniff_real_encodings(fmt, mime):
    # Bytes written by PIL in each format are recognised by their header alone.
    assert sniff_image_type(_image_bytes(fmt)[:16])[1] == mime


def test_upload_declares_sniffed_type_not_extension(tmp_path):
    # A JPEG named .png must go out as image/jpeg: the server decodes by declared type.
    p = tmp_path / "photo.png"
    p.write_bytes(_image_bytes("JPEG"))
    up = to_upload(p)
    assert (up.filename, up.mime) == ("photo.png", "image/jpeg")
    text = tmp_path / "notes.png"
    text.write_text("hello")
    assert to_upload(text).mime == "image/png"  # no magic: declared by extension, server names the problem
    pil = to_uploads(Image.new("L", (4, 4)))[0]
    assert pil.mime == "image/png" and Image.open(io.BytesIO(pil.data)).size == (4, 4)
    with pytest.raises(ValueError, match="cannot read image"):
        to_upload(tmp_path / "missing.png")


def test_model_routes_take_any_name_and_refuse_path_tricks():
    assert model_path("my-flowers", "classify") == "/models/my-flowers/classify"
    assert model_path("a b", "forecast") == "/models/a%20b/forecast"  # the server names what is wrong with it
    for bad in ("", "a/b", "..", "."):
        with pytest.raises(ValueError, match="zoo models"):
            model_path(bad, "classify")


@pytest.mark.parametrize("binary", [False, True])
def test_oip_round_trip(binary):
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    ids = np.array([[1, -2]], dtype=np.int64)
    body, headers = encode_request({"input": x, "ids": ids}, ["logits"], binary=binary)
    header_len = int(headers.get(HEADER_LENGTH, len(body)))
    req = json.loads(body[:header_len])
    assert [t["shape"] for t in req["inputs"]] == [[3, 4], [1, 2]]
    assert [t["datatype"] for t in req["inputs"]] == ["FP32", "INT64"]
    if binary:
        assert req["outputs"][0]["parameters"]["binary_data"] is True
        assert body[header_len:] == x.tobytes() + ids.tobytes()
    else:
        assert np.allclose(req["inputs"][0]["data"], x.reshape(-1))
    # Answer as a server would, echoing the tensors back plus a BYTES classification output.
    labels = np.array([["0.9:7:7"], ["0.8:2:2"], ["0.7:1:1"]], dtype=object)
    outputs = [{"name": "logits", "shape": [3, 4], "datatype": "FP32"},
               {"name": "top", "shape": [3, 1], "datatype": "BYTES"}]
    if binary:
        from clients.oip import _serialize_bytes
        blobs = [x.tobytes(), _serialize_bytes(labels)]
        for o, b in zip(outputs, blobs):
            o["parameters"] = {"binary_data_size": len(b)}
        head = json.dumps({"model_name": "m", "outputs": outputs}).encode()
        result = decode_response(head + b"".join(blobs), {HEADER_LENGTH: str(len(head))})
    else:
        outputs[0]["data"], outputs[1]["data"] = x.reshape(-1).tolist(), labels.reshape(-1).tolist()
        result = decode_response(json.dumps({"model_name": "m", "outputs": outputs}).encode(), {})
    np.testing.assert_array_equal(result["logits"], x)
    assert result["top"].tolist() == labels.tolist()


def test_retry_policy_backoff_and_retry_after():
    policy = RetryPolicy(retries=3, base_delay=0.5, max_delay=4.0)
    rng = random.Random(0)
    delays = [[policy.delay(a, rng=rng) for _ in range(200)] for a in range(5)]
    for a, ds in enumerate(delays):
        assert 0 <= min(ds) and max(ds) <= min(4.0, 0.5 * 2**a)  # full jitter under a doubling ceiling
    assert np.mean(delays[3]) > 2 * np.mean(delays[0])
    assert 2.0 <= policy.delay(0, retry_after=2.0) <= 2.0 + 0.5 / 4
    assert policy.delay(0, retry_after=100.0) <= 4.0 + 0.125  # capped
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: now
    assert parse_retry_after("soon") is None
    assert policy.should_retry_status(503, 2) and not policy.should_retry_status(503, 3)
    assert not policy.should_retry_status(500, 0)
    assert policy.should_retry_exception(httpx.ConnectError("x"), 0)
    assert not policy.should_retry_exception(httpx.ReadTimeout("x"), 0)


@pytest.mark.parametrize("status,body,message", [
    (400, {"error": "file 'a.png' is not an image"}, "file 'a.png' is not an image"),
    (404, [{"error": "Not Found"}], "Not Found"),  # BentoML 1.4.40 wraps its own 4xx in a list
    (400, {"error": "1 validation error for Input", "detail": [{"loc": ["steps"], "msg": "must be > 0"}]},
     "1 validation error for Input (steps: must be > 0)"),
    (502, "<html>\nBad gateway</html>", "<html>"),
])
def test_error_carries_server_message(status, body, message):
    content = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
    request = httpx.Request("POST", "http://x/classify_digit")
    with pytest.raises(ZooError) as info:
        check(httpx.Response(status, content=content, request=request))
    assert info.value.status == status and info.value.message == message
    assert str(info.value) == f"HTTP {status} from POST /classify_digit: {message}"
    assert info.value.is_client_error == (status < 500)


def test_result_store_resumes_after_cut_off_line(tmp_path):
    for ext in (".csv", ".jsonl"):
        out = tmp_path / f"r{ext}"
        store = ResultStore(str(out))
        ok = make_record("a/1.png", {"label": "7", "index": 7, "score": 0.9, "top_k": [{"label": "7", "index": 7, "score": 0.9}]})
        bad = make_record("a/2.png", error="file '2.png':\nnot an image")
        store.append([ok, bad])
        store.close()
        with open(out, "a") as f:  # a kill in the middle of the next record
            f.write('a/3.png,ok,3,3,0.5' if ext == ".csv" else '{"path": "a/3.png", "sta')
        loaded = ResultStore(str(out)).load()
        assert set(loaded) == {path_key("a/1.png"), path_key("a/2.png")}
        assert loaded[path_key("a/1.png")]["top_k"][0]["label"] == "7"
        assert loaded[path_key("a/1.png")]["index"] == 7
        assert loaded[path_key("a/2.png")]["error"] == "file '2.png': not an image"
        assert out.read_bytes().endswith(b"\n")  # the partial line was cut before appending
        again = ResultStore(str(out))
        again.load()
        again.append([make_record("a/3.png", {"label": "3", "index": 3, "score": 0.5})])
        again.close()
        assert len(ResultStore(str(out)).load()) == 3
    with pytest.raises(ValueError, match=".csv or .jsonl"):
        ResultStore(str(tmp_path / "r.txt"))


def test_confusion_matrix():
    pairs = [("1", "1"), ("1", "7"), ("7", "7"), ("7", "7")]
    counts = confusion_matrix(pairs, ["1", "7"])
    assert counts == [[1, 1], [0, 2]]
    table = format_confusion(counts, ["1", "7"]).splitlines()
    assert table[1].split() == ["1", "1", "1"] and table[2].split() == ["7", "0", "2"]


def test_find_images_walks_sniffs_and_guards_symlinks(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "cat").mkdir(parents=True)
    (root / "dog" / "deep").mkdir(parents=True)
    outside.mkdir()
    (root / "cat" / "a.png").write_bytes(_image_bytes("PNG"))
    (root / "dog" / "deep" / "b.jpeg").write_bytes(_image_bytes("JPEG"))
    (root / "dog" / "noext").write_bytes(_image_bytes("BMP"))  # found by sniffing
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden.png").write_bytes(_image_bytes("PNG"))
    (outside / "secret.png").write_bytes(_image_bytes("PNG"))
    os.symlink(outside / "secret.png", root / "cat" / "link.png")
    os.symlink(outside, root / "linked_dir")
    os.symlink(root, root / "dog" / "loop")  # a loop must not hang
    os.symlink(root / "cat" / "a.png", root / "cat" / "same.png")  # inside: same file, once

    found = find_images([str(root)])
    rel = sorted(os.path.relpath(f.path, root) for f in found.images)
    assert rel == ["cat/a.png", "dog/deep/b.jpeg", "dog/noext"]
    assert {f.class_name for f in found.images} == {"cat", "dog"}
    reasons = {os.path.relpath(p, root): why for p, why in found.skipped}
    assert "outside" in reasons["cat/link.png"] and "not an image" in reasons["dog/notes.txt"]

    followed = find_images([str(root)], follow_symlinks=True)
    names = sorted(os.path.basename(f.path) for f in followed.images)
    # secret.png is reachable as cat/link.png and linked_dir/secret.png: classified once, first path wins.
    assert names == ["a.png", "b.jpeg", "link.png", "noext"]
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find_images([str(tmp_path / "nope")])


def test_service_url_from_argument_env_or_default(monkeypatch):
    from clients.transport import default_url

    monkeypatch.delenv("ZOO_URL", raising=False)
    assert default_url() == "http://localhost:3000"
    monkeypatch.setenv("ZOO_URL", "https://zoo.example:8443/")
    assert default_url() == "https://zoo.example:8443"
    assert default_url("http://127.0.0.1:3001") == "http://127.0.0.1:3001"
    with pytest.raises(ValueError, match="must start with http:// or https://, got 'localhost:3000'"):
        default_url("localhost:3000")
