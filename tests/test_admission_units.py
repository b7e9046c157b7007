"""Admission at the edge (service/http/admission.py) on a real event loop held up for real: the loop's lag as
``LoopLag`` sees it, and which requests ``AdmitWhileCurrent`` refuses while it lags and admits once it
has caught up. The load it exists for is measured by ``python -m benchmarks.goodput`` (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from service.config import ConfigError, Settings
from service.http.admission import AdmitWhileCurrent, LoopLag

BLOCK_S = 0.12  # how long the loop is held up (a backlog of requests in one iteration)


async def hold_loop(seconds: float) -> None:
    """Hold this thread's loop up for ``seconds`` in one callback, then let the lag timer run."""
    asyncio.get_running_loop().call_soon(time.sleep, seconds)
    await asyncio.sleep(0.012)  # the sleeping callback, then the late tick (its period is 5 ms)


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


def test_loop_lag_follows_a_held_up_loop_and_decays_once_it_runs_freely():
    async def main() -> tuple[float, float, float]:
        lag = LoopLag()
        lag.start(asyncio.get_running_loop())
        await asyncio.sleep(0.05)
        idle = lag.lag
        await hold_loop(BLOCK_S)
        held = lag.lag
        await asyncio.sleep(0.08)  # 16 ticks on time: the estimate halves on each
        lag.stop()
        return idle, held, lag.lag

    idle, held, after = asyncio.run(main())
    assert idle < 0.02, idle
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


def test_grpc_inference_is_refused_unavailable_while_the_loop_lags():
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

    async def main() -> tuple[BaseException, BaseException]:
        async def attempt() -> BaseException:
            try:
                await servicer.infer(request, Call())
            except BaseException as exc:  # noqa: BLE001 - the test looks at which
                return exc
            raise AssertionError("answered")

        await attempt()  # starts the lag timer on this loop
        await hold_loop(BLOCK_S)
        behind = await attempt()
        await asyncio.sleep(0.08)
        return behind, await attempt()

    behind, after = asyncio.run(main())
    assert isinstance(behind, Behind) and status_of(behind).name == "UNAVAILABLE", behind
    assert "MODEL_ZOO_SHED_LAG_MS=50" in behind.message
    assert isinstance(after, LookupError)  # caught up: the request went on to the models
