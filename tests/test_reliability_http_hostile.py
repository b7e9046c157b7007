"""Hostile framing, bodies on open routes, forged redirects and idle sockets, over HTTP (issue 18).

Raw requests (tests/hostile/http_corpus.py) against the session's real ``bentoml serve``: each gets its
documented JSON answer, and a refused body is *not read*: the server answers and closes the connection
long before the client has sent it all. With a bearer token set (a second server), every route but the
GET/HEAD probes refuses a body without reading it, and ``/metrics`` needs the token.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent / "hostile"))
import http_corpus  # noqa: E402

pytestmark = pytest.mark.slow
CASES = {c.name: c for c in http_corpus.cases()}
TOKEN = "hostile-token-0123456789"


def port(url: str) -> int:
    return urlsplit(url).port


@pytest.mark.parametrize("name", list(CASES))
def test_framing_case_is_answered_without_reading_the_body(zoo_server, name):
    case = CASES[name]
    answer = http_corpus.send(port(zoo_server.url), case.head, case.chunked_mib)
    assert answer.status == case.status, answer
    assert answer.headers["content-type"].startswith("application/json")
    assert case.fragment in json.loads(answer.body)["error"]
    assert answer.closed, "a refused body must not be drained off a kept-alive connection"
    if case.chunked_mib:
        assert answer.sent_mib < case.chunked_mib, f"the server read all {answer.sent_mib} MiB before answering"
    assert httpx.get(zoo_server.url + "/readyz").status_code == 200


def test_a_body_within_the_cap_still_streams_through(zoo_server):
    """Chunked (no Content-Length) and within the cap: counted, not refused, answered by the endpoint."""
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}]})

    def chunks():
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000].encode()

    r = httpx.post(zoo_server.url + "/v2/models/mnist-mlp/infer", content=chunks())
    assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 10]


def test_redirect_location_ignores_a_forged_host(zoo_server):
    # a name the server does not serve is refused outright (DNS-rebinding guard, no token set) ...
    r = httpx.get(zoo_server.url + "/metrics/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert r.status_code == 403 and "MODEL_ZOO_ALLOWED_HOSTS" in r.json()["error"]
    # ... and a served one never makes the redirect absolute: it stays on the host the client connected to
    r = httpx.get(zoo_server.url + "/metrics/", headers={"Host": "other.localhost"}, follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["location"] == "/metrics"
    r = httpx.get(zoo_server.url + "/v2/health/live/?x=1", headers={"Host": "other.localhost"}, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/v2/health/live?x=1"


def test_idle_and_unfinished_header_connections_are_closed(zoo_server):
    """MODEL_ZOO_HEADER_TIMEOUT_S (10 s by default): silent sockets and headers sent a byte at a time are
    closed; a kept-alive connection that sends its next request in time is served."""
    from service.config import Settings

    timeout = Settings().header_timeout_s
    p = port(zoo_server.url)
    idle = [socket.create_connection(("127.0.0.1", p)) for _ in range(4)]
    slow = [socket.create_connection(("127.0.0.1", p)) for _ in range(4)]
    for s in slow:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n")
    with httpx.Client() as kept:  # one request now, the next before the deadline, on the same connection
        assert kept.get(zoo_server.url + "/livez").status_code == 200
        t0 = time.monotonic()
        closed_at: dict[int, float] = {}
        while time.monotonic() - t0 < timeout + 8 and len(closed_at) < 8:
            for i, s in enumerate(idle + slow):
                if i in closed_at:
                    continue
                if i >= 4:
                    try:
                        s.sendall(b"X")  # trickle one more byte of an unfinished header line
                    except OSError:
                        pass
                s.settimeout(0.05)
                try:
                    if s.recv(64) == b"":
                        closed_at[i] = time.monotonic() - t0
                except socket.timeout:
                    pass
                except OSError:
                    closed_at[i] = time.monotonic() - t0
            if 2.0 < time.monotonic() - t0 < 2.6:
                assert kept.get(zoo_server.url + "/livez").status_code == 200
            time.sleep(0.25)
    for s in idle + slow:
        s.close()
    assert len(closed_at) == 8, f"still open after {timeout + 8:.0f} s: {8 - len(closed_at)} of 8"
    assert min(closed_at.values()) > timeout - 3, closed_at  # not before the deadline (opened ~1 s before t0)


# ------------------------------------------------------------ with a bearer token: a second server

@pytest.fixture(scope="module")
def token_server(zoo_server, tmp_path_factory):
    from harness import serve, sibling_home

    tmp = tmp_path_factory.mktemp("token")
    env = {"MODEL_ZOO_API_TOKEN": TOKEN, "MODEL_ZOO_MODELS": "mnist-mlp,sine-rnn"}
    with serve(sibling_home(zoo_server, tmp), tmp / "token.log", env) as served:
        yield served


def test_bodies_on_open_routes_need_the_token_and_are_not_read(token_server):
    for path in ("/livez", "/readyz", "/v2/health/live"):
        head = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n".encode()
        answer = http_corpus.send(token_server.port, head, 40)
        assert answer.status == 401 and json.loads(answer.body) == {"error": "unauthorized"}, (path, answer)
        assert answer.closed and answer.sent_mib < 40, (path, answer.sent_mib)
    for path in ("/livez", "/readyz", "/v2/health/live", "/v2/health/ready"):  # the probes stay open
        assert httpx.get(token_server.url + path).status_code == 200, path
        assert httpx.head(token_server.url + path).status_code == 200, path


def test_metrics_need_the_token(token_server):
    r = httpx.get(token_server.url + "/metrics")
    assert r.status_code == 401 and r.json() == {"error": "unauthorized"}
    r = httpx.get(token_server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and "bentoml_service_request_total" in r.text


def test_metric_labels_stay_bounded_whatever_paths_are_asked_for(token_server):
    """Unauthenticated unique paths (401) and authenticated unknown model names (404) add no series:
    requests are labelled by route template, every unknown path by one label."""
    from service.http.routes import UNMATCHED
    from service.http.routes import table as contract

    CONTRACT = contract()

    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=token_server.url) as client:
        for i in range(150):
            client.get(f"/probe-{i:04d}-" + "a" * 2000)  # 401, unique path
            client.post(f"/v2/models/m{i:04d}/infer", json={}, headers=auth)  # 404, unique model name
        page = client.get("/metrics", headers=auth).text
    labels = set()
    for line in page.splitlines():
        if line.startswith("bentoml_service_request_total{"):
            labels.add(line.split('endpoint="', 1)[1].split('"', 1)[0])
    assert "/v2/models/{name}/infer" in labels and UNMATCHED in labels, labels
    assert labels <= set(CONTRACT) | {UNMATCHED}, labels - set(CONTRACT)
    assert "probe-0001" not in page and "m0001" not in page  # no requested path shows up
    assert len(page) < 200_000, len(page)
