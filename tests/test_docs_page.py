"""``/docs``: Swagger UI from files shipped with a package (no CDN: the container may be offline), over
``/docs.json``, whose ``info`` is this service's (title, version, description), not BentoML's boilerplate.
Without a server: the mounted app's routes in Starlette's TestClient, and ``openapi.document`` over a
small real BentoML service."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import bentoml
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from service.http import openapi
from service.http.auth import is_open
from service.http.routes import BENTOML_ROUTES, MOUNTED


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(Starlette(routes=MOUNTED), base_url="http://localhost:3000")


class _Assets(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key) and (tag in ("script", "img") or (tag == "link" and attrs.get("rel") == "stylesheet")):
                self.urls.append(attrs[key])
        self._in_script = tag == "script" and not attrs.get("src")

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag):
        self._in_script = False


def test_docs_is_swagger_ui_from_same_origin_files(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    parsed = _Assets()
    parsed.feed(page.text)
    assert parsed.inline_scripts == 0  # the CSP would block one: the init script is a file
    assert parsed.urls, page.text
    types = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    for url in parsed.urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url}: not same-origin"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"] == types[url[url.rindex("."):]], url
        assert asset.headers["x-content-type-options"] == "nosniff"
    bundle = client.get("/docs/swagger-ui-bundle.js").text
    assert "SwaggerUIBundle" in bundle and len(bundle) > 500_000  # the real bundle, not a stub
    init = client.get("/docs/docs.js").text
    assert '"/docs.json"' in init and re.search(r"validatorUrl:\s*null", init)  # no badge from validator.swagger.io
    assert client.get("/docs/../pages.py").status_code == 404
    assert client.get("/docs/swagger-ui.js.map").status_code == 404  # only the files named


def test_docs_is_ours_and_open_like_the_pages():
    assert "/docs" not in BENTOML_ROUTES  # BentoML 1.4 serves no /docs: we do
    assert {"/docs", "/docs/{file}"} <= {route.path for route in MOUNTED}
    assert is_open("/docs") and is_open("/docs/swagger-ui-bundle.js")
    assert not is_open("/docs.json") and not is_open("/docs/a/b")


@bentoml.service
class _Tiny:
    @bentoml.api
    def ping(self, text: str) -> str:
        return text


def test_document_info_is_this_service():
    from importlib.metadata import version

    import zoo

    info = openapi.document(_Tiny, [])["info"]
    assert info["title"] == "Model Zoo Serving"
    assert info["version"] == zoo.__version__ == version("model-zoo-serving")
    assert "/v2" in info["description"] and "/models/{name}" in info["description"]
    text = repr(info).lower()
    assert "slack" not in text and "twitter" not in text and "none" not in text


@pytest.fixture(scope="module")
def docs_url():
    """The mounted app (its /docs.json over ``_Tiny``) on a free loopback port, in a thread."""
    import socket
    import threading
    import time

    import uvicorn

    app = Starlette(routes=MOUNTED)
    app.state.service = _Tiny
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_docs_renders_every_operation_in_chromium(docs_url):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from test_ui import _chromium

    browser = _chromium()
    try:
        browser.get(docs_url + "/docs")
        WebDriverWait(browser, 30).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock"))
        shown = {e.get_attribute("data-path") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
        assert {"/ping", "/v2/models/{name}/infer", "/models/{name}/classify"} <= shown, shown
        assert browser.find_element(By.CSS_SELECTOR, ".info .title").text.startswith("Model Zoo Serving")
        errors = [e["message"] for e in browser.get_log("browser")  # the browser's own favicon request aside
                  if e["level"] == "SEVERE" and "/favicon.ico " not in e["message"]]
        assert errors == [], errors  # a CSP violation or a missing file shows here
    finally:
        browser.quit()
