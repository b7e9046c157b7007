"""The client tools against a real ``bentoml serve`` (the ``zoo_server`` fixture of tests/conftest.py).

The server holds an MLP trained briefly on real MNIST and a small GRU; answers are checked
against the service's direct HTTP answer and against eager PyTorch on the same weights.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from clients.client import AsyncZooClient, ForecastWarning, ZooClient
from clients.transport import ZooError
from harness import eager_forecast, eager_probs

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def zoo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clients", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def direct_labels(url: str, files: list[tuple[str, bytes]]) -> list[str]:
    """The service's own answer, asked without the client code under test."""
    r = httpx.post(url + "/classify_digit", files=[("images", (n, d, "image/png")) for n, d in files], timeout=60)
    assert r.status_code == 200, r.text
    return [res["label"] for res in r.json()]


@pytest.fixture(scope="module")
def digit_dir(zoo_server, tmp_path_factory):
    """24 real MNIST test digits in one folder per class, plus three broken files in class folders."""
    root = tmp_path_factory.mktemp("digits")
    truth = {}
    for i, (name, data) in enumerate(zoo_server.digits[:24]):
        label = str(int(zoo_server.y_test[i]))
        (root / label).mkdir(exist_ok=True)
        (root / label / name).write_bytes(data)
        truth[str(root / label / name)] = i
    bad = {root / "1" / "truncated.png": zoo_server.digits[30][1][:60],  # a PNG cut off mid-IDAT
           root / "7" / "text.png": b"this is not an image\n",
           root / "7" / "empty.png": b""}
    for path, data in bad.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    return root, truth, {str(p) for p in bad}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_classify_folder_reports_broken_files_and_matches_service(zoo_server, digit_dir, tmp_path):
    root, truth, bad = digit_dir
    out = tmp_path / "results.jsonl"
    done = zoo("classify", "--url", zoo_server.url, "--model", "mnist-mlp", str(root),
               "--batch-size", "5", "--concurrency", "3", "--out", str(out))
    assert done.returncode == 3, done.stderr  # finished, with rejected files
    assert "Traceback" not in done.stderr
    records = read_jsonl(out)
    by_path = {r["path"]: r for r in records}
    assert len(records) == len(by_path) == len(truth) + len(bad)
    for path in bad:  # each broken file is reported by name with the server's reason, and recorded
        assert by_path[path]["status"] == "rejected"
        assert os.path.basename(path) in by_path[path]["error"]
        assert f"rejected {path}: " in done.stderr
    ok = {p: r for p, r in by_path.items() if r["status"] == "ok"}
    assert set(ok) == set(truth)
    # Every label equals the service's direct answer and the eager model's top-1.
    order = sorted(truth, key=truth.get)
    direct = direct_labels(zoo_server.url, [zoo_server.digits[truth[p]] for p in order])
    eager = eager_probs(zoo_server.mlp, zoo_server.x_test[[truth[p] for p in order]]).argmax(1)
    assert [ok[p]["label"] for p in order] == direct == [str(int(i)) for i in eager]
    for p in order:
        assert ok[p]["top_k"][0]["label"] == ok[p]["label"] and 0 < ok[p]["score"] <= 1
    # Accuracy over the class folders, as printed, agrees with the records.
    correct = sum(ok[p]["label"] == Path(p).parent.name for p in order)
    assert f"accuracy: {correct / len(order):.4f} ({correct}/{len(order)} images in class folders)" in done.stderr
    assert "true\\pred" in done.stderr
    assert f"summary: {len(records)} images: {len(truth)} classified, 3 rejected, 0 failed" in done.stderr


