"""The model repository against a real two-worker ``bentoml serve``: several models of one family side
by side under their store names, loaded and unloaded at run time (Triton's repository extension,
also through tritonclient unchanged), and the bad inputs of each.

Two ``transfer-resnet18`` classifiers are trained for real (``python -m training ... --weights none``,
the whole network) on small ImageFolders of real MNIST digits with different class names, and
exported with ``python -m export --name``; answers are compared with eager PyTorch on the same
checkpoints.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from fixtures_data import mnist_data_dir
from harness import ROOT, post_images, serve, sibling_home
from training.checkpoint import load_checkpoint
from training.models import build_model

pytestmark = pytest.mark.slow

PAIR = ("zero", "one")  # digits 0 and 1
TRIO = ("three", "seven", "eight")  # digits 3, 7 and 8
DIGITS = {"zero": 0, "one": 1, "three": 3, "seven": 7, "eight": 8}


@dataclass
class Repo:
    url: str
    home: Path  # the store the server reads
    pair: torch.nn.Module
    trio: torch.nn.Module
    tests: dict[str, list[bytes]]  # class name -> real MNIST test digits as PNG files
    log: Path


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img, mode="L").save(buf, "PNG")
    return buf.getvalue()


def _digit_folder(root: Path, classes: tuple[str, ...], raw: torchvision.datasets.MNIST) -> Path:
    """An ImageFolder (train/ and val/) of real MNIST training digits, one folder per class name."""
    for name in classes:
        picked = (raw.targets == DIGITS[name]).nonzero().flatten()[:16].tolist()
        for part, idx in (("train", picked[:12]), ("val", picked[12:])):
            (root / part / name).mkdir(parents=True, exist_ok=True)
            for i in idx:
                (root / part / name / f"{i}.png").write_bytes(_png(raw.data[i].numpy()))
    return root


def _train_and_export(tmp: Path, classes: tuple[str, ...], name: str, env: dict, raw) -> torch.nn.Module:
    data = _digit_folder(tmp / f"{name}-data", classes, raw)
    out = tmp / f"{name}-ckpt"
    cmd = [sys.executable, "-m", "training", "transfer-resnet18", "--data-dir", str(data), "--weights", "none",
           "--epochs", "1", "--batch-size", "8", "--lr", "0.01", "--no-progress", "--out-dir", str(out),
           "--log-dir", str(tmp / f"{name}-runs"), "--seed", "0"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    done = subprocess.run([sys.executable, "-m", "export", str(out / "best.pt"), "--name", name, "--formats", "onnx"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ckpt = load_checkpoint(out / "best.pt")
    model = build_model("transfer-resnet18", ckpt["config"]["model"])
    model.load_state_dict(ckpt["model"])
    return model.eval()


def _export_again(home_env: dict, tmp: Path, name: str, source: str) -> None:
    """Register the checkpoint behind store entry ``source`` once more, as ``name``."""
    ckpt = next((tmp / f"{source}-ckpt").glob("best.pt"))
    done = subprocess.run([sys.executable, "-m", "export", str(ckpt), "--name", name, "--formats", "onnx"],
                          cwd=ROOT, env=home_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def repo(zoo_server, tmp_path_factory) -> Repo:
    tmp = tmp_path_factory.mktemp("repo")
    home = sibling_home(zoo_server, tmp)  # new entries land in zoo_server's store too (a symlink)
    env = {**__import__("os").environ, "BENTOML_HOME": str(home)}
    raw = torchvision.datasets.MNIST(str(mnist_data_dir()), train=True)
    torch.manual_seed(0)
    pair = _train_and_export(tmp, PAIR, "mnist-pair", env, raw)
    trio = _train_and_export(tmp, TRIO, "mnist-trio", env, raw)
    _export_again(env, tmp, "loadable", "mnist-pair")  # the one loaded and unloaded at run time
    # A store entry whose graph is corrupt, and one of a family this server does not know.
    shutil.copytree(home / "models" / "loadable", home / "models" / "broken")
    for f in (home / "models" / "broken").glob("*/model.onnx"):
        f.write_bytes(b"not an onnx graph")
    for f in (home / "models" / "broken").glob("*/model.yaml"):
        f.write_text(f.read_text().replace("name: loadable", "name: broken"))
    shutil.copytree(home / "models" / "loadable", home / "models" / "alien")
    for f in (home / "models" / "alien").glob("*/*"):
        if f.name in ("model.yaml", "spec.json"):
            f.write_text(f.read_text().replace("name: loadable", "name: alien").replace("transfer-resnet18", "gpt-9"))
    test = torchvision.datasets.MNIST(str(mnist_data_dir()), train=False)
    tests = {c: [_png(test.data[i].numpy()) for i in (test.targets == DIGITS[c]).nonzero().flatten()[:8].tolist()]
             for c in (*PAIR, *TRIO)}
    log = tmp / "server.log"
    # Two workers: every load/unload must reach both. The two classifiers are served from the start,
    # next to the zoo's MLP; 'loadable' is in the store but not served until loaded.
    with serve(home, log, {"MODEL_ZOO_WORKERS": "2", "MODEL_ZOO_MODELS": "mnist-mlp,mnist-pair,mnist-trio"},
               timeout=240) as server:
        yield Repo(server.url, home, pair, trio, tests, log)
    # The two invalid entries live in the session's shared store: gone before any later test checks that store
    # (run first, they made test_reliability_faults' preflight of "the good store" fail).
    for name in ("broken", "alien"):
        shutil.rmtree(home / "models" / name, ignore_errors=True)


def _eager_top1(model: torch.nn.Module, png: bytes) -> tuple[int, float]:
    """The transfer spec's preprocessing in torchvision: RGB, shorter side 256, centre crop 224."""
    from torchvision import transforms as T

    from training.specs import IMAGENET_MEAN, IMAGENET_STD

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    x = tf(Image.open(io.BytesIO(png)).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        p = torch.softmax(model(x).double(), dim=1)[0]
    return int(p.argmax()), float(p.max())


def _index(url: str) -> dict[tuple[str, str], dict]:
    r = httpx.post(url + "/v2/repository/index", timeout=30)
    assert r.status_code == 200, r.text
    return {(e["name"], e["version"]): e for e in r.json()}


def _fresh(url: str, n: int, route: str, files) -> list[int]:
    """``n`` requests, each on a new connection, so both workers get some."""
    return [post_images(url, files, route=route).status_code for _ in range(n)]


# ---------------------------------------------------------------------------- side by side


def test_two_models_of_one_family_answer_with_their_own_labels(repo):
    for name, model, classes in (("mnist-pair", repo.pair, PAIR), ("mnist-trio", repo.trio, TRIO)):
        files = [(f"{c}{i}.png", png) for c in classes for i, png in enumerate(repo.tests[c][:4])]
        r = post_images(repo.url, files, route=f"/models/{name}/classify")
        assert r.status_code == 200, r.text
        results = r.json()
        classes = tuple(sorted(classes))  # ImageFolder: class index = position in sorted folder names
        assert len(results) == len(files) and {res["label"] for res in results} <= set(classes)
        assert len(results[0]["top_k"]) == len(classes)  # its own number of classes
        for res, (_, png) in zip(results, files):
            index, score = _eager_top1(model, png)
            assert res["index"] == index and res["label"] == classes[index]
            assert res["score"] == pytest.approx(score, abs=2e-3)  # PIL resize in both; float32 graph
        # Open Inference Protocol: metadata, and the classification extension on encoded images
        meta = httpx.get(f"{repo.url}/v2/models/{name}").json()
        assert meta["parameters"]["family"] == "transfer-resnet18" and meta["parameters"]["spec"]["labels"] == list(classes)
        version = meta["versions"][0]
        import base64

        body = {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [len(files)],
                            "data": [base64.b64encode(png).decode() for _, png in files]}],
                "outputs": [{"name": "logits", "parameters": {"classification": 1}}]}
        o = httpx.post(f"{repo.url}/v2/models/{name}/versions/{version}/infer", json=body, timeout=60)
        assert o.status_code == 200, o.text
        assert o.json()["model_version"] == version
        assert [s.split(":", 2)[2] for s in o.json()["outputs"][0]["data"]] == [res["label"] for res in results]


