"""Admission at the edge (service/http/admission.py) on a real event loop held up for real: the loop's lag as
``LoopLag`` sees it, and which requests ``AdmitWhileCurrent`` refuses while it lags and admits once it
has caught up. The load it exists for is measured by ``python -m benchmarks.goodput`` (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.config import ConfigError, Settings
from service.http.admission import SUSTAINED, AdmitWhileCurrent, LoopLag

ROOT = Path(__file__).resolve().parents[1]
BLOCK_S = 0.12  # how long the loop is held up (a backlog of requests in one iteration)


async def hold_loop(seconds: float, times: int = SUSTAINED) -> None:
    """Hold this thread's loop up for ``seconds`` in one callback ``times`` times in a row, each followed by a
    tick of the lag timer (a backlog the loop does not work off holds every iteration up)."""
    for _ in range(times):
        asyncio.get_running_loop().call_soon(time.sleep, seconds)
        await asyncio.sleep(0.006)  # the sleeping callback, then the late tick (its period is 5 ms)


class Inner:
    """The app behind the middleware: records what reached it, answers 200."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, scope: dict, receive, send) -> None:
        self.seen.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def call(app, method: str, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, dict, bytes]:
    messages: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        messages.append(message)

    await app({"type": "http", "method": method, "path": path, "headers": headers or [(b"content-length", b"900")]},
              receive, send)
    start = messages[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in messages[1:])


def test_loop_lag_follows_a_loop_held_up_iteration_after_iteration_not_one_slow_iteration():
    async def main() -> tuple[float, float, float]:
        lag = LoopLag()
        lag.start(asyncio.get_running_loop())
        await asyncio.sleep(0.05)
        idle = lag.lag
        await hold_loop(BLOCK_S, times=1)
        once = lag.lag
        await asyncio.sleep(0.03)
        await hold_loop(BLOCK_S)
        held = lag.lag
        await asyncio.sleep(0.03)  # ticks on time again
        lag.stop()
        return idle, once, held, lag.lag

    idle, once, held, after = asyncio.run(main())
    assert idle < 0.02, idle
    assert once < 0.02, once  # one slow iteration is not a backlog
    assert BLOCK_S * 0.8 < held < BLOCK_S + 0.1, held
    assert after < 0.01, after


def test_inference_requests_are_refused_with_503_while_the_loop_lags_and_admitted_after():
    inner = Inner()
    app = AdmitWhileCurrent(inner, shed_lag_ms=50)

    async def main() -> dict:
        out = {"first": await call(app, "POST", "/classify_digit")}  # starts the lag timer
        await asyncio.sleep(0.02)
        out["current"] = await call(app, "POST", "/classify_digit")
        await hold_loop(BLOCK_S)
        for route in ("/classify_digit", "/models/mnist-mlp/classify", "/v2/models/mnist-mlp/infer", "/forecast_sine"):
            out[route] = await call(app, "POST", route, [(b"content-length", b"900"), (b"x-request-id", b"abc-1")])
        out["chunked"] = await call(app, "POST", "/classify_digit", [(b"transfer-encoding", b"chunked")])
        out["big"] = await call(app, "POST", "/classify_digit", [(b"content-length", b"10000000")])
        for route in ("/readyz", "/livez", "/metrics", "/v2/models/mnist-mlp"):
            out[route] = await call(app, "GET", route)
        out["load"] = await call(app, "POST", "/v2/repository/models/mnist-mlp/load")
        await asyncio.sleep(0.08)
        out["recovered"] = await call(app, "POST", "/classify_digit")
        app.lag.stop()
        return out

    out = asyncio.run(main())
    assert out["first"][0] == out["current"][0] == 200
    for route in ("/classify_digit", "/models/mnist-mlp/classify", "/v2/models/mnist-mlp/infer", "/forecast_sine"):
        status, headers, body = out[route]
        assert status == 503, route
        assert headers[b"retry-after"] == b"1"
        assert headers[b"x-request-id"] == b"abc-1"
        assert b"connection" not in headers  # a small unread body: the connection stays open
        message = json.loads(body)["error"]
        assert "overloaded" in message and "MODEL_ZOO_SHED_LAG_MS=50" in message, message
        lag_ms = float(message.split(" ms behind")[0].rsplit(" ", 1)[1])
        assert BLOCK_S * 1e3 * 0.8 < lag_ms < BLOCK_S * 1e3 + 100, message
    for case in ("chunked", "big"):  # an unread body that may be large: the connection closes
        assert out[case][0] == 503 and out[case][1][b"connection"] == b"close", case
    for route in ("/readyz", "/livez", "/metrics", "/v2/models/mnist-mlp", "load"):
        assert out[route][0] == 200, route  # probes, metrics, metadata and control are never shed
    assert out["recovered"][0] == 200
    assert inner.seen.count("POST /classify_digit") == 3  # first, current, recovered: no refused one reached it


def test_a_zero_threshold_never_refuses():
    inner = Inner()
    app = AdmitWhileCurrent(inner, shed_lag_ms=0)

    async def main() -> int:
        await call(app, "POST", "/classify_digit")
        await hold_loop(BLOCK_S)
        return (await call(app, "POST", "/classify_digit"))[0]

    assert asyncio.run(main()) == 200
    assert inner.seen == ["POST /classify_digit"] * 2


