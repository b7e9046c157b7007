"""The browser demo (/ui) and the front page (/) on the shared real server (``zoo_server`` in conftest.py).

HTTP checks first (content types, unknown files, no external URL in the static files), then a real
headless Chromium (Debian's ``chromium`` + ``chromium-driver``, installed by ``make test``) driven by
Selenium: drawn digits, uploads (a real MNIST test digit, an odd-sized PNG, a corrupt and a huge
file), an empty canvas, a forecast with its plot, and the page loading nothing from outside the server.
Screenshots go to the test's temporary folder, or to docs/ui/ with ``MODEL_ZOO_UI_SCREENSHOTS=1``
(how the committed ones were made: ``MODEL_ZOO_UI_SCREENSHOTS=1 .venv/bin/python -m pytest tests/test_ui.py``).
"""

from __future__ import annotations

import io
import math
import os
import re
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
from harness import eager_forecast, eager_probs, serve, sibling_home
from PIL import Image

from service.http.pages import FILES, UI_DIR

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def shot(tmp_path: Path, name: str) -> str:
    """Where a screenshot goes: docs/ui/ when asked for (MODEL_ZOO_UI_SCREENSHOTS=1), else the test's tmp folder."""
    folder = ROOT / "docs" / "ui" if os.environ.get("MODEL_ZOO_UI_SCREENSHOTS") == "1" else tmp_path
    return str(folder / name)
WAIT_S = 30


# ---------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize("path, kind", [
    ("/", "text/html"), ("/ui", "text/html"), ("/ui/index.html", "text/html"), ("/ui/app.js", "text/javascript"),
    ("/ui/common.js", "text/javascript"), ("/ui/home.js", "text/javascript"), ("/ui/style.css", "text/css"),
])
def test_pages_and_files_are_served_with_their_types(zoo_server, path, kind):
    r = httpx.get(zoo_server.url + path)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].split(";")[0] == kind
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/ui", "/ui/index.html", "/ui/app.js", "/ui/style.css"])
def test_pages_run_only_their_own_files_and_are_never_framed(zoo_server, path):
    r = httpx.get(zoo_server.url + path)
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'self'" and csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
    assert csp["img-src"] == "'self' blob:"  # the upload preview (app.js); no inline script, style or data: anywhere
    assert "unsafe" not in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"


def test_front_page_is_ours_not_bentomls(zoo_server):
    text = httpx.get(zoo_server.url + "/").text
    assert "Model Zoo Serving" in text and 'href="/ui"' in text and "/v2/repository/index" in text
    assert "BentoML" in text and "created with BentoML" not in text  # BentoML's default index page lost


@pytest.mark.parametrize("path", ["/ui/../service.py", "/ui/..%2Fservice.py", "/ui/ui.py", "/ui/nope.js",
                                  "/ui/sub/app.js", "/ui/%2e%2e"])
def test_other_paths_under_ui_are_json_404s(zoo_server, path):
    # httpx would normalise "/ui/../x" to "/x": send the raw path as a browser or curl --path-as-is could
    with httpx.Client(base_url=zoo_server.url) as c:
        r = c.send(c.build_request("GET", httpx.URL(zoo_server.url).copy_with(raw_path=path.encode())))
    assert r.status_code == 404, (path, r.text)
    assert r.headers["content-type"].startswith("application/json")
    assert "error" in r.json() and "import" not in r.text  # never a file's source


def test_ui_slash_redirects_to_the_page(zoo_server):
    r = httpx.get(zoo_server.url + "/ui/")
    assert r.status_code == 308 and r.headers["location"] == "/ui"


