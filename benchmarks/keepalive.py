"""A cheap HTTP/1.1 load generator for benchmarks.goodput: keep-alive connections from a pool, one prebuilt request.

Each connection is an ``asyncio.Protocol`` that writes the same request bytes and reads just enough of
the answer to know its status and where it ends (``Content-Length`` or a chunked body's last chunk), so a
request costs a write, a read or two and a counter, not a client session's objects. On 2 cores the
generator's CPU is taken from the server it measures, which is why it is this small.

- Closed loop (``closed_loop``): ``concurrency`` connections, each sends its next request when the answer
  to its last arrives.
- Open loop (``open_loop``): arrivals at ``rate`` per second, evenly spaced, whatever the answers do. An
  arrival takes the idle connection that has waited longest (so none sits idle into the server's idle
  timeout); with none idle, it waits for the next one freed or opened (a new connection is opened for
  it), its give-up clock already running. A client that gives up after ``give_up_s`` closes its
  connection (a reset: thousands of give-ups a second leave no TIME_WAIT ports behind) and the pool
  opens a replacement; a ``Connection: close`` answer (the service rebalancing its workers) is honoured
  the same way. Everything else reuses its connection.

Outcomes: ``in_time`` (a 200 within the give-up time), the status of any other answer (``"504"``),
``gave_up``, or ``closed`` (the server closed a connection with a request outstanding).
"""

from __future__ import annotations

import asyncio
import gc
import math
import socket
import struct
import time
from collections import Counter, deque
from typing import Any
from urllib.parse import urlsplit