def test_resume_skips_recorded_paths_and_drops_a_cut_off_line(zoo_server, digit_dir, tmp_path):
    root, truth, bad = digit_dir
    out = tmp_path / "results.csv"
    first = sorted(truth)[:5]
    with out.open("w") as f:  # a previous run recorded 5 images (marked label "X"), then died mid-line
        f.write("path,status,label,index,score,top_k,error\n")
        for p in first:
            f.write(f'{p},ok,X,99,1.0,[],\n')
        f.write(f"{sorted(truth)[5]},ok,3,")
    done = zoo("classify", "--url", zoo_server.url, "--model", "mnist-mlp", str(root), "--out", str(out),
               "--batch-size", "4")
    assert done.returncode == 3, done.stderr
    rows = list(csv.DictReader(out.open()))
    paths = [r["path"] for r in rows]
    assert len(paths) == len(set(paths)) == len(truth) + len(bad)  # no duplicates, nothing missing
    assert all(r["label"] == "X" for r in rows if r["path"] in first)  # recorded ones were not re-sent
    assert f"5 already in {out}" in done.stderr
    again = zoo("classify", "--url", zoo_server.url, "--model", "mnist-mlp", str(root), "--out", str(out))
    assert again.returncode == 0 and f"0 classified, 0 rejected, 0 failed, {len(paths)} already" in again.stderr
    assert out.read_text().count("\n") == len(paths) + 1