def test_family_route_serves_the_model_stored_under_the_family_name(repo, zoo_server):
    r = post_images(repo.url, zoo_server.digits[:4])
    direct = post_images(repo.url, zoo_server.digits[:4], route="/models/mnist-mlp/classify")
    assert r.status_code == direct.status_code == 200 and r.json() == direct.json()
    wrong = post_images(repo.url, zoo_server.digits[:1], route="/models/mnist-mlp/forecast")
    assert wrong.status_code == 404 and "/models/mnist-mlp/classify" in wrong.json()["error"]


def test_versions_are_exact(repo):
    version = httpx.get(f"{repo.url}/v2/models/mnist-pair").json()["versions"][0]
    assert httpx.get(f"{repo.url}/v2/models/mnist-pair/versions/{version}/ready").status_code == 200
    for bad, fragment in (("abc123nothere", "no version 'abc123nothere'"), ("latest", "not 'latest'")):
        r = httpx.get(f"{repo.url}/v2/models/mnist-pair/versions/{bad}")
        assert r.status_code in (400, 404) and fragment in r.json()["error"], r.text


# ---------------------------------------------------------------------------- the repository extension


def test_index_lists_every_stored_model_with_its_state(repo):
    index = _index(repo.url)
    states = {name: e["state"] for (name, _), e in index.items()}
    assert states["mnist-pair"] == states["mnist-trio"] == states["mnist-mlp"] == "READY"
    assert states["loadable"] == "UNAVAILABLE" and states["sine-rnn"] == "UNAVAILABLE"  # stored, not served
    alien = next(e for (name, _), e in index.items() if name == "alien")
    assert "not a model of a known family" in alien["reason"]
    ready_only = httpx.post(repo.url + "/v2/repository/index", json={"ready": True}).json()
    assert {e["name"] for e in ready_only} == {"mnist-mlp", "mnist-pair", "mnist-trio"}