def test_the_threshold_setting(monkeypatch):
    monkeypatch.setenv("MODEL_ZOO_SHED_LAG_MS", "120")
    assert Settings.from_env().shed_lag_ms == 120
    monkeypatch.delenv("MODEL_ZOO_SHED_LAG_MS")
    assert Settings.from_env().shed_lag_ms == 50
    for bad in ("-1", "soon"):
        monkeypatch.setenv("MODEL_ZOO_SHED_LAG_MS", bad)
        with pytest.raises(ConfigError, match="MODEL_ZOO_SHED_LAG_MS"):
            Settings.from_env()


# service/grpc/server.py's refusal, in a process of its own: it imports the service's gRPC stubs, which
# cannot share a process with tritonclient's (both define the ``inference`` proto package)
GRPC_REFUSAL = """
import asyncio, json, time
from service.errors import Behind
from service.grpc.protos import grpc_service_pb2 as pb
from service.grpc.server import InferenceServicer, status_of

class NoModels:  # never reached while the loop lags; reached (and refusing) once it has caught up
    def use(self, name, version):
        raise LookupError(name)

class Call:  # the call's context: no deadline
    def time_remaining(self):
        return None

servicer = InferenceServicer(NoModels(), shed_lag_ms=50)
request = pb.ModelInferRequest(model_name="mnist-mlp", id="r1")

async def attempt():
    try:
        await servicer.infer(request, Call())
    except BaseException as exc:
        return exc

async def main():
    await attempt()  # starts the lag timer on this loop
    for _ in range(3):  # held up iteration after iteration
        asyncio.get_running_loop().call_soon(time.sleep, 0.12)
        await asyncio.sleep(0.006)
    behind = await attempt()
    await asyncio.sleep(0.08)
    after = await attempt()
    print(json.dumps({"behind": type(behind).__name__, "status": status_of(behind).name if isinstance(behind, Behind) else None,
                      "message": str(getattr(behind, "message", behind)), "after": type(after).__name__}))

asyncio.run(main())
"""


def test_grpc_inference_is_refused_unavailable_while_the_loop_lags():
    done = subprocess.run([sys.executable, "-c", GRPC_REFUSAL], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout)
    assert out["behind"] == "Behind" and out["status"] == "UNAVAILABLE", out
    assert "MODEL_ZOO_SHED_LAG_MS=50" in out["message"], out
    assert out["after"] == "LookupError"  # caught up: the request went on to the models


@pytest.mark.parametrize("default_ms", [0, 50])
def test_a_request_whose_deadline_the_requests_ahead_would_use_up_is_refused_before_it_is_read(default_ms):
    class Held(Inner):
        """Answers after ``delay_s``, or once ``release`` is set for paths under /models/."""

        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def __call__(self, scope: dict, receive, send) -> None:
            if scope["path"].startswith("/models/"):
                await self.release.wait()
            else:
                await asyncio.sleep(0.002)
            await super().__call__(scope, receive, send)

    inner = Held()
    # the lag rule off: only the deadline rule acts; default_ms: MODEL_ZOO_DEFAULT_TIMEOUT_MS's default
    app = AdmitWhileCurrent(inner, shed_lag_ms=0, default_timeout_ms=default_ms)

    def timeout(seconds: str) -> list[tuple[bytes, bytes]]:
        return [(b"content-length", b"900"), (b"request-timeout", seconds.encode())]

    async def main() -> dict:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.25:  # answers one at a time: the worker's rate, a few hundred a second
            await call(app, "POST", "/classify_digit")
        ahead = [asyncio.ensure_future(call(app, "POST", "/models/mnist-mlp/classify")) for _ in range(40)]
        await asyncio.sleep(0.01)
        out = {"rate": app.rate, "in_flight": app.in_flight,
               "short": await call(app, "POST", "/classify_digit", timeout("0.05")),
               "long": await call(app, "POST", "/classify_digit", timeout("5")),
               "none": await call(app, "POST", "/classify_digit"),
               "malformed": await call(app, "POST", "/classify_digit", timeout("soon"))}
        inner.release.set()
        out["ahead"] = [answer[0] for answer in await asyncio.gather(*ahead)]
        out["after"] = await call(app, "POST", "/classify_digit", timeout("0.05"))
        return out

    out = asyncio.run(main())
    assert 100 < out["rate"] < 600, out
    for case in ("malformed", "after"):  # the route answers a malformed header's 400; after: nothing ahead
        assert out[case][0] == 200, case
    if not default_ms:
        assert out["in_flight"] == 40, out
        status, headers, body = out["short"]
        message = json.loads(body)["error"]
        assert status == 503 and headers[b"retry-after"] == b"1", out["short"]
        assert "40 requests ahead" in message and "50 ms Request-Timeout" in message, message
        for case in ("long", "none"):
            assert out[case][0] == 200, case
    else:  # the server's default is every request's deadline when earlier: it held the ones ahead too
        assert 8 <= out["in_flight"] < 40, out
        assert out["ahead"].count(503) == 40 - out["in_flight"], out["ahead"]
        for case in ("short", "long", "none"):
            message = json.loads(out[case][2])["error"]
            assert out[case][0] == 503 and "of its 50 ms MODEL_ZOO_DEFAULT_TIMEOUT_MS" in message, (case, message)