def test_killed_run_resumes_without_duplicates(zoo_server, digit_dir, tmp_path):
    root, truth, bad = digit_dir
    out = tmp_path / "results.jsonl"
    args = ["classify", "--url", zoo_server.url, "--model", "mnist-mlp", str(root), "--out", str(out),
            "--batch-size", "1", "--concurrency", "1", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "clients", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if out.exists() and out.read_text().count("\n") >= 3:
            proc.send_signal(signal.SIGKILL)  # no chance to clean up: what is on disk must be enough
            break
        time.sleep(0.005)
    proc.wait(30)
    before = out.read_text().count("\n")  # complete records on disk when the process died
    assert proc.returncode == -signal.SIGKILL and 3 <= before < len(truth) + len(bad)  # killed midway
    done = zoo(*args)
    assert done.returncode == 3, done.stderr
    records = read_jsonl(out)
    assert sorted(r["path"] for r in records) == sorted([*truth, *bad])
    assert f"{before} already in" in done.stderr


def test_forecast_cli_matches_service_and_eager(zoo_server, tmp_path):
    history = [float(np.sin(0.1 * 1.1 * k + 0.3)) for k in range(30)]
    (tmp_path / "h.csv").write_text("value\n" + "\n".join(map(repr, history)) + "\n")
    plot = tmp_path / "f.png"
    done = zoo("forecast", "--url", zoo_server.url, "--csv", str(tmp_path / "h.csv"), "--steps", "12",
               "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    got = [float(v) for v in done.stdout.strip().split(",")]
    direct = httpx.post(zoo_server.url + "/forecast_sine", json={"history": history, "steps": 12}).json()["forecast"]
    assert got == direct  # repr round-trips floats exactly
    np.testing.assert_allclose(got, eager_forecast(zoo_server.rnn, history, 12), atol=1e-4)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # 0.11 rad per step is outside the model's band: the service's warning is one stderr line
    warned = [line for line in done.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "angular frequency" in warned[0], done.stderr
    bad = zoo("forecast", "--url", zoo_server.url, "--history", "0.1", "--steps", "100000")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "HTTP 4" in bad.stderr, bad.stderr


def test_forecast_warning_reaches_python_and_json_callers(zoo_server):
    outside = [float(v) for v in 3.0 * np.sin(0.204 * np.arange(20))]
    inside = [float(v) for v in np.sin(0.204 * np.arange(20))]
    with ZooClient(zoo_server.url) as client:
        with pytest.warns(ForecastWarning, match="amplitude 3 is outside"):
            assert len(client.forecast(outside, 5)) == 5
        with warnings.catch_warnings():
            warnings.simplefilter("error", ForecastWarning)
            assert len(client.forecast(inside, 5)) == 5  # in the band: no warning

    async def run_async() -> list[float]:
        async with AsyncZooClient(zoo_server.url) as client:
            return await client.forecast(outside, 3)
    with pytest.warns(ForecastWarning, match="amplitude 3 is outside"):
        assert len(asyncio.run(run_async())) == 3
    done = zoo("forecast", "--url", zoo_server.url, "--history", ",".join(map(repr, outside)), "--steps", "4",
               "--json")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert len(body["forecast"]) == 4 and "amplitude 3 is outside" in body["warning"]
    quiet = zoo("forecast", "--url", zoo_server.url, "--history", ",".join(map(repr, inside)), "--steps", "4")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr


def test_python_clients_classify_infer_and_health(zoo_server):
    files = zoo_server.digits[:6]
    x = zoo_server.x_test[:6].numpy()
    with torch.no_grad():
        logits = zoo_server.mlp(zoo_server.x_test[:6]).numpy()
    with ZooClient(zoo_server.url) as client:
        results = client.classify("mnist-mlp", [data for _, data in files])
        assert [r["label"] for r in results] == direct_labels(zoo_server.url, files)
        as_json = client.infer("mnist-mlp", {"input": x}, ["logits"])
        as_binary = client.infer("mnist-mlp", {"input": x}, ["logits"], binary=True)
        top = client.infer("mnist-mlp", {"input": x}, [{"name": "logits", "parameters": {"classification": 2}}])
        health = client.health()
        with pytest.raises(ZooError) as info:
            client.classify("mnist-mlp", b"")
    np.testing.assert_allclose(as_json["logits"], logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(as_binary["logits"], as_json["logits"])  # same floats, two encodings
    assert as_binary["logits"].dtype == np.float32 and as_binary["logits"].shape == (6, 10)
    assert [s[0].split(":")[1] for s in top["logits"]] == [str(i) for i in logits.argmax(1)]
    assert info.value.status == 400 and "image0.bin" in info.value.message
    assert health["live"] and health["ready"] and {"mnist-mlp", "sine-rnn"} <= set(health["models"])

    async def run_async():
        async with AsyncZooClient(zoo_server.url) as client:
            return await asyncio.gather(client.classify("mnist-mlp", files[0][1]),
                                        client.forecast([0.0, 0.1, 0.2], 3))

    (one,), forecast = asyncio.run(run_async())
    assert one == results[0] and len(forecast) == 3


def test_health_and_bench_cli(zoo_server, tmp_path):
    health = zoo("health", "--url", zoo_server.url)
    assert health.returncode == 0, health.stderr
    assert "live, ready" in health.stdout and "mnist-mlp: ready" in health.stdout and "sine-rnn: ready" in health.stdout
    report = tmp_path / "bench.json"
    done = zoo("bench", "--url", zoo_server.url, "--endpoint", "classify_digit", "--concurrency", "1,4",
               "--requests", "24", "--images-per-request", "2", "--json", str(report))
    assert done.returncode == 0, done.stderr
    result = json.loads(report.read_text())
    assert [lv["concurrency"] for lv in result["levels"]] == [1, 4]
    for lv in result["levels"]:
        assert lv["requests"] == 24 and lv["ok"] + sum(lv["errors"].values()) == 24
        assert lv["ok"] > 0 and lv["p50_ms"] <= lv["p90_ms"] <= lv["p99_ms"] <= lv["max_ms"]
        assert lv["items_per_s"] == pytest.approx(2 * lv["requests_per_s"], rel=0.01)
        assert 0 <= lv["client_cpu_pct"]
    table = done.stdout.strip().splitlines()
    assert table[0].startswith("| concurrency | requests |") and [r.split()[1] for r in table[2:]] == ["1", "4"]
    fc = zoo("bench", "--url", zoo_server.url, "--endpoint", "forecast_sine", "--concurrency", "2",
             "--duration", "1", "--processes", "2", "--warmup", "1")
    assert fc.returncode == 0, fc.stderr
    assert "| 2 |" in fc.stdout