def test_load_then_unload_on_every_worker(repo):
    files = [("one.png", repo.tests["one"][0])]
    route = "/models/loadable/classify"
    before = post_images(repo.url, files, route=route)
    assert before.status_code == 404 and "POST /v2/repository/models/loadable/load" in before.json()["error"]
    r = httpx.post(repo.url + "/v2/repository/models/loadable/load", timeout=300)
    assert r.status_code == 200, r.text
    assert set(_fresh(repo.url, 30, route, files)) == {200}  # both workers serve it the moment load answers
    assert [e["state"] for (n, _), e in _index(repo.url).items() if n == "loadable"] == ["READY"]
    again = httpx.post(repo.url + "/v2/repository/models/loadable/load", timeout=300)  # idempotent
    assert again.status_code == 200 and again.json()["version"] == r.json()["version"]
    assert post_images(repo.url, files, route=route).json()[0]["label"] in PAIR  # the pair's checkpoint
    u = httpx.post(repo.url + "/v2/repository/models/loadable/unload", timeout=300)
    assert u.status_code == 200, u.text
    assert set(_fresh(repo.url, 30, route, files)) == {404}  # and neither serves it once unload answers
    assert httpx.get(repo.url + "/readyz").status_code == 200  # the others kept serving throughout


def test_unload_under_load_finishes_requests_in_flight(repo):
    assert httpx.post(repo.url + "/v2/repository/models/loadable/load", timeout=300).status_code == 200
    files = [(f"d{i}.png", png) for i, png in enumerate(repo.tests["zero"] * 4)]  # 32 images: ~1 s of ResNet
    statuses: list[int] = []

    def client() -> None:
        statuses.append(post_images(repo.url, files, route="/models/loadable/classify").status_code)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the requests are being decoded or in the batcher now
    started = time.monotonic()
    u = httpx.post(repo.url + "/v2/repository/models/loadable/unload", timeout=300)
    waited = time.monotonic() - started
    for t in threads:
        t.join()
    assert u.status_code == 200 and statuses == [200] * 4, (u.text, statuses)
    assert waited > 0.05  # it waited for them
    after = post_images(repo.url, files[:1], route="/models/loadable/classify")
    assert after.status_code == 404


