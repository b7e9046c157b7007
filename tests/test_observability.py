"""Observability over HTTP against a real two-worker ``bentoml serve`` (issue 28): Triton's statistics
extension summed over the workers (and read by tritonclient unchanged), ``Server-Timing`` and
``X-Request-Id`` on the answers, bounded labels under odd paths, the Grafana dashboard's metrics and
``zoo stats``. The units behind them: tests/test_observability_units.py.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from harness import post_images, serve, sibling_home
from test_observability_units import parse_server_timing

SERVED = {"mnist-mlp", "sine-rnn"}
HISTORY = {"history": [round(float(np.sin(0.204 * i)), 4) for i in range(20)], "steps": 5}
DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "model-zoo.json"


@pytest.fixture(scope="module")
def two_workers(zoo_server, tmp_path_factory):
    home = sibling_home(zoo_server, tmp_path_factory.mktemp("observability"))
    log = home.parent / "server.log"
    with serve(home, log, {"MODEL_ZOO_MODELS": ",".join(sorted(SERVED)), "MODEL_ZOO_WORKERS": "2"}) as server:
        yield server


def _stats(url: str, name: str) -> dict:
    r = httpx.get(f"{url}/v2/models/{name}/stats", timeout=30)
    assert r.status_code == 200, r.text
    [entry] = r.json()["model_stats"]
    return entry


def _input_rows(zoo_server, url: str, n: int) -> dict:
    shape = httpx.get(f"{url}/v2/models/mnist-mlp", timeout=10).json()["inputs"][0]["shape"][1:]
    x = zoo_server.x_test[:n].numpy().reshape(n, *shape)
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [n, *shape], "data": x.ravel().tolist()}]}


def _worker_counts(server, model: str) -> list[float]:
    """Successful requests of ``model`` per worker, each read from that worker's own metric file alone
    (prometheus_client's public collector over a directory holding only it)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = []
    for proc in server.workers():
        one = Path(server.log.parent / f"prom-{proc.pid}")
        one.mkdir(exist_ok=True)
        for f in (server.home / "prometheus_multiproc_dir").glob(f"histogram_{proc.pid}.db"):
            shutil.copy(f, one / f.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(one))
        counts.append(sum(s.value for fam in registry.collect() for s in fam.samples
                          if s.name == "model_zoo_request_seconds_count" and s.labels == {"model": model, "outcome": "success"}))
    return counts


def test_statistics_count_every_request_of_every_worker_and_batches_form(two_workers, zoo_server):
    url = two_workers.url
    before = _stats(url, "mnist-mlp")
    before_workers = _worker_counts(two_workers, "mnist-mlp")
    images, threads_n, rows = 160, 32, 3
    statuses: list[int] = []
    lock = threading.Lock()
    oip_body = _input_rows(zoo_server, url, rows)

    def client(i: int) -> None:
        with httpx.Client(timeout=60) as c:  # a connection per client: the kernel spreads them over the workers
            got = []
            for j in range(i, images, threads_n):
                name, png = zoo_server.digits[j % len(zoo_server.digits)]
                got.append(c.post(url + "/classify_digit", files=[("images", (name, png, "image/png"))]).status_code)
            got.append(c.post(url + "/v2/models/mnist-mlp/infer", json=oip_body).status_code)
            if i < 5:  # a client's mistake for a served model: counted as a failure
                got.append(c.post(url + "/models/mnist-mlp/classify",
                                  files=[("images", ("bad.png", b"\x89PNG\r\n\x1a\nnot", "image/png"))]).status_code)
            with lock:
                statuses.extend(got)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads_n)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert sorted(set(statuses)) == [200, 400] and statuses.count(400) == 5
    after = _stats(url, "mnist-mlp")
    per_worker = [a - b for a, b in zip(_worker_counts(two_workers, "mnist-mlp"), before_workers)]

    def delta(*keys: str) -> int:
        a, b = after, before
        for k in keys:
            a, b = a[k], b[k]
        return a - b

    ok = images + threads_n
    assert delta("inference_stats", "success", "count") == ok
    assert delta("inference_stats", "fail", "count") == 5
    for phase in ("queue", "compute_input", "compute_infer", "compute_output"):
        assert delta("inference_stats", phase, "count") == ok and delta("inference_stats", phase, "ns") > 0
    assert delta("inference_count") == images + threads_n * rows  # items
    # both workers answered, and the statistics are the sum of what each one's own file holds
    assert len(per_worker) == 2 and min(per_worker) > 0 and sum(per_worker) == ok
    sizes_before = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    grown = {b["batch_size"]: b["compute_infer"]["count"] - sizes_before.get(b["batch_size"], 0)
             for b in after["batch_stats"]}
    assert sum(grown.values()) == delta("execution_count") < ok  # fewer model calls than requests
    assert sum(size * n for size, n in grown.items()) == delta("inference_count")
    assert max(size for size, n in grown.items() if n > 0) > 1  # batches formed across requests
    assert after["last_inference"] >= int((time.time() - 120) * 1000) and after["version"]


