"""The edge's refusals answered by the HTTP protocol (service/http/admission.py ``RefuseAtParse``), over real
sockets to a real uvicorn server on httptools with the service's protocol class: what is refused never
reaches the app, the connection carries the next request intact, large bodies close it, and a pipelined
request is answered in order. The worker's state (requests ahead, answer rate) is set on the real
middleware; the rules themselves are tested in test_admission_units.py, the load in benchmarks.goodput."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Iterator

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from service.http import admission
from service.http.admission import AdmitWhileCurrent, RefuseAtParse
from service.http.drain import READ_GRACE_S, DrainSignal

BODY = b"x" * 900
RUNNING: dict = {}  # the fixture's uvicorn.Server


class Echo:
    """The app behind the middleware: reads the whole body, answers its length; ``/models/slow`` after 0.2 s."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/models/slow/classify":
            await asyncio.sleep(0.2)
        self.seen.append((scope["path"], len(body)))
        out = json.dumps({"length": len(body)}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
        await send({"type": "http.response.body", "body": out})


class Reached:
    """Outside the middleware: the paths of the requests that reached the ASGI app at all."""

    def __init__(self, app) -> None:
        self.app, self.paths = app, []

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


@pytest.fixture
def served() -> Iterator[tuple[int, AdmitWhileCurrent, Echo, Reached]]:
    echo = Echo()
    gate = AdmitWhileCurrent(echo, shed_lag_ms=0)  # the deadline rule only, its state set by the tests
    reached = Reached(gate)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    protocol = type("Protocol", (RefuseAtParse, DrainSignal, HttpToolsProtocol), {})  # the service's order
    server = uvicorn.Server(uvicorn.Config(reached, http=protocol, loop="uvloop", lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    RUNNING["server"] = server
    try:
        yield sock.getsockname()[1], gate, echo, reached
    finally:
        server.should_exit = True
        thread.join(10)
        admission.GATE = None


def request(path: str, body: bytes = BODY, timeout: str | None = "0.1", rid: str = "rid-1", length: int | None = None) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body) if length is None else length}",
            f"X-Request-Id: {rid}"]
    if timeout is not None:
        head.append(f"Request-Timeout: {timeout}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def read_answer(conn: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer from ``conn`` (whatever follows it stays in ``buf``)."""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        assert chunk, f"connection closed before an answer; got {bytes(buf)!r}"
        buf += chunk
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    size = int(headers["content-length"])
    while len(rest) < size:
        chunk = conn.recv(65536)
        assert chunk, "connection closed inside an answer"
        rest += chunk
    buf[:] = rest[size:]
    return int(lines[0].split()[1]), headers, rest[:size]


def crowd(gate: AdmitWhileCurrent) -> None:
    """100 requests ahead at 100 answers a second: a second's wait, past half of a 100 ms deadline."""
    gate.in_flight, gate.rate = 100, 100.0


def test_a_refused_request_is_answered_at_the_protocol_and_its_connection_serves_the_next(served):
    port, gate, echo, reached = served
    crowd(gate)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        buf = bytearray()
        conn.sendall(request("/classify_digit"))
        status, headers, body = read_answer(conn, buf)
        assert status == 503 and headers["retry-after"] == "1" and headers["x-request-id"] == "rid-1"
        assert headers["content-type"] == "application/json" and "connection" not in headers
        message = json.loads(body)["error"]
        assert "100 requests ahead" in message and "100 ms Request-Timeout" in message, message
        # headers first, the body later: the parser skips it, and the next request on the connection is whole
        conn.sendall(request("/models/mnist-mlp/classify")[:-len(BODY)])
        assert read_answer(conn, buf)[0] == 503
        time.sleep(0.05)
        conn.sendall(BODY)
        conn.sendall(request("/classify_digit", body=b"y" * 700, timeout=None))  # no deadline: admitted
        status, _, body = read_answer(conn, buf)
        assert status == 200 and json.loads(body) == {"length": 700}
        conn.sendall(request("/v2/models/mnist-mlp/infer", timeout="30"))  # a deadline the wait fits in
        assert read_answer(conn, buf)[0] == 200
    assert echo.seen == [("/classify_digit", 700), ("/v2/models/mnist-mlp/infer", 900)]  # no refused one
    assert reached.paths == ["/classify_digit", "/v2/models/mnist-mlp/infer"]  # the refused: not even the app
    deadline = time.monotonic() + 2  # (the server's thread counts an answer out just after writing it)
    while gate.in_flight != 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.in_flight == 100  # the admitted ones counted in and out, once each


def test_a_large_or_unbounded_unread_body_closes_the_connection(served):
    port, gate, echo, reached = served
    crowd(gate)
    for raw in (request("/classify_digit", body=b"", length=10_000_000),
                request("/classify_digit", body=b"").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            buf = bytearray()
            conn.sendall(raw)
            status, headers, _ = read_answer(conn, buf)
            assert status == 503 and headers["connection"] == "close"
            assert conn.recv(65536) == b""  # closed by the server
    assert echo.seen == [] and reached.paths == []


def test_other_requests_are_not_refused_and_a_pipelined_one_is_answered_in_order(served):
    port, gate, echo, reached = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        buf = bytearray()
        conn.sendall(request("/v2/repository/index", body=b"{}"))  # not an inference route: never refused
        gate.in_flight, gate.rate = 100, 100.0  # after the request above was counted in and out
        assert read_answer(conn, buf)[0] == 200
        # the first (admitted: no deadline) is in progress when the second's headers are parsed: the
        # second waits behind it and is refused by the middleware, after the first's answer
        conn.sendall(request("/models/slow/classify", timeout=None, rid="first") + request("/classify_digit", rid="second"))
        first, second = read_answer(conn, buf), read_answer(conn, buf)
        assert first[0] == 200 and json.loads(first[2]) == {"length": len(BODY)}
        assert second[0] == 503 and second[1]["x-request-id"] == "second"
    assert [path for path, _ in echo.seen] == ["/v2/repository/index", "/models/slow/classify"]
    assert reached.paths[-1] == "/classify_digit"  # the pipelined one: the middleware's refusal


def test_at_shutdown_a_request_already_sent_on_an_idle_connection_is_answered_not_reset(served):
    """uvicorn's graceful shutdown closes a connection with no request in progress at once, losing a
    request the client had sent that the loop had not read yet (service/http/drain.py). Here shutdown is
    asked of two idle kept-alive connections, as uvicorn does, and one then sends its next request: it is
    answered, with Connection: close; the other is closed once READ_GRACE_S has passed."""
    port, gate, echo, reached = served
    server = RUNNING["server"]
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    bufs = [bytearray(), bytearray()]
    for conn, buf in zip(conns, bufs):
        conn.sendall(request("/classify_digit", timeout=None))
        assert read_answer(conn, buf)[0] == 200
    protocols = list(server.server_state.connections)
    assert len(protocols) == 2
    loop = protocols[0].loop
    loop.call_soon_threadsafe(lambda: [p.shutdown() for p in protocols])  # uvicorn's Server.shutdown does this
    time.sleep(0.01)
    conns[0].sendall(request("/classify_digit", body=b"z" * 300, timeout=None))
    status, headers, body = read_answer(conns[0], bufs[0])
    assert status == 200 and json.loads(body) == {"length": 300} and headers.get("connection") == "close"
    assert conns[0].recv(100) == b""  # closed after its answer
    t0 = time.monotonic()
    assert conns[1].recv(100) == b""  # the idle one: closed after the grace
    assert time.monotonic() - t0 < READ_GRACE_S + 2
    for conn in conns:
        conn.close()