def test_tritonclient_repository_calls_unchanged(repo):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(repo.url.removeprefix("http://"), network_timeout=300)
    index = client.get_model_repository_index()
    assert any(e["name"] == "mnist-pair" and e["state"] == "READY" and e["reason"] == "" for e in index), index
    assert not client.is_model_ready("loadable")
    client.load_model("loadable")
    assert client.is_model_ready("loadable")
    version = client.get_model_metadata("loadable")["versions"][0]
    assert client.is_model_ready("loadable", version) and not client.is_model_ready("loadable", "abc123nothere")
    png = repo.tests["one"][0]
    inp = triton.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([png], dtype=np.object_), binary_data=True)
    out = client.infer("loadable", [inp], model_version=version,
                       outputs=[triton.InferRequestedOutput("logits", binary_data=True, class_count=2)])
    best = out.as_numpy("logits")[0][0].decode()
    index_, score = _eager_top1(repo.pair, png)  # the same checkpoint as mnist-pair
    assert best.split(":")[1:] == [str(index_), sorted(PAIR)[index_]] and float(best.split(":")[0]) == pytest.approx(score, abs=2e-3)
    client.unload_model("loadable")
    assert not client.is_model_ready("loadable")
    with pytest.raises(triton.InferenceServerException, match="not in the model store"):
        client.load_model("no-such-model")


def test_zoo_cli_lists_loads_classifies_and_unloads(repo, tmp_path):
    zoo = lambda *a: subprocess.run([sys.executable, "-m", "clients", *a, "--url", repo.url],  # noqa: E731
                                    cwd=ROOT, capture_output=True, text=True, timeout=300)
    listed = zoo("models")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line.split()[2] for line in listed.stdout.splitlines()[1:]}
    assert rows["mnist-trio"] == "READY" and rows["loadable"] == "UNAVAILABLE"
    assert zoo("load", "loadable").returncode == 0
    (tmp_path / "seven").mkdir()
    for i, png in enumerate(repo.tests["seven"][:3]):
        (tmp_path / "seven" / f"{i}.png").write_bytes(png)
    classified = zoo("classify", "--model", "mnist-trio", str(tmp_path), "--out", str(tmp_path / "r.csv"))
    assert classified.returncode == 0 and "3 classified" in classified.stderr, classified.stderr
    assert zoo("unload", "loadable").returncode == 0
    missing = zoo("load", "no-such-model")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "not in the model store" in missing.stderr


# ---------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("path, status, fragment", [
    ("/v2/repository/models/no-such-model/load", 404, "'no-such-model' is not in the model store"),
    ("/v2/repository/models/broken/load", 400, "ONNX Runtime cannot load it"),
    ("/v2/repository/models/alien/load", 400, "unknown family 'gpt-9'"),
    ("/v2/repository/models/my.model/load", 400, "invalid model name 'my.model'"),
    ("/v2/repository/models/bad%0aname/load", 404, "bad\nname"),  # the router has no route for it
    ("/v2/repository/models/a%2Fb/load", 404, "no such route"),
    ("/v2/repository/models/no-such-model/unload", 404, "not in the model store"),
    ("/models/my.model/classify", 400, "invalid model name"),
    ("/v2/models/UPPER/infer", 400, "invalid model name"),
])
def test_bad_repository_requests_are_4xx_json_and_others_keep_serving(repo, path, status, fragment):
    r = httpx.post(repo.url + path, timeout=60)
    assert r.status_code == status and r.headers["content-type"].startswith("application/json"), r.text
    assert fragment in r.json()["error"], r.text
    assert httpx.get(repo.url + "/readyz").status_code == 200
    assert post_images(repo.url, [("one.png", repo.tests["one"][0])], route="/models/mnist-pair/classify").status_code == 200


def test_failed_load_is_unavailable_with_its_reason(repo):
    httpx.post(repo.url + "/v2/repository/models/broken/load", timeout=60)
    broken = [e for (n, _), e in _index(repo.url).items() if n == "broken"]
    assert broken and broken[0]["state"] == "UNAVAILABLE" and "ONNX Runtime cannot load it" in broken[0]["reason"]
    bad_body = httpx.post(repo.url + "/v2/repository/models/loadable/load", json={"parameters": {"config": "{}"}})
    assert bad_body.status_code == 400 and "only 'version'" in bad_body.json()["error"]
