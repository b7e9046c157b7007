"""What each of the service's own ASGI middlewares costs a request, in-process, with no network.

    python -m benchmarks.studies.middleware_cost [--requests 5000] [--repeats 5]

Each middleware of service/app.py's stack (the same classes and order, with the service's default
settings) alone in front of a trivial endpoint, then all of them together, driven by one task on
uvloop: a ``POST /classify_digit`` with an 800-byte body already received (as for a small upload), the
endpoint reading it and answering 2 bytes. Prints microseconds per request, the fastest of ``--repeats``
runs, with the bare endpoint's first: a middleware's cost is its row minus that. The endpoint's work and
everything uvicorn and BentoML do per request are not in it; what a request costs over HTTP is
``benchmarks.run``'s part. Then the multipart parse of a one-digit upload: service/http/uploads.py's
``read_uploads`` against Starlette's ``request.form()``, which it replaced.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

BODY = b"x" * 800
SCOPE = {"type": "http", "method": "POST", "path": "/classify_digit", "client": ("127.0.0.1", 50000),
         "headers": [(b"host", b"127.0.0.1:3000"), (b"content-length", b"800"),
                     (b"content-type", b"multipart/form-data; boundary=x")]}


async def endpoint(scope: dict, receive: Any, send: Any) -> None:
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def stack() -> list[type]:
    """service/app.py's middlewares, outermost first."""
    from service.http import balance
    from service.http.admission import AdmitWhileCurrent
    from service.http.auth import BearerAuth
    from service.http.bodies import SlowBodies
    from service.http.json_errors import JsonErrors
    from service.http.linger import LingeringClose
    from service.http.origin import OriginGuard
    from service.http.request_ids import RequestIds
    from service.http.uploads import BodyLimit

    return [AdmitWhileCurrent, RequestIds, balance.Rebalance, LingeringClose, OriginGuard, BearerAuth, SlowBodies,
            BodyLimit, JsonErrors]


def build(classes: list[type]) -> Any:
    app: Any = endpoint
    for cls in reversed(classes):
        app = cls(app)
    return app


async def per_request(app: Any, n: int) -> float:
    async def receive() -> dict:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict) -> None:
        pass

    t0 = time.perf_counter()
    for _ in range(n):
        await app(dict(SCOPE), receive, send)
    return (time.perf_counter() - t0) / n * 1e6


async def measure(requests: int, repeats: int) -> list[tuple[str, float]]:
    classes = stack()
    rows = []
    for name, chosen in [("(endpoint alone)", []), *((c.__name__, [c]) for c in classes), ("all of them", classes)]:
        app = build(chosen)
        await per_request(app, requests // 5)  # warm-up
        rows.append((name, min([await per_request(app, requests) for _ in range(repeats)])))
    return rows


async def parse_cost(requests: int, repeats: int) -> list[tuple[str, float]]:
    """A one-digit upload (28x28 PNG in the ``images`` field) parsed by service/http/uploads.py's
    ``read_uploads``, and by Starlette's ``request.form()`` and a read of each file, what it replaced."""
    from starlette.requests import Request

    from benchmarks.goodput import BOUNDARY, image_body
    from service.http.uploads import read_uploads

    body = image_body(28, 28, 1)
    scope = {"type": "http", "method": "POST", "path": "/classify_digit",
             "headers": [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
                         (b"content-length", str(len(body)).encode())]}

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def ours() -> None:
        uploads = await read_uploads(Request(scope, receive), 256)
        assert uploads.error is None and len(uploads.files) == 1

    async def starlettes() -> None:
        form = await Request(scope, receive).form(max_files=256, max_fields=272)
        for value in form.getlist("images"):
            await value.read()

    rows = []
    for name, parse in (("multipart: read_uploads", ours), ("multipart: Starlette's request.form()", starlettes)):
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(requests):
                await parse()
            best = min(best, (time.perf_counter() - t0) / requests * 1e6)
        rows.append((name, best))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        import uvloop
        run = uvloop.run
    except ImportError:  # the service runs on asyncio's loop then too
        run = asyncio.run
    rows = run(measure(args.requests, args.repeats))
    base = rows[0][1]
    print("| middleware | us per request | over the endpoint alone, us |")
    print("| --- | ---: | ---: |")
    for name, us in rows:
        print(f"| {name} | {us:.2f} | {us - base:.2f} |")
    print()
    print("| one-digit upload parsed by | us per request |")
    print("| --- | ---: |")
    for name, us in run(parse_cost(args.requests, args.repeats)):
        print(f"| {name} | {us:.2f} |")


if __name__ == "__main__":
    main()