def test_tritonclient_reads_the_statistics_unchanged(two_workers):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    url = two_workers.url
    post_images(url, [("x.png", _png_digit())])
    httpx.post(url + "/forecast_sine", json=HISTORY, timeout=30).raise_for_status()
    client = triton.InferenceServerClient(url.removeprefix("http://"))
    version = httpx.get(url + "/v2/models/mnist-mlp", timeout=10).json()["versions"][0]
    one = client.get_inference_statistics("mnist-mlp")
    assert one == httpx.get(url + "/v2/models/mnist-mlp/stats", timeout=10).json()
    assert client.get_inference_statistics("mnist-mlp", version) == one
    every = client.get_inference_statistics()
    assert {e["name"] for e in every["model_stats"]} == SERVED
    sine = next(e for e in every["model_stats"] if e["name"] == "sine-rnn")
    assert sine["execution_count"] >= 1 and [b["batch_size"] for b in sine["batch_stats"]] == [1]
    with pytest.raises(InferenceServerException, match="no-such-model"):
        client.get_inference_statistics("no-such-model")
    with pytest.raises(InferenceServerException, match="no version"):
        client.get_inference_statistics("mnist-mlp", "0" * 16)
    assert "statistics" in httpx.get(url + "/v2", timeout=10).json()["extensions"]


def _some_traffic(url: str, zoo_server) -> None:
    """A success on each model and a client's mistake: every series has a sample, whatever ran before."""
    assert post_images(url, zoo_server.digits[:3]).status_code == 200
    assert httpx.post(url + "/forecast_sine", json=HISTORY, timeout=30).status_code == 200
    bad = post_images(url, [("bad.png", b"\x89PNG\r\n\x1a\nnot")], route="/models/mnist-mlp/classify")
    assert bad.status_code == 400


def _png_digit() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("route", ["/classify_digit", "/models/mnist-mlp/classify", "/v2/models/mnist-mlp/infer",
                                   "/forecast_sine", "/models/sine-rnn/forecast"])
def test_every_inference_answer_says_where_its_time_went(two_workers, zoo_server, route):
    url = two_workers.url
    rid = f"test-{route.strip('/').replace('/', '.')}"
    t0 = time.perf_counter()
    if "infer" in route:
        r = httpx.post(url + route, json=_input_rows(zoo_server, url, 2), headers={"X-Request-Id": rid}, timeout=30)
    elif "forecast" in route:
        r = httpx.post(url + route, json=HISTORY, headers={"X-Request-Id": rid}, timeout=30)
    else:
        r = post_images(url, zoo_server.digits[:2], route=route, headers={"X-Request-Id": rid})
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == rid
    parts = parse_server_timing(r.headers["server-timing"])
    assert set(parts) == {"decode", "queue", "infer", "encode", "total", "batch"}
    assert all(v >= 0 for v in parts.values())
    assert sum(parts[k] for k in ("decode", "queue", "infer", "encode")) <= parts["total"] <= elapsed_ms
    assert parts["infer"] > 0 and parts["batch"] >= (1 if "forecast" in route else 2)  # 2 items sent


def test_a_request_id_is_echoed_or_made_and_errors_are_logged_with_it(two_workers):
    url = two_workers.url
    r = httpx.post(url + "/models/no-such-model/classify", files=[("images", ("a.png", b"x", "image/png"))],
                   headers={"X-Request-Id": "lost-model-42"}, timeout=10)
    assert r.status_code == 404 and r.headers["x-request-id"] == "lost-model-42"
    assert "server-timing" not in r.headers  # no model phases ran
    made = httpx.get(url + "/v2", timeout=10).headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    for unsafe in ("a b", "x" * 129, "<script>", "ok;evil"):
        got = httpx.get(url + "/nope", headers={"X-Request-Id": unsafe}, timeout=10)
        assert got.status_code == 404 and re.fullmatch(r"[0-9a-f]{32}", got.headers["x-request-id"])
    deadline = time.monotonic() + 10
    while "request_id=lost-model-42" not in two_workers.log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the 404's log line does not name its request id"
        time.sleep(0.2)
    line = next(s for s in two_workers.log.read_text(errors="replace").splitlines() if "request_id=lost-model-42" in s)
    assert "/models/no-such-model/classify" in line and "404" in line


