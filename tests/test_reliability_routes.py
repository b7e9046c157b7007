"""Routing errors (unknown path, wrong method) answer JSON like every other 4xx (service/http/json_errors.py).

Found by the schemathesis OIP run: ``GET /v2/models/a%0Ab``, ``GET /nope``, ``GET /classify_digit``
got Starlette's ``text/plain`` "Not Found" / "Method Not Allowed".
"""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.http.json_errors import JsonErrors


async def model(request):
    return JSONResponse({"error": f"unknown model {request.path_params['name']!r}"}, status_code=404)


def client() -> TestClient:
    app = Starlette(routes=[Route("/v2/models/{name}", model, methods=["GET"])])
    return TestClient(JsonErrors(app))


def test_plain_404_and_405_become_json():
    c = client()
    r = c.get("/nope")
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "no such route: GET /nope "
                                 "(see / for the routes, /docs.json for the API, /v2 for the Open Inference Protocol)"}
    r = c.post("/v2/models/x")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "HEAD"}
    assert r.json() == {"error": "method POST is not allowed on /v2/models/x; allowed: GET, HEAD"}


def test_json_errors_of_the_app_pass_through():
    r = client().get("/v2/models/zzz")
    assert r.status_code == 404 and r.json() == {"error": "unknown model 'zzz'"}


@pytest.mark.slow
@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nope", 404), ("GET", "/v2/nope", 404), ("GET", "/v2/models/a%0Ab", 404),
    ("GET", "/classify_digit", 405), ("PUT", "/v2/models/mnist-mlp/infer", 405),
])
def test_routing_errors_over_http_are_json(zoo_server, method, path, status):
    r = httpx.request(method, zoo_server.url + path)
    assert r.status_code == status
    assert r.headers["content-type"].startswith("application/json"), r.text
    assert r.json()["error"]
