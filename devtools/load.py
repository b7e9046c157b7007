"""Closed-loop load that records every request (start, end, outcome), for the fault runs.

``clients.bench`` measures throughput and latency and only counts statuses; a fault run needs to know
*when* each request started and ended relative to the fault (which were in flight when the worker was
killed, how long until the first success afterwards). The request bodies are ``clients.bench``'s own
(``build_bodies``: real PNG uploads encoded once), so the traffic is the benchmark's traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from dataclasses import dataclass

import httpx

from clients.bench import build_bodies
from clients.transport import base_headers


@dataclass
class Record:
    start: float  # time.monotonic() when sent
    end: float
    outcome: str  # "200", "503", ... or the transport exception's class name

    @property
    def ok(self) -> bool:
        return self.outcome.startswith("2")


def bodies_for(endpoint: str, images_per_request: int = 1, seed: int = 0, steps: int = 10) -> list:
    args = argparse.Namespace(endpoint=endpoint, inputs=[], images_per_request=images_per_request, seed=seed,
                              history_len=50, steps=steps)
    return build_bodies(args)


class Load:
    """``users`` closed-loop users POSTing to ``path`` in a background thread until ``stop()``.

    A user that meets a refused connection waits ``backoff`` s before its next request (a server that is
    restarting would otherwise be hammered by a spin loop); ``stop_on_refusal`` ends the user instead
    (after SIGTERM, no new requests are expected to be served).
    """

    def __init__(self, url: str, path: str, bodies: list, users: int, timeout: float = 60.0,
                 token: str | None = None, backoff: float = 0.05, stop_on_refusal: bool = False) -> None:
        self.url, self.path, self.bodies, self.users = url, path, bodies, users
        self.timeout, self.token, self.backoff, self.stop_on_refusal = timeout, token, backoff, stop_on_refusal
        self.records: list[Record] = []
        self._in_flight = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> "Load":
        self._thread.start()
        return self

    def stop(self, join_timeout: float = 90.0) -> list[Record]:
        self._stop.set()
        self._thread.join(join_timeout)
        return sorted(self.records, key=lambda r: r.start)

    def in_flight(self) -> int:
        return self._in_flight

    async def _run(self) -> None:
        await asyncio.gather(*(self._user(i) for i in range(self.users)))

    async def _user(self, n: int) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout, limits=limits,
                                     headers=base_headers(self.token)) as client:
            i = n
            while not self._stop.is_set():
                content, headers = self.bodies[i % len(self.bodies)]
                i += 1
                t0 = time.monotonic()
                self._in_flight += 1
                try:
                    r = await client.post(self.path, content=content, headers=headers)
                    outcome = str(r.status_code)
                except httpx.TransportError as exc:
                    outcome = type(exc).__name__
                finally:
                    self._in_flight -= 1
                self.records.append(Record(t0, time.monotonic(), outcome))
                if not outcome[0].isdigit():
                    if self.stop_on_refusal and outcome == "ConnectError":
                        return
                    await asyncio.sleep(self.backoff)


def summarise(records: list[Record]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r.outcome] = out.get(r.outcome, 0) + 1
    return dict(sorted(out.items()))