def _metric_samples(url: str) -> list:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=30).text
    return [s for fam in text_string_to_metric_families(text) for s in fam.samples]


def test_label_values_stay_bounded_under_odd_paths(two_workers):
    url = two_workers.url
    odd = [f"m{i}" for i in range(25)] + ["x" * 300, "MNIST-MLP", "a.b", "%2e%2e", "stats", "mnist-mlp%00"]
    with httpx.Client(timeout=10) as c:
        for name in odd:
            c.post(f"{url}/models/{name}/classify", files=[("images", ("a.png", b"x", "image/png"))])
            c.post(f"{url}/models/{name}/forecast", json=HISTORY)
            c.post(f"{url}/v2/models/{name}/infer", json={"inputs": []})
            c.get(f"{url}/v2/models/{name}/stats")
            c.get(f"{url}/v2/models/{name}/versions/{name}/stats")
        c.post(url + "/models/sine-rnn/classify", files=[("images", ("a.png", b"x", "image/png"))])  # wrong verb
        c.post(url + "/models/mnist-mlp/forecast", json=HISTORY)
    ours = [s for s in _metric_samples(url) if s.name.startswith("model_zoo_")]
    assert {s.labels["model"] for s in ours if "model" in s.labels} <= SERVED
    reasons = {s.labels["reason"] for s in ours if "reason" in s.labels}
    assert reasons and all(re.fullmatch(r"[a-z_]{3,40}", r) for r in reasons) and "not_found" in reasons
    assert all(1 <= int(s.labels["batch_size"]) <= 128 for s in ours if "batch_size" in s.labels)
    assert {s.labels["phase"] for s in ours if "phase" in s.labels} <= {"input", "infer", "output"}


def _promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers not followed by ``(`` (a function) and not
    inside ``{...}`` or ``by (...)``/``without (...)`` (labels), not keywords, not a range ``[5m]``."""
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r'"[^"]*"', "", expr)  # strings (label_replace arguments, le="+Inf")
    words = [m.group() for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
             if not expr[m.end():].lstrip().startswith("(")]
    keywords = {"by", "without", "on", "ignoring", "and", "or", "unless", "offset", "bool", "inf", "nan"}
    return {w for w in words if w not in keywords and not re.fullmatch(r"\d+(ms|s|m|h|d)?", w)}


def test_every_grafana_expression_names_a_metric_the_service_exports(two_workers, zoo_server):
    _some_traffic(two_workers.url, zoo_server)
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    exported = {s.name for s in _metric_samples(two_workers.url)}
    for expr in exprs:
        names = _promql_metrics(expr)
        assert names, f"no metric in {expr!r}"
        missing = names - exported
        assert not missing, f"{expr!r} names {sorted(missing)}, which /metrics does not export"
    templated = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    assert "model" in templated


def test_zoo_stats_reports_what_the_server_counted(two_workers, zoo_server, capsys):
    from clients.cli import main

    url = two_workers.url
    _some_traffic(url, zoo_server)
    assert main(["stats", "--url", url, "--json", "mnist-mlp"]) == 0
    report = json.loads(capsys.readouterr().out)
    [row] = report["models"]
    triton = _stats(url, "mnist-mlp")["inference_stats"]
    assert row["model"] == "mnist-mlp" and row["requests"] == triton["success"]["count"]
    assert row["errors"] and sum(row["errors"].values()) == triton["fail"]["count"]
    assert 1 <= row["mean_batch"] <= 128
    assert 0 < row["queue_p50_ms"] <= row["queue_p99_ms"] and 0 < row["infer_p50_ms"] <= row["infer_p99_ms"]
    assert main(["stats", "--url", url]) == 0
    table = capsys.readouterr().out
    assert "mnist-mlp" in table and "sine-rnn" in table and "p99" in table
