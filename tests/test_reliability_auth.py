"""Bearer-token auth (service/http/auth.py) in front of the real OIP ASGI app, in process.

The OIP app answers ``/v2`` and ``/v2/health/live`` without a BentoML service running, so the
middleware is checked around real routes: open paths stay open, protected ones need the exact token,
every refusal is the same 401 without detail, and the comparison goes through hmac.compare_digest.
The over-HTTP check against a real ``bentoml serve`` lives in test_reliability_faults.py's server.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from service.http import auth
from service.http.auth import BearerAuth, is_open, presented_token
from service.http.oip import oip_app

TOKEN = "s3cret-token-0123456789"


def client(token: str | None, monkeypatch) -> TestClient:
    monkeypatch.delenv(auth.TOKEN_ENV, raising=False)
    if token is not None:
        monkeypatch.setenv(auth.TOKEN_ENV, token)
    app = Starlette(routes=[Mount("/", app=oip_app)])
    return TestClient(BearerAuth(app), raise_server_exceptions=False)


def assert_refused(r) -> None:
    assert r.status_code == 401
    assert r.json() == {"error": "unauthorized"}  # the same body for every cause: no detail
    assert r.headers["www-authenticate"] == "Bearer"


def test_off_when_the_variable_is_unset_or_blank(monkeypatch):
    for value in (None, "", "   "):
        c = client(value, monkeypatch)
        assert c.get("/v2").status_code == 200
        assert c.get("/v2").json()["name"] == "model_zoo"


def test_open_paths_need_no_token(monkeypatch):
    c = client(TOKEN, monkeypatch)
    assert c.get("/v2/health/live").status_code == 200
    assert c.get("/v2/health/live/").status_code in (200, 307)  # trailing slash: starlette redirect, not 401
    for path in ("/livez", "/readyz", "/v2/health/ready", "/v2/health/anything",
                 "/", "/ui", "/ui/", "/ui/app.js", "/ui/nope.txt"):  # static pages: they hold no data
        assert is_open(path), path
    for path in ("/ui/x/app.js", "/uix", "/ui/../classify_digit/x",
                 "/v2", "/v2/models/mnist-mlp/infer", "/classify_digit", "/forecast_sine", "/docs.json",
                 "/v2/healthz", "/metrics", "/metricsx", "/v2/models/mnist-mlp/ready"):
        assert not is_open(path), path


def test_open_paths_are_open_to_get_and_head_only(monkeypatch):
    """A body on an open path needs the token too (it is refused before it is read), so is /metrics."""
    c = client(TOKEN, monkeypatch)
    assert c.head("/v2/health/live").status_code == 200
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = c.request(method, "/v2/health/live", content=b"x" * 1000)
        assert_refused(r)
        assert r.headers["connection"] == "close"  # the unread body is not drained off the connection
    assert_refused(c.get("/metrics"))


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": f"Bearer {TOKEN}x"},  # a longer token
    {"Authorization": f"Bearer {TOKEN[:-1]}"},  # a prefix
    {"Authorization": f"Bearer {TOKEN.upper()}"},
    {"Authorization": f"Basic {TOKEN}"},  # wrong scheme
    {"Authorization": TOKEN},  # no scheme
    {"Authorization": "Bearer "},
    {"Authorization": "Bearer"},
    {"X-Api-Token": TOKEN},  # wrong header
])
def test_missing_or_wrong_token_is_a_bare_401(monkeypatch, headers):
    c = client(TOKEN, monkeypatch)
    assert_refused(c.get("/v2", headers=headers))
    assert_refused(c.post("/v2/models/mnist-mlp/infer", headers=headers, json={"inputs": []}))
    assert_refused(c.post("/classify_digit", headers=headers, files=[("images", ("a.png", b"x", "image/png"))]))


def test_the_right_token_passes(monkeypatch):
    c = client(TOKEN, monkeypatch)
    for scheme in ("Bearer", "bearer", "BEARER"):
        r = c.get("/v2", headers={"Authorization": f"{scheme} {TOKEN}"})
        assert r.status_code == 200 and r.json()["name"] == "model_zoo"
    # past auth the app itself answers (no BentoML service runs in process, so not a 200; but not 401)
    r = c.post("/v2/models/mnist-mlp/infer", headers={"Authorization": f"Bearer {TOKEN}"}, json={"inputs": []})
    assert r.status_code != 401


def test_two_authorization_headers_are_refused():
    both = [(b"authorization", f"Bearer {TOKEN}".encode()), (b"authorization", b"Bearer other")]
    assert presented_token(both) is None
    assert presented_token([(b"Authorization", f"bearer   {TOKEN} ".encode())]) == TOKEN.encode()


def test_tokens_are_compared_with_compare_digest(monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    c = client(TOKEN, monkeypatch)
    assert_refused(c.get("/v2", headers={"Authorization": "Bearer nope"}))
    assert c.get("/v2", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert calls == [(b"nope", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())]


def test_explicit_token_overrides_the_environment(monkeypatch):
    monkeypatch.setenv(auth.TOKEN_ENV, "from-env")
    app = BearerAuth(Starlette(routes=[Mount("/", app=oip_app)]), token="given")
    c = TestClient(app)
    assert_refused(c.get("/v2", headers={"Authorization": "Bearer from-env"}))
    assert c.get("/v2", headers={"Authorization": "Bearer given"}).status_code == 200


# ------------------------------------------------------------ over HTTP, a real bentoml serve

@pytest.mark.slow
def test_token_auth_over_http(zoo_server, tmp_path):
    import httpx
    from harness import serve, sibling_home

    store = sibling_home(zoo_server, tmp_path)  # not zoo_server's home: see sibling_home
    digit = (Path(__file__).resolve().parents[1] / "service" / "examples" / "digit7.png").read_bytes()
    files = [("images", ("digit7.png", digit, "image/png"))]
    infer = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 784], "data": [0.0] * 784}]}
    env = {"MODEL_ZOO_API_TOKEN": TOKEN, "MODEL_ZOO_MODELS": "mnist-mlp"}
    with serve(store, tmp_path / "auth.log", env) as s:
        for path in ("/livez", "/readyz", "/v2/health/live", "/v2/health/ready"):
            assert httpx.get(s.url + path).status_code == 200, path  # probes need no token
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert_refused(httpx.get(s.url + "/metrics"))  # the scraper sends the token (service/README.md)
        assert httpx.get(s.url + "/metrics", headers=good).status_code == 200
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            assert_refused(httpx.post(s.url + "/classify_digit", files=files, headers=headers))
            assert_refused(httpx.post(s.url + "/v2/models/mnist-mlp/infer", json=infer, headers=headers))
            assert_refused(httpx.get(s.url + "/v2/models/mnist-mlp", headers=headers))
        r = httpx.post(s.url + "/classify_digit", files=files, headers=good)
        assert r.status_code == 200 and r.json()[0]["label"] == "7"
        r = httpx.post(s.url + "/v2/models/mnist-mlp/infer", json=infer, headers=good)
        assert r.status_code == 200 and r.json()["outputs"][0]["shape"] == [1, 10]

        def chunks():  # 40 MiB, no Content-Length: auth answers before the body-size cap reads it
            for _ in range(40):
                yield b"\0" * 2**20

        r = httpx.post(s.url + "/classify_digit", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"})
        assert_refused(r)
        # the project's own client sends the token from MODEL_ZOO_API_TOKEN
        from clients.client import ZooClient

        with ZooClient(s.url, token=TOKEN) as client:
            assert client.classify("mnist-mlp", [digit])[0]["label"] == "7"
