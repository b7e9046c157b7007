"""Hostile HTTP framing and routing: raw requests (sent byte for byte on a socket) and their answers.

httpx and every well-behaved client refuse to send most of these, so they are written out by hand:
conflicting ``Content-Length``/``Transfer-Encoding``, bodies far over the cap behind a small declared
length, bodies sent to routes that never read one, redirects built from a forged ``Host``. Each case
says what the server must answer and that it must stop reading: a refused body is not drained.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

# both framing headers: with httptools the parser refuses them ("malformed HTTP request: Transfer-Encoding
# can't be present with Content-Length", service/http/connections.py), with h11 BodyLimit does
# ("conflicting framing headers: Content-Length together with Transfer-Encoding"); each names the header
FRAMING = "Transfer-Encoding"

MiB = 2**20


@dataclass
class Case:
    name: str
    what: str  # one line for the docs table
    head: bytes  # request line + headers (without the final CRLF)
    chunked_mib: int  # MiB of chunked body sent after the head (0: none)
    status: int
    fragment: str


def cases(path: str = "/v2/models/mnist-mlp/infer") -> list[Case]:
    post = f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n".encode()
    return [
        Case("cl-and-te", "`Content-Length: 10` + `Transfer-Encoding: chunked`, 40 MiB sent", 
             post + b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n", 40, 400, FRAMING),
        Case("te-and-cl", "`Transfer-Encoding: chunked` before `Content-Length: 99999999`",
             post + b"Transfer-Encoding: chunked\r\nContent-Length: 99999999\r\n", 40, 400, FRAMING),
        Case("chunked-over-cap", "chunked body of 40 MiB (cap 32), no Content-Length", post + b"Transfer-Encoding: chunked\r\n",
             40, 413, "over the cap of 33554432 bytes"),
        Case("declared-over-cap", "`Content-Length: 40 MiB` (refused before reading)",
             post + f"Content-Length: {40 * MiB}\r\n".encode(), 0, 413, "over the cap of 33554432 bytes"),
        Case("livez-body", "chunked 40 MiB POST to `/livez` (a route that reads no body)",
             b"POST /livez HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n", 40, 405, "method POST is not allowed"),
    ]


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent_mib: float  # how much of the body went out before the server answered and closed
    closed: bool  # the server closed the connection after answering


def send(port: int, head: bytes, chunked_mib: int, timeout: float = 60) -> Answer:
    """Send ``head``, then up to ``chunked_mib`` 1 MiB chunks while no answer has come; read the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.sendall(head + b"\r\n")
    sent = 0
    piece = f"{MiB:x}\r\n".encode() + b"\0" * MiB + b"\r\n"
    try:
        sock.setblocking(False)
        for _ in range(chunked_mib):
            try:
                if sock.recv(1, socket.MSG_PEEK):  # the server answered: stop sending, as a real client would
                    break
            except BlockingIOError:
                pass
            sock.setblocking(True)
            sock.sendall(piece)
            sent += 1
            sock.setblocking(False)
        sock.setblocking(True)
        if chunked_mib and sent == chunked_mib:
            sock.sendall(b"0\r\n\r\n")
    except OSError:  # reset by the server after its answer: it stopped reading
        sock.setblocking(True)
    return _read_answer(sock, sent)


def _read_answer(sock: socket.socket, sent: int) -> Answer:
    data, closed = b"", False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            closed = True
            break
        except socket.timeout:
            break
        if not chunk:
            closed = True
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            headers = _headers(head)
            if len(body) >= int(headers.get("content-length", "0")) and headers.get("connection") != "close":
                break  # a complete answer on a connection the server keeps open
    sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return Answer(status, _headers(head), body, sent, closed)


def _headers(head: bytes) -> dict[str, str]:
    out = {}
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        out[key.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return out
