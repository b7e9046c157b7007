"""What a web page cannot make the server do (service/http/origin.py, issue 25.5), in process and over HTTP.

In process: OriginGuard around the real OIP app (no BentoML service runs, so a request that passes gets
the app's own answer, never 403). Over HTTP: the shared server in its default set-up (no token, model
control on) refuses what a page could send on its own, and tritonclient's calls still pass
(tests/test_service_repository.py runs them unchanged).
"""

from __future__ import annotations

import httpx
import pytest
from starlette.testclient import TestClient

from service import config
from service.http.oip import oip_app
from service.http.origin import OriginGuard, host_allowed, host_name, same_origin

UNLOAD = "/v2/repository/models/no-such-model/unload"
DEFAULT_HOSTS = config.Settings().allowed_hosts


def client(hosts=DEFAULT_HOSTS, origins=()) -> TestClient:
    return TestClient(OriginGuard(oip_app, hosts, origins), base_url="http://localhost:3000",
                      raise_server_exceptions=False)


def assert_forbidden(r, fragment: str) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/json"
    assert fragment in r.json()["error"], r.json()


def test_host_names():
    assert host_name("LocalHost:3000") == "localhost"
    assert host_name("[::1]:3000") == "::1"
    assert host_name("example.com.") == "example.com"
    for name in ("localhost", "ui.localhost", "127.0.0.1", "10.1.2.3", "::1"):
        assert host_allowed(name, DEFAULT_HOSTS), name
    for name in ("evil.example", "localhost.evil.example", "127.0.0.1.nip.io", ""):
        assert not host_allowed(name, DEFAULT_HOSTS), name
    assert host_allowed("api.example.com", ("*.example.com",)) and not host_allowed("example.com", ("*.example.com",))
    assert host_allowed("anything", ("*",))
    assert same_origin("http://localhost:3000", "localhost:3000") and same_origin("https://[::1]:3000", "[::1]:3000")
    assert not same_origin("http://localhost:3001", "localhost:3000") and not same_origin("null", "localhost:3000")


def test_settings_defaults_follow_the_token(monkeypatch):
    for var in ("MODEL_ZOO_API_TOKEN", "MODEL_ZOO_ALLOWED_HOSTS", "MODEL_ZOO_ALLOWED_ORIGINS", "MODEL_ZOO_MODEL_CONTROL"):
        monkeypatch.delenv(var, raising=False)
    s = config.Settings.from_env()
    assert s.model_control and s.allowed_hosts == ("localhost", "*.localhost") and s.allowed_origins == ()
    monkeypatch.setenv("MODEL_ZOO_API_TOKEN", "t")  # a rebinding page cannot present the token
    assert config.Settings.from_env().allowed_hosts == ("*",)
    monkeypatch.setenv("MODEL_ZOO_ALLOWED_HOSTS", "Zoo.Example.com, *.internal")
    monkeypatch.setenv("MODEL_ZOO_ALLOWED_ORIGINS", "https://App.example.com/")
    monkeypatch.setenv("MODEL_ZOO_MODEL_CONTROL", "0")
    s = config.Settings.from_env()
    assert s.allowed_hosts == ("zoo.example.com", "*.internal") and s.allowed_origins == ("https://app.example.com",)
    assert not s.model_control
    monkeypatch.setenv("MODEL_ZOO_MODEL_CONTROL", "maybe")
    with pytest.raises(config.ConfigError, match="MODEL_ZOO_MODEL_CONTROL"):
        config.Settings.from_env()