LATE_S = 0.01  # an arrival sent this long after its scheduled time counts as late (the generator fell behind)
LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def build_request(url: str, body: bytes, headers: dict[str, str]) -> tuple[str, int, bytes]:
    """``(host, port, request bytes)`` for a POST of ``body`` to ``url`` (``http://host:port/path``)."""
    u = urlsplit(url)
    lines = [f"POST {u.path or '/'} HTTP/1.1", f"Host: {u.netloc}", f"Content-Length: {len(body)}",
             *(f"{k}: {v}" for k, v in headers.items())]
    return u.hostname or "127.0.0.1", u.port or 80, ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class _Conn(asyncio.Protocol):
    __slots__ = ("pool", "transport", "buf", "end", "status", "close_after", "timer", "busy", "dead")

    def __init__(self, pool: "_Pool") -> None:
        self.pool, self.transport, self.buf, self.timer = pool, None, bytearray(), None
        self.end, self.status, self.close_after, self.busy, self.dead = -1, 0, False, False, False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.pool.ready(self)

    def send(self, deadline: float | None) -> None:
        self.busy, self.end, self.buf = True, -1, bytearray()
        self.pool.inflight += 1
        if deadline is not None:
            self.timer = self.pool.loop.call_at(deadline, self.give_up)
        self.transport.write(self.pool.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if self.end == -1:  # headers not yet complete
            i = buf.find(b"\r\n\r\n")
            if i < 0:
                return
            head = bytes(buf[:i]).lower()
            self.status = int(head[9:12])
            self.close_after = b"\r\nconnection: close" in head
            j = head.find(b"\r\ncontent-length:")
            if j >= 0:
                k = head.find(b"\r\n", j + 2)
                self.end = i + 4 + int(head[j + 17:k if k >= 0 else len(head)])
            elif b"\r\ntransfer-encoding: chunked" in head:
                self.end = -2
            else:  # no length: the body ends when the connection does
                self.end, self.close_after = 1 << 62, True
        if (len(buf) >= self.end) if self.end >= 0 else buf.endswith(b"0\r\n\r\n"):
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.busy = False
            self.pool.inflight -= 1
            self.pool.done(self, self.status)

    def give_up(self) -> None:
        self.timer, self.busy = None, False
        self.pool.inflight -= 1
        self.pool.outcomes["gave_up"] += 1
        self.close(reset=True)

    def close(self, reset: bool = False) -> None:
        if not self.dead:
            self.dead = True
            if reset and (sock := self.transport.get_extra_info("socket")) is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            self.transport.abort() if reset else self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.busy:
            self.busy = False
            self.pool.inflight -= 1
            self.pool.outcomes["closed"] += 1
        self.dead = True
        self.pool.lost(self)


class _Pool:
    def __init__(self, url: str, body: bytes, headers: dict[str, str], size: int, give_up_s: float | None) -> None:
        self.host, self.port, self.request = build_request(url, body, headers)
        self.loop = asyncio.get_running_loop()
        self.size, self.give_up_s = size, give_up_s
        self.idle: deque[_Conn] = deque()
        self.waiting: deque[float] = deque()  # deadlines of arrivals that found no idle connection
        self.outcomes: Counter = Counter()
        self.live = self.opening = self.opened = self.inflight = 0
        self.closed_loop_until: float | None = None  # closed loop: resend on each answer until then

    def open(self) -> None:
        self.opening += 1
        self.opened += 1
        self.loop.create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError as exc:
            self.opening -= 1
            self.outcomes["connect:" + type(exc).__name__] += 1
            if self.waiting:  # the arrival waiting for it gave up
                self.waiting.popleft()
                self.outcomes["gave_up"] += 1

    def ready(self, conn: _Conn) -> None:
        self.opening -= 1
        self.live += 1
        self.release(conn)

    def release(self, conn: _Conn) -> None:
        """A free connection: the oldest waiting arrival still in time gets it, else it goes idle."""
        now = self.loop.time()
        if self.closed_loop_until is not None:
            conn.send(None) if now < self.closed_loop_until else conn.close()
            return
        while self.waiting:
            deadline = self.waiting.popleft()
            if deadline > now:
                conn.send(deadline)
                return
            self.outcomes["gave_up"] += 1  # gave up waiting for a connection
        self.idle.append(conn)

    def submit(self) -> None:
        deadline = self.loop.time() + self.give_up_s
        while self.idle:
            conn = self.idle.popleft()
            if not conn.dead:
                conn.send(deadline)
                return
        self.waiting.append(deadline)
        if self.opening < len(self.waiting):
            self.open()

    def done(self, conn: _Conn, status: int) -> None:
        if self.closed_loop_until is None or self.loop.time() < self.closed_loop_until:  # closed: in the window
            self.outcomes["in_time" if status == 200 and self.give_up_s is not None else str(status)] += 1
        if conn.close_after:
            conn.close()
        else:
            self.release(conn)

    def lost(self, conn: _Conn) -> None:
        self.live -= 1
        if self.closed_loop_until is None or self.loop.time() < self.closed_loop_until:
            if self.live + self.opening < self.size or len(self.waiting) > self.opening:
                self.open()

    def close_all(self) -> None:
        for conn in list(self.idle):
            conn.close()


async def closed_loop(url: str, body: bytes, headers: dict[str, str], concurrency: int, duration: float) -> Counter:
    """Statuses of ``concurrency`` keep-alive clients sending for ``duration`` seconds (as strings: ``"200"``)."""
    pool = _Pool(url, body, headers, concurrency, None)
    pool.closed_loop_until = pool.loop.time() + duration
    for _ in range(concurrency):
        pool.open()
    await asyncio.sleep(duration)
    end = time.monotonic() + 60
    while (pool.inflight or pool.opening) and time.monotonic() < end:  # answers still outstanding
        await asyncio.sleep(0.02)
    return pool.outcomes


async def open_loop(url: str, body: bytes, headers: dict[str, str], rate: float, duration: float,
                    give_up_s: float) -> dict[str, Any]:
    """``rate`` arrivals per second for ``duration`` s, each giving up after ``give_up_s``; outcomes and pool figures."""
    size = math.ceil(rate * give_up_s * 1.25) + 16  # enough for every arrival still within its give-up time
    pool = _Pool(url, body, headers, size, give_up_s)
    for _ in range(size):
        pool.open()
    end = time.monotonic() + 30
    while pool.opening and time.monotonic() < end:
        await asyncio.sleep(0.01)
    opened_before = pool.opened
    loop = pool.loop
    gc.collect()
    gc.disable()  # a collection pass mid-run would stall the schedule; the run makes no reference cycles to speak of
    start, sent, late, max_lag = loop.time(), 0, 0, 0.0
    while (now := loop.time()) < start + duration:
        due = int((now - start) * rate) + 1 - sent  # arrivals due by now (catches up after a slow tick)
        if due > 0:
            max_lag = max(max_lag, now - (start + sent / rate))
            late += max(0, min(due, int((now - LATE_S - start) * rate) + 1 - sent))
            for _ in range(due):
                pool.submit()
            sent += due
        await asyncio.sleep(max(0.0, start + sent / rate - loop.time()))
    elapsed = loop.time() - start
    gc.enable()
    await asyncio.sleep(give_up_s + 0.05)  # every arrival has its answer or has given up
    if pool.waiting:  # arrivals that never got a connection
        pool.outcomes["gave_up"] += len(pool.waiting)
        pool.waiting.clear()
    pool.close_all()
    return {"sent": sent, "elapsed_s": elapsed, "outcomes": dict(pool.outcomes), "pool": size,
            "reconnects": pool.opened - opened_before, "max_lag_ms": 1e3 * max_lag,
            "late_share": late / sent if sent else 0.0}
