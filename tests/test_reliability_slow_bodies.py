"""Slow request bodies (issue 25, item 6) against a real ``bentoml serve`` (service/http/bodies.py).

Scaled down from the report (600 connections, a byte every 4 s): 300 connections from one address, more
than BentoML's 256 concurrent requests per worker, trickle their bodies; a request from another address
is still answered, because one address may send only ``MODEL_ZOO_BODIES_PER_CLIENT`` bodies at once.
A body that stalls is cut at ``MODEL_ZOO_BODY_TIMEOUT_S`` with 408 and its connection closed. The server
serves mnist-mlp from the session's store: the bodies go to ``/classify_digit``, whose multipart parser
reads them once the route knows its model (a route whose model is missing answers before reading).
"""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from harness import serve, sibling_home

pytestmark = pytest.mark.slow
TIMEOUT_S = 3.0
PER_CLIENT = 4
SLOW = 300  # > BentoML's traffic max_concurrency (256 per worker)
HEAD = (b"POST /classify_digit HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 100000\r\n\r\n--b\r\n")


@pytest.fixture(scope="module")
def server(zoo_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bodies")
    env = {"MODEL_ZOO_BODY_TIMEOUT_S": str(TIMEOUT_S), "MODEL_ZOO_BODIES_PER_CLIENT": str(PER_CLIENT),
           "MODEL_ZOO_MODELS": "mnist-mlp"}
    with serve(sibling_home(zoo_server, tmp), tmp / "server.log", env) as served:
        yield served


def connect(server, source: str) -> socket.socket:
    """A connection from ``source`` (any 127.x address is the loopback): the server sees it as the peer."""
    s = socket.socket()
    s.bind((source, 0))
    s.connect(("127.0.0.1", server.port))
    return s


def answer(s: socket.socket, wait: float) -> tuple[int | None, bytes, bool]:
    """(status, JSON body, closed) of what the server sent within ``wait`` seconds."""
    s.settimeout(wait)
    data, closed = b"", False
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            data += chunk
    except (socket.timeout, BlockingIOError):
        pass
    except OSError:
        closed = True
    if not data:
        return None, b"", closed
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body, closed


def test_slow_bodies_from_one_address_leave_slots_for_others(server):
    slow = [connect(server, "127.0.0.1") for _ in range(SLOW)]
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.2"), timeout=10)
    try:
        for s in slow:
            s.sendall(HEAD)
        t0 = time.monotonic()
        refused = 0
        while time.monotonic() - t0 < 2 * TIMEOUT_S:  # keep every body alive: a byte well within the timeout
            for s in slow:
                try:
                    s.sendall(b"x")
                except OSError:
                    pass
            time.sleep(0.5)
            if time.monotonic() - t0 > 1.0:
                r = other.post(server.url + "/v2/repository/index")
                assert r.status_code == 200, (r.status_code, r.text)
        for s in slow:
            status, body, _ = answer(s, 0.01)
            if status == 429:
                refused += 1
                assert f"the cap is {PER_CLIENT}" in json.loads(body)["error"]
        assert refused >= SLOW - PER_CLIENT, f"{refused} of {SLOW} slow bodies refused"
    finally:
        other.close()
        for s in slow:
            s.close()


def test_a_stalled_body_is_cut_at_the_timeout_with_408(server):
    s = connect(server, "127.0.0.3")
    try:
        s.sendall(HEAD)
        t0 = time.monotonic()
        status, body, closed = answer(s, TIMEOUT_S + 10)
        took = time.monotonic() - t0
    finally:
        s.close()
    assert status == 408, (status, body)
    assert "MODEL_ZOO_BODY_TIMEOUT_S" in json.loads(body)["error"]
    assert closed and TIMEOUT_S - 0.5 < took < TIMEOUT_S + 5, took


def test_the_deadline_ends_with_the_body():
    """Once the body is complete, an app waiting on ``receive`` for the disconnect (starlette's streaming
    responses do) waits as long as it likes: no 408, no made-up disconnect, and the peer is no longer counted."""
    import asyncio

    from service.http.bodies import SlowBodies

    async def run() -> tuple[list, list, dict]:
        messages = [{"type": "http.request", "body": b"x", "more_body": False}]
        got, sent = [], []

        async def receive() -> dict:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(0.5)  # the client goes away later than the deadline
            return {"type": "http.disconnect", "real": True}

        async def app(scope, receive, send) -> None:
            got.append(await receive())
            got.append(await receive())

        async def send(message) -> None:
            sent.append(message)

        middleware = SlowBodies(app, timeout_s=0.1, per_client=1)
        scope = {"type": "http", "headers": [(b"content-length", b"1")], "client": ("10.0.0.1", 1)}
        await middleware(scope, receive, send)
        return got, sent, dict(middleware.receiving)

    got, sent, receiving = asyncio.run(run())
    assert got[1] == {"type": "http.disconnect", "real": True} and sent == [] and receiving == {}


def test_the_watch_cuts_a_stalled_chunk_and_leaves_other_cancellations_alone():
    """One watch per worker keeps the deadline (service/http/bodies.py): a wait for a chunk is cut between the
    timeout and a quarter of it later, with the 408 and a disconnect for the app; a request cancelled for
    another reason while it waits is cancelled, not answered 408; nothing is left behind in either case."""
    import asyncio

    import pytest

    from service.http.bodies import SlowBodies

    async def run() -> dict:
        sent: list[dict] = []
        got: list[dict] = []

        async def receive() -> dict:  # the client never sends its body
            await asyncio.sleep(30)
            return {"type": "http.request", "body": b"x", "more_body": False}

        async def app(scope, receive, send) -> None:
            got.append(await receive())

        async def send(message) -> None:
            sent.append(message)

        middleware = SlowBodies(app, timeout_s=0.2, per_client=10)
        scope = {"type": "http", "headers": [(b"content-length", b"1")], "client": ("10.0.0.1", 1)}
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await middleware(scope, receive, send)
        took = loop.time() - t0
        cut = {"took": took, "status": sent[0]["status"], "got": got[:], "left": (middleware.waiting, middleware.stalled)}
        sent.clear()
        task = asyncio.ensure_future(middleware(scope, receive, send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return {"cut": cut, "cancelled_sent": sent, "left": (middleware.waiting, middleware.stalled),
                "receiving": dict(middleware.receiving)}

    out = asyncio.run(run())
    cut = out["cut"]
    assert cut["status"] == 408 and cut["got"] == [{"type": "http.disconnect"}]
    assert 0.2 <= cut["took"] < 0.2 + 0.05 + 0.1, cut["took"]  # the watch looks every 0.05 s here
    assert cut["left"] == ({}, set())
    assert out["cancelled_sent"] == [] and out["left"] == ({}, set()) and out["receiving"] == {}
