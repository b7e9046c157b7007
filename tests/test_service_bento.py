"""`bentoml build` packs the service and the store's models; `bentoml serve <bento>` serves it from
outside the repository; `python -m service.examples` prints calls that work against a live server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import httpx
import pytest
import yaml
from harness import ROOT, eager_probs, post_images, sibling_home

from devtools.launch import BIN, spawn_service
from service.http.pages import FILES, UI_DIR

pytestmark = pytest.mark.slow


def test_build_and_serve_the_bento(zoo_server, tmp_path):
    home = sibling_home(zoo_server, tmp_path / "home")  # own metrics directory, same store
    env = {**os.environ, "BENTOML_HOME": str(home), "MODEL_ZOO_THREADS": "1"}
    done = subprocess.run([str(BIN / "bentoml"), "build", "--output", "tag"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    tag = done.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith("model_zoo:")
    bento_dir = home / "bentos" / "model_zoo" / tag.split(":")[1]
    manifest = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    packed = {m["tag"].split(":")[0] for s in manifest["services"] for m in s["models"]}
    assert packed == {"mnist-mlp", "sine-rnn", "transfer-resnet18"}  # exactly the default models in the store
    sources = {p.relative_to(bento_dir / "src").as_posix() for p in (bento_dir / "src").rglob("*") if p.is_file()}
    assert {f"service/ui/{name}" for name in FILES} <= sources  # the browser demo ships with the bento
    assert "service/app.py" in sources and not any(s.startswith(("training/", "export/", "tests/")) for s in sources)

    with spawn_service(home, tmp_path / "bento.log", {"MODEL_ZOO_THREADS": "1"}, target=tag, cwd=tmp_path) as server:
        server.wait_ready(90)
        r = post_images(server.url, zoo_server.digits[:3])
        assert r.status_code == 200, r.text
        assert [x["index"] for x in r.json()] == list(eager_probs(zoo_server.mlp, zoo_server.x_test[:3]).argmax(1))
        page = httpx.get(server.url + "/ui/app.js")
        assert page.status_code == 200 and page.text == (UI_DIR / "app.js").read_text()


def test_examples_print_working_calls(zoo_server):
    port = zoo_server.url.rsplit(":", 1)[1]
    out = subprocess.run([sys.executable, "-m", "service.examples", "--port", port], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    commands = [line.strip() for line in out.splitlines() if line.strip().startswith("curl ")]
    assert len(commands) == 2 and "/classify_digit" in commands[0] and "/forecast_sine" in commands[1]
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed; the commands were printed")
    digit = json.loads(subprocess.run(commands[0], shell=True, capture_output=True, text=True, check=True).stdout)
    assert digit[0]["label"] == "7"  # service/examples/digit7.png is MNIST test image 0, a 7
    forecast = json.loads(subprocess.run(commands[1], shell=True, capture_output=True, text=True, check=True).stdout)
    assert len(forecast["forecast"]) == 10

    bad = subprocess.run([sys.executable, "-m", "service.examples", "--port", "70000"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--port 70000" in bad.stderr