def test_a_foreign_host_is_refused_an_ip_or_localhost_is_not():
    c = client()
    assert_forbidden(c.get("/v2", headers={"host": "rebound.evil.example:3000"}), "MODEL_ZOO_ALLOWED_HOSTS")
    assert_forbidden(c.post(UNLOAD, headers={"host": "rebound.evil.example"}), "'rebound.evil.example'")
    for host in ("localhost:3000", "127.0.0.1:3000", "[::1]:3000", "10.0.0.7:3000", "ui.localhost"):
        assert c.get("/v2", headers={"host": host}).status_code == 200, host
    assert client(hosts=("*",)).get("/v2", headers={"host": "zoo.example.com"}).status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_a_foreign_origin_cannot_change_or_run_anything(method):
    c = client()
    for origin in ("http://evil.example", "http://localhost:3001", "null", "https://localhost:3000.evil.example"):
        r = c.request(method, UNLOAD, headers={"origin": origin}, content=b"{}")
        assert_forbidden(r, "MODEL_ZOO_ALLOWED_ORIGINS")
        assert r.headers["connection"] == "close"  # its body was not read
        assert_forbidden(c.request(method, "/v2/models/mnist-mlp/infer", headers={"origin": origin}, content=b"{}"),
                         f"Origin {origin!r}")
    assert c.get("/v2", headers={"origin": "http://evil.example"}).status_code == 200  # reading needs CORS anyway


def test_same_or_listed_origin_and_no_origin_pass():
    c = client(origins=("https://app.example.com",))
    for headers in ({}, {"origin": "http://localhost:3000"}, {"origin": "https://app.example.com"},
                    {"origin": "http://localhost:3000", "content-type": "application/json; charset=utf-8"}):
        r = c.post(UNLOAD, headers=headers, content=b"{}")
        assert r.status_code != 403, (headers, r.text)  # the app's own answer: no BentoML service runs here


@pytest.mark.parametrize("kind", ["text/plain", "text/plain;charset=UTF-8", "application/x-www-form-urlencoded",
                                  "multipart/form-data; boundary=x"])
def test_model_control_takes_json_or_no_content_type(kind):
    c = client()
    for path in (UNLOAD, "/v2/repository/models/mnist-mlp/load"):
        assert_forbidden(c.post(path, headers={"content-type": kind}, content=b"{}"), "model control takes a JSON body")
    # inference and the index are not model control: their own content rules answer (not a 403)
    assert c.post("/v2/repository/index", headers={"content-type": kind}, content=b"{}").status_code != 403


def test_model_control_off_is_a_403_naming_the_setting(monkeypatch):
    monkeypatch.setenv("MODEL_ZOO_MODEL_CONTROL", "0")
    config.settings.cache_clear()
    try:
        c = TestClient(oip_app, raise_server_exceptions=False)
        for path in (UNLOAD, "/v2/repository/models/mnist-mlp/load"):
            assert_forbidden(c.post(path, json={}), "MODEL_ZOO_MODEL_CONTROL=0")
    finally:
        config.settings.cache_clear()


# ------------------------------------------------------------ over HTTP, the default set-up

@pytest.mark.slow
def test_default_server_refuses_what_a_web_page_could_send(zoo_server):
    url = zoo_server.url
    page = {"origin": "http://evil.example", "content-type": "text/plain;charset=UTF-8"}  # a no-preflight fetch
    assert_forbidden(httpx.post(url + "/v2/repository/models/mnist-mlp/unload", headers=page, content=b"{}"), "Origin")
    assert_forbidden(httpx.post(url + "/v2/repository/models/mnist-mlp/unload",
                                headers={"content-type": "text/plain"}, content=b"{}"), "JSON body")
    assert_forbidden(httpx.post(url + "/v2/repository/models/mnist-mlp/unload", headers={"host": "rebound.evil.example"}),
                     "MODEL_ZOO_ALLOWED_HOSTS")
    assert_forbidden(httpx.get(url + "/metrics", headers={"host": "rebound.evil.example"}), "DNS-rebinding")
    assert httpx.get(url + "/v2/models/mnist-mlp").status_code == 200  # still served
    own = {"origin": url, "content-type": "application/json"}  # the demo page's own request passes
    assert httpx.post(url + "/v2/repository/index", headers=own, json={"ready": True}).status_code == 200
    r = httpx.post(url + "/v2/repository/models/no-such-model/unload", headers={"origin": url})
    assert r.status_code == 404 and "not in the model store" in r.json()["error"]  # the route's own answer