def test_static_files_reference_no_external_url():
    from service.http.swagger import OUR_FILES

    docs_page = {"docs.html", *OUR_FILES}  # /docs and its init script (service/http/swagger.py)
    shipped = sorted(p.name for p in UI_DIR.iterdir())
    assert sorted([*FILES, *docs_page]) == shipped  # every shipped file is served, no other
    for name in shipped:
        text = (UI_DIR / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        for ref in re.findall(r'(?:src|href)="([^"]+)"', text):
            assert ref.startswith("/"), (name, ref)  # same origin only


# ---------------------------------------------------------------------------- browser


def _chromium():
    """A headless Chromium session, or a skip saying why none could start."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.common.exceptions import WebDriverException

    binary = shutil.which("chromium")
    driver_bin = shutil.which("chromedriver")
    if not binary or not driver_bin:
        pytest.skip("chromium / chromedriver not installed (make test installs Debian's chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,700",
                "--force-device-scale-factor=1", "--disable-gpu"):
        options.add_argument(arg)
    try:  # an explicit chromedriver: Selenium Manager would try to download one
        return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_bin))
    except WebDriverException as exc:
        pytest.skip(f"chromium cannot start here: {exc.msg}")


@pytest.fixture(scope="module")
def browser():
    driver = _chromium()
    yield driver
    driver.quit()


class Page:
    """The demo page in the browser, by the element ids of service/ui/index.html."""

    def __init__(self, driver, url: str) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        self.d, self.url = driver, url
        self.wait = WebDriverWait(driver, WAIT_S)

    def el(self, id_: str):
        return self.d.find_element("id", id_)

    def open(self, path: str = "/ui") -> None:
        """Load a page and wait until its model list (or an error, or the token box) is shown."""
        self.d.get(self.url + path)
        self.wait.until(lambda d: d.execute_script(
            "const s = document.getElementById('model');"
            "return (s ? s.options.length && s.options[0].value !== ''"
            "          : document.querySelectorAll('#models td code').length > 0)"
            " || !document.getElementById('error').hidden || !document.getElementById('token-box').hidden"))

    def pick(self, name: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.el("model")).select_by_value(name)

    def reset(self) -> None:
        self.d.execute_script("document.getElementById('result-label').textContent = '';"
                              "document.getElementById('error').hidden = true;")

    def outcome(self) -> tuple[str, str]:
        """(label, error) once an answer or an error is on the page."""
        self.wait.until(lambda d: self.el("result-label").text or self.el("error").is_displayed())
        return self.el("result-label").text, (self.el("error").text if self.el("error").is_displayed() else "")

    def top5(self) -> list[str]:
        return [e.text for e in self.d.find_elements("css selector", "#topk .topk-label")]

    def stroke(self, points: list[tuple[float, float]]) -> None:
        """One pen stroke through ``points`` (CSS pixels from the pad's centre)."""
        from selenium.webdriver import ActionChains

        pad = self.el("pad")
        chain = ActionChains(self.d, duration=5)  # ms per pointer move (default 250)
        chain.move_to_element_with_offset(pad, *points[0]).click_and_hold()
        for (x0, y0), (x1, y1) in zip(points, points[1:]):
            chain.move_by_offset(round(x1 - x0), round(y1 - y0))
        chain.release().perform()

    def requests_to(self, part: str) -> int:
        return self.d.execute_script(
            "return performance.getEntriesByType('resource').filter(e => e.name.includes(arguments[0])).length", part)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _upload(page: Page, path: Path) -> tuple[str, str]:
    page.reset()
    page.el("file").send_keys(str(path))
    return page.outcome()


def test_demo_in_a_real_browser(zoo_server, browser, tmp_path):
    page = Page(browser, zoo_server.url)
    page.open()
    options = {o.get_attribute("value"): o.text for o in page.d.find_elements("css selector", "#model option")}
    assert set(options) == {"mnist-mlp", "sine-rnn", "transfer-resnet18"}, options
    assert "mnist-mlp" in options["mnist-mlp"] and re.search(r"\(mnist-mlp, \w+\)", options["mnist-mlp"])

    page.pick("mnist-mlp")
    assert page.el("draw-panel").is_displayed() and page.el("image-panel").is_displayed()
    assert not page.el("forecast-panel").is_displayed()

    # an empty canvas: a message, and nothing sent
    sent = page.requests_to("/classify")
    page.el("classify-drawing").click()
    label, error = page.outcome()
    assert "empty" in error and not label and page.requests_to("/classify") == sent

    # a "1": one vertical stroke
    page.stroke([(0, y) for y in range(-90, 91, 10)])
    page.reset()
    page.el("classify-drawing").click()
    label, error = page.outcome()
    assert (label, error) == ("1", ""), page.top5()
    meta = page.el("result-meta").text
    assert re.search(r"mnist-mlp \w+ · \d+\.\d ms", meta), meta
    assert len(page.top5()) == 5
    # the answer's Server-Timing breakdown (ms, 2 decimals): the parts within the server's total
    timing = page.el("timing-text").text
    parts = {k: float(v) for k, v in re.findall(r"(decode|queue|infer|encode|total) ([0-9.]+)", timing)}
    assert set(parts) == {"decode", "queue", "infer", "encode", "total"} and "batch 1" in timing, timing
    assert sum(parts[k] for k in ("decode", "queue", "infer", "encode")) <= parts["total"] + 0.02
    assert len(page.d.find_elements("css selector", "#timing-bar > span")) == 4
    # the live panel shows the statistics the server reports for the model (Triton's, every worker)
    def live_matches(_) -> bool:
        entry = httpx.get(zoo_server.url + "/v2/models/mnist-mlp/stats").json()["model_stats"][0]
        summary = page.el("live-summary").text
        return page.el("live").is_displayed() and summary.startswith(
            f"{entry['inference_stats']['success']['count']} requests · {entry['execution_count']} model calls")
    page.wait.until(live_matches)
    assert page.d.find_elements("css selector", "#live-batches li")
    assert re.fullmatch(r"per request: queue [0-9.]+ ms vs infer [0-9.]+ ms", page.el("live-wait").text)

    # a "0": an ellipse of many short moves, MNIST's stroke width after scaling
    page.el("clear").click()
    ellipse = [(50 * math.sin(t), -85 * math.cos(t)) for t in np.linspace(0, 2 * math.pi, 41)]
    page.stroke(ellipse)
    page.reset()
    page.el("classify-drawing").click()
    label, error = page.outcome()
    assert (label, error) == ("0", ""), page.top5()
    page.d.save_screenshot(shot(tmp_path, "digit.png"))

    # a real MNIST test digit through the file input: the eager model's answer
    i = 3
    expected = str(int(eager_probs(zoo_server.mlp, zoo_server.x_test[i:i + 1]).argmax()))
    name, data = zoo_server.digits[i]
    (tmp_path / name).write_bytes(data)
    assert _upload(page, tmp_path / name) == (expected, "")
    assert page.el("preview").is_displayed()
    page.wait.until(lambda d: d.execute_script("return document.getElementById('preview').complete"))
    # the preview's blob: URL is allowed by the page's CSP (else onerror hides it and says so)
    assert page.d.execute_script("return document.getElementById('preview').naturalWidth") == 28
    assert page.el("preview").is_displayed() and not page.el("preview-note").is_displayed()

    # not digit-sized (300x80 RGB): the service converts and resizes it
    wide = tmp_path / "wide.png"
    wide.write_bytes(_png(Image.new("RGB", (300, 80), (200, 30, 30))))
    label, error = _upload(page, wide)
    assert label in {str(d) for d in range(10)} and not error

    # corrupt and huge files: the service's message on the page, then the page still answers
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    label, error = _upload(page, bad)
    assert error.startswith("400: ") and "corrupt.png" in error and not label, error
    huge = tmp_path / "huge.png"
    huge.write_bytes(_png(Image.new("L", (5000, 5000))))  # over the 4096x4096 default cap, 20 KB on disk
    label, error = _upload(page, huge)
    assert error.startswith("413: ") and "huge.png" in error and not label, error
    assert _upload(page, tmp_path / name) == (expected, "")

    # an image model: no drawing pad; an RGB photo answered with the model's own class names
    page.pick("transfer-resnet18")
    assert page.el("image-panel").is_displayed() and not page.el("draw-panel").is_displayed()
    label, error = _upload(page, wide)
    assert label in zoo_server.classes and not error and set(page.top5()) == set(zoo_server.classes)


def test_forecast_in_a_real_browser(zoo_server, browser, tmp_path):
    page = Page(browser, zoo_server.url)
    page.open()
    page.pick("sine-rnn")
    assert page.el("forecast-panel").is_displayed() and not page.el("draw-panel").is_displayed()

    # text in the history: the service names the bad value
    page.el("history").send_keys("0, 0.1, abc, 0.3")
    page.el("run-forecast").click()
    label, error = page.outcome()
    assert error.startswith("400: ") and "history" in error and not label, error

    page.el("sine").click()
    page.el("steps").clear()
    page.el("steps").send_keys("30")
    page.reset()
    page.el("run-forecast").click()
    label, error = page.outcome()
    assert (label, error) == ("30 values", "")
    history = [float(v) for v in page.el("history").get_attribute("value").split(",")]
    shown = [float(v) for v in page.el("forecast-values").text.removeprefix("forecast: ").split(",")]
    np.testing.assert_allclose(shown, eager_forecast(zoo_server.rnn, history, 30), atol=2e-4)  # 4 decimals shown
    inked = page.d.execute_script("""
        const c = document.getElementById('plot'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let blue = 0, orange = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (d[i] < 90 && d[i + 2] > 180) blue++;
          if (d[i] > 200 && d[i + 1] > 90 && d[i + 1] < 160 && d[i + 2] < 60) orange++;
        }
        return [blue, orange];""")
    assert min(inked) > 300, inked  # both lines drawn: history (blue) and forecast (orange)
    page.d.save_screenshot(shot(tmp_path, "forecast.png"))


def test_pages_load_nothing_from_outside_the_server(zoo_server, browser):
    page = Page(browser, zoo_server.url)
    for path in ("/", "/ui"):
        page.open(path)
        urls = page.d.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert len(urls) >= 3 and all(u.startswith(zoo_server.url + "/") for u in urls), urls
    page.open("/")  # the front page lists the served models with their routes
    routes = sorted(e.text for e in page.d.find_elements("css selector", "#models td code"))
    assert routes == ["POST /models/mnist-mlp/classify", "POST /models/sine-rnn/forecast",
                      "POST /models/transfer-resnet18/classify"]
    assert not page.el("error").is_displayed()


def test_page_asks_for_the_token(zoo_server, browser, tmp_path):
    token = "ui-test-token"
    log = tmp_path / "server.log"
    with serve(sibling_home(zoo_server, tmp_path), log,
               {"MODEL_ZOO_API_TOKEN": token, "MODEL_ZOO_MODELS": "sine-rnn", "MODEL_ZOO_WARMUP_S": "0"}) as server:
        url = server.url
        assert httpx.get(url + "/ui").status_code == 200  # the page itself needs no token
        assert httpx.get(url + "/ui/app.js").status_code == 200
        assert httpx.post(url + "/v2/repository/index", json={}).status_code == 401
        page = Page(browser, url)
        page.open()
        assert page.el("token-box").is_displayed() and "token" in page.el("error").text
        page.el("token").send_keys(token)
        page.el("token-form").submit()
        page.wait.until(lambda d: page.el("model").get_attribute("value") == "sine-rnn")
        assert not page.el("token-box").is_displayed() and not page.el("error").is_displayed()
        page.open("/")  # the token is kept for the tab: the front page lists the models with it
        assert [e.text for e in page.d.find_elements("css selector", "#models td code")] == ["POST /models/sine-rnn/forecast"]
        page.d.execute_script("sessionStorage.clear()")
        page.open("/")
        assert page.el("token-box").is_displayed() and "401" in page.el("error").text
