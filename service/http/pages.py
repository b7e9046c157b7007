"""The browser demo (``GET /ui``) and the front page (``GET /``): static files from service/ui/.

Plain HTML/CSS/JS with no external assets (no CDN, no fonts, no UI library), so the page works on a
host with no network and adds a few kilobytes to the image. The page talks only to the service's own
public routes (``/v2/repository/index``, ``/v2/models/{name}``, ``/models/{name}/classify|forecast``),
so it sees exactly what any client sees, bearer token included. Only the files named in ``FILES`` are
served: a path that is not one of them (``..``, a subfolder, a typo) is a 404 JSON like every other
unknown route. Every file carries a strict Content-Security-Policy, ``X-Frame-Options: DENY`` and
``Referrer-Policy: no-referrer`` (``CSP`` below says what it allows). These routes are open without a
token (service/http/auth.py): they hold no data, and the page must load to ask for the token.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from service.errors import NotFound
from service.http.responses import error_response

UI_DIR = Path(__file__).resolve().parent.parent / "ui"
FILES = {
    "index.html": "text/html; charset=utf-8",
    "home.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "home.js": "text/javascript; charset=utf-8",
    "common.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# The pages run only their own files: no inline script or style, no other site; images from the
# page (its canvases) and blob: (app.js previews an upload with URL.createObjectURL). Never framed
# (the token box must not sit under another site's overlay), and no Referer leaves with a link.
CSP = ("default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


def page_headers(csp: str = CSP) -> dict[str, str]:
    """The headers every static file carries (service/http/swagger.py's with its own CSP)."""
    return {
        "Cache-Control": "no-cache",  # revalidate on every load: a redeployed page never runs next to an old script
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": csp,
        "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
        "Referrer-Policy": "no-referrer",
    }


_HEADERS = page_headers()


def _file(name: str) -> Response:
    if name not in FILES:  # a fixed list, so no path from the URL ever reaches the file system
        return error_response(NotFound(f"no such file: /ui/{name} (the demo's files: {', '.join(sorted(FILES))})"))
    return FileResponse(UI_DIR / name, media_type=FILES[name], headers=_HEADERS)


async def page(_: Request) -> Response:
    return _file("index.html")


async def static(request: Request) -> Response:
    return _file(request.path_params["file"])


async def front(_: Request) -> Response:
    return _file("home.html")


async def slash(_: Request) -> Response:
    return RedirectResponse("/ui", status_code=308)


ROUTES = [
    Route("/", front, methods=["GET", "HEAD"]),
    Route("/ui", page, methods=["GET", "HEAD"]),
    Route("/ui/", slash, methods=["GET", "HEAD"]),
    Route("/ui/{file}", static, methods=["GET", "HEAD"]),
]
