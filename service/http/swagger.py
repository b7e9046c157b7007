"""Swagger UI at ``GET /docs``, over this service's OpenAPI document (``/docs.json``).

BentoML 1.4 serves no ``/docs``. Swagger UI's own files (``swagger-ui-bundle.js``, ``swagger-ui.css``)
come from the swagger-ui-py package, served from its installed folder: no CDN, so the page works on a
host with no network. The page (service/ui/docs.html) and its init script (service/ui/docs.js, a file
rather than an inline script, so the strict CSP needs no ``'unsafe-inline'``) are ours. Only the files in
``FILES`` are served. The CSP is the pages' plus ``data:`` images: swagger-ui.css draws its icons as data:
URIs. Open without a token like the other pages (service/http/auth.py): no data in it; the document it
loads is ``/docs.json``, which keeps its own rule.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from service.errors import NotFound
from service.http.pages import UI_DIR, page_headers
from service.http.responses import error_response

JS, CSS = "text/javascript; charset=utf-8", "text/css; charset=utf-8"
VENDOR_FILES = {"swagger-ui-bundle.js": JS, "swagger-ui.css": CSS}  # from swagger-ui-py's static/ folder
OUR_FILES = {"docs.js": JS}  # service/ui/
CSP = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
_HEADERS = page_headers(CSP)


def vendor_dir() -> Path:
    """swagger-ui-py's folder of Swagger UI's dist files (a package-data layout, not an API: the test
    tests/test_docs_page.py fails naming the file when a release moves it)."""
    return Path(str(files("swagger_ui") / "static"))


async def docs(_: Request) -> Response:
    return FileResponse(UI_DIR / "docs.html", media_type="text/html; charset=utf-8", headers=_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["file"]
    if name in OUR_FILES:  # a fixed list, so no path from the URL ever reaches the file system
        return FileResponse(UI_DIR / name, media_type=OUR_FILES[name], headers=_HEADERS)
    if name in VENDOR_FILES:
        return FileResponse(vendor_dir() / name, media_type=VENDOR_FILES[name], headers=_HEADERS)
    names = ", ".join(sorted({*OUR_FILES, *VENDOR_FILES}))
    return error_response(NotFound(f"no such file: /docs/{name} (Swagger UI's files: {names})"))


ROUTES = [
    Route("/docs", docs, methods=["GET", "HEAD"]),
    Route("/docs/{file}", asset, methods=["GET", "HEAD"]),
]
