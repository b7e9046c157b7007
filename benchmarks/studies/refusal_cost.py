"""What one refusal at the edge costs the worker: answered by the HTTP protocol or by the ASGI middleware.

    python -m benchmarks.studies.refusal_cost [--duration 5] [--concurrency 16] [--rounds 2]

One uvicorn worker (httptools, uvloop, one process) whose app is service/http/admission.py's
``AdmitWhileCurrent`` with its state set so that every inference request carrying a 100 ms
``Request-Timeout`` is refused (100 requests ahead at 100 answers a second). Variants, alternating:

- ``protocol``: uvicorn's protocol under ``RefuseAtParse`` (as the service runs): refused when the
  request's headers are parsed, no ASGI cycle or task;
- ``middleware``: uvicorn's protocol alone: refused by the middleware, through uvicorn's request cycle.

Closed loop of ``--concurrency`` keep-alive connections (benchmarks/keepalive.py, this process) posting a
400-byte body to ``/classify_digit``. Prints refusals per second, the server's CPU (user + system, its
process) and CPU per refusal, and the generator's CPU. The service's own refusals cost what ``protocol``
does plus its other protocol mixins; through the middleware they would also pay BentoML's middlewares.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time

from benchmarks.goodput import _cpu_s as own_cpu_s
from benchmarks.keepalive import closed_loop
from benchmarks.studies.grpc_transport import cpu_s

BODY = b"x" * 400


def _serve(sock: socket.socket, at_parse: bool) -> None:
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from service.http.admission import AdmitWhileCurrent, RefuseAtParse

    async def app(scope: dict, receive, send) -> None:  # never reached by a refused request
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})

    gate = AdmitWhileCurrent(app, shed_lag_ms=0)
    gate.in_flight, gate.rate = 100, 100.0  # a second's wait ahead: past half of any deadline under 2 s
    protocol = type("Protocol", (RefuseAtParse, HttpToolsProtocol) if at_parse else (HttpToolsProtocol,), {})
    uvicorn.Server(uvicorn.Config(gate, http=protocol, loop="uvloop", lifespan="off", log_level="error")).run(sockets=[sock])


def measure(at_parse: bool, duration: float, concurrency: int) -> dict:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = multiprocessing.get_context("spawn").Process(target=_serve, args=(sock, at_parse), daemon=True)
    server.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    url = f"http://127.0.0.1:{port}/classify_digit"
    asyncio.run(closed_loop(url, BODY, {"Request-Timeout": "0.1"}, concurrency, 1.0))  # warm-up
    cpu0, own0, t0 = cpu_s(server.pid), own_cpu_s(), time.monotonic()
    outcomes = asyncio.run(closed_loop(url, BODY, {"Request-Timeout": "0.1"}, concurrency, duration))
    cpu1, own1, elapsed = cpu_s(server.pid), own_cpu_s(), time.monotonic() - t0
    server.terminate()
    server.join(10)
    refused = outcomes.get("503", 0)
    if refused != sum(outcomes.values()):
        raise SystemExit(f"refusal_cost: expected only 503s, got {dict(outcomes)}")
    server_cpu = cpu1 - cpu0
    client_cpu = own1 - own0
    return {"variant": "protocol" if at_parse else "middleware", "refusals_per_s": refused / elapsed,
            "server_cpu_pct": 100 * server_cpu / elapsed, "us_per_refusal": 1e6 * server_cpu / refused,
            "client_cpu_pct": 100 * client_cpu / elapsed}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    print("| variant | refusals/s | server CPU % | server CPU per refusal, us | generator CPU % |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for _ in range(args.rounds):
        for at_parse in (True, False):
            r = measure(at_parse, args.duration, args.concurrency)
            print(f"| {r['variant']} | {r['refusals_per_s']:.0f} | {r['server_cpu_pct']:.0f} | "
                  f"{r['us_per_refusal']:.1f} | {r['client_cpu_pct']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
