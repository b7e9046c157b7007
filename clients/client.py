"""Python clients for the Model Zoo service: ``ZooClient`` (sync) and ``AsyncZooClient``.

    with ZooClient("http://localhost:3000") as zoo:
        zoo.models()                                     # the repository index: name, version, state, reason
        zoo.load_model("my-flowers")                     # serve a stored model (every worker, warmed up)
        zoo.classify("my-flowers", ["7.png", "2.png"])   # -> [{"label", "index", "score", "top_k"}, ...]
        zoo.forecast([0.0, 0.1, 0.2], steps=10)          # -> [float, ...] (the first forecast family unless given)
        zoo.infer("my-digits", {"input": x})["logits"]  # Open Inference Protocol, numpy in/out

Both retry 429/503 and connection failures with exponential backoff and jitter
(honouring Retry-After) and raise ``ZooError(status, message)`` carrying the
server's own error text. Requests and responses are built by shared helpers, so the
two classes differ only in how they wait.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from typing import Any, Mapping, Sequence
from urllib.parse import quote

import httpx

from clients.media import to_uploads
from zoo.families import first_family
from clients.oip import InferResult, decode_response, encode_request
from clients.transport import (
    RetryPolicy, ZooError, base_headers, check, default_token, default_url, parse_retry_after, transport_error,
)

FORECAST_MODEL = first_family("forecast").name  # the model forecast() asks when none is named


def model_path(model: str, verb: str) -> str:
    """``/models/{model}/{verb}`` for any served model; the server says which names it knows."""
    if not model or "/" in model or model in (".", ".."):
        raise ValueError(f"invalid model name {model!r}; `zoo models` lists what the server holds")
    return f"/models/{quote(model, safe='')}/{verb}"


def _classify_request(model: str, images: Any) -> tuple[str, str, dict[str, Any]]:
    files = [u.part() for u in to_uploads(images)]
    return "POST", model_path(model, "classify"), {"files": files}


def _parse_classify(response: httpx.Response, n_images: int) -> list[dict[str, Any]]:
    results = response.json()
    if not isinstance(results, list) or len(results) != n_images:
        got = len(results) if isinstance(results, list) else type(results).__name__
        raise ZooError(response.status_code, f"expected {n_images} results, got {got}", url=str(response.url.path))
    return results


def _forecast_request(history: Sequence[float], steps: int, model: str) -> tuple[str, str, dict[str, Any]]:
    values = [float(v) for v in history]
    return "POST", model_path(model, "forecast"), {"json": {"history": values, "steps": int(steps)}}


class ForecastWarning(UserWarning):
    """The service's ``"warning"`` on a forecast: the history lies outside the band the model was trained on
    (or is too short to tell), so the forecast may be poor. ``zoo forecast`` prints it to stderr."""


def _parse_forecast(response: httpx.Response) -> list[float]:
    body = response.json()
    if body.get("warning"):
        warnings.warn(str(body["warning"]), ForecastWarning, stacklevel=3)
    return [float(v) for v in body["forecast"]]


def _infer_request(model, inputs, outputs, binary, parameters) -> tuple[str, str, dict[str, Any]]:
    body, headers = encode_request(inputs, outputs, binary=binary, parameters=parameters)
    return "POST", f"/v2/models/{quote(model, safe='')}/infer", {"content": body, "headers": headers}


def _load_request(model: str, version: str | None) -> tuple[str, str, dict[str, Any]]:
    body = {"parameters": {"version": version}} if version else {}
    return "POST", f"/v2/repository/models/{quote(model, safe='')}/load", {"json": body}


def _health_report(url: str, live: bool, ready: bool, index: list[dict[str, Any]],
                   metadata: dict[str, dict[str, Any]]) -> dict[str, Any]:
    models = {e["name"]: {"ready": e["state"] == "READY", "version": e["version"], "state": e["state"],
                          "reason": e.get("reason", ""), "metadata": metadata.get(e["name"], {})}
              for e in index if e["state"] != "UNAVAILABLE" or e.get("reason") not in ("unloaded", "")}
    return {"url": url, "live": live, "ready": ready, "models": models}


def _as_bool(response: httpx.Response | None) -> bool:
    return response is not None and response.is_success


class _Settings:
    def __init__(self, url: str | None = None, timeout: float = 60.0, retries: int = 3, token: str | None = None,
                 backoff: float = 0.25, max_backoff: float = 8.0) -> None:
        self.url = default_url(url)
        self.token = default_token(token)
        self.timeout = timeout
        self.policy = RetryPolicy(retries=retries, base_delay=backoff, max_delay=max_backoff)
        self.retries_done = 0  # total retries so far; tests and the CLI summary read it

    def _client_kwargs(self, limits: httpx.Limits | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"base_url": self.url, "timeout": self.timeout, "headers": base_headers(self.token)}
        if limits is not None:
            kwargs["limits"] = limits
        return kwargs


class ZooClient(_Settings):
    """Blocking client; one connection pool per instance (use it as a context manager)."""

    def __init__(self, url: str | None = None, timeout: float = 60.0, retries: int = 3, token: str | None = None,
                 *, backoff: float = 0.25, max_backoff: float = 8.0, limits: httpx.Limits | None = None) -> None:
        super().__init__(url, timeout, retries, token, backoff, max_backoff)
        self._http = httpx.Client(**self._client_kwargs(limits))

    def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        """Send with retries; raise ZooError for a non-2xx answer or no answer."""
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if retry and self.policy.should_retry_exception(exc, attempt):
                    time.sleep(self.policy.delay(attempt))
                    attempt, self.retries_done = attempt + 1, self.retries_done + 1
                    continue
                raise transport_error(exc, self.url) from None
            if retry and self.policy.should_retry_status(response.status_code, attempt):
                time.sleep(self.policy.delay(attempt, parse_retry_after(response.headers.get("retry-after"))))
                attempt, self.retries_done = attempt + 1, self.retries_done + 1
                continue
            return check(response)

    def classify(self, model: str, images: Any) -> list[dict[str, Any]]:
        """Top-k predictions, one dict per image, in order."""
        method, path, kwargs = _classify_request(model, images)
        return _parse_classify(self.request(method, path, **kwargs), len(kwargs["files"]))

    def forecast(self, history: Sequence[float], steps: int, model: str = FORECAST_MODEL) -> list[float]:
        """The next ``steps`` values; a ``ForecastWarning`` when the service says the history is outside the model's band."""
        method, path, kwargs = _forecast_request(history, steps, model)
        return _parse_forecast(self.request(method, path, **kwargs))

    def models(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Triton's repository index: every stored model version with its state and reason."""
        return self.request("POST", "/v2/repository/index", json={"ready": ready_only} if ready_only else {}).json()

    def load_model(self, model: str, version: str | None = None) -> dict[str, Any]:
        """Serve a stored model (latest or ``version``); returns once every worker serves it."""
        method, path, kwargs = _load_request(model, version)
        return self.request(method, path, retry=False, **kwargs).json()

    def unload_model(self, model: str) -> dict[str, Any]:
        return self.request("POST", f"/v2/repository/models/{quote(model, safe='')}/unload", retry=False).json()

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: Sequence[Any] | None = None,
              binary: bool = False, parameters: Mapping[str, Any] | None = None) -> InferResult:
        """Open Inference Protocol call; ``inputs`` name -> array, outputs as numpy arrays."""
        method, path, kwargs = _infer_request(model, inputs, outputs, binary, parameters)
        response = self.request(method, path, **kwargs)
        return decode_response(response.content, response.headers)

    def model_metadata(self, model: str) -> dict[str, Any]:
        return self.request("GET", f"/v2/models/{quote(model, safe='')}").json()

    def _probe(self, path: str) -> httpx.Response | None:
        try:
            return self._http.get(path)
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url) from None

    def health(self) -> dict[str, Any]:
        """Liveness, readiness and every model the server serves or tried to (with its OIP metadata)."""
        live, ready = self._probe("/livez"), self._probe("/readyz")
        index = self.models() if _as_bool(live) else []
        metadata = {e["name"]: r.json() for e in index if e["state"] == "READY"
                    and _as_bool(r := self._probe(f"/v2/models/{quote(e['name'], safe='')}"))}
        return _health_report(self.url, _as_bool(live), _as_bool(ready), index, metadata)

    def wait_ready(self, timeout: float = 60.0, interval: float = 0.25) -> None:
        """Poll /readyz until 200; ZooError naming the last problem after ``timeout`` seconds."""
        deadline, last = time.monotonic() + timeout, "no answer"
        while time.monotonic() < deadline:
            try:
                if _as_bool(r := self._http.get("/readyz")):
                    return
                last = f"/readyz answered {r.status_code}"
            except httpx.TransportError as exc:
                last = str(transport_error(exc, self.url))
            time.sleep(interval)
        raise ZooError(None, f"{self.url} not ready after {timeout:.0f}s: {last}", url=self.url)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ZooClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncZooClient(_Settings):
    """The same API for asyncio: ``async with AsyncZooClient(url) as zoo: await zoo.classify(...)``."""

    def __init__(self, url: str | None = None, timeout: float = 60.0, retries: int = 3, token: str | None = None,
                 *, backoff: float = 0.25, max_backoff: float = 8.0, limits: httpx.Limits | None = None) -> None:
        super().__init__(url, timeout, retries, token, backoff, max_backoff)
        self._http = httpx.AsyncClient(**self._client_kwargs(limits))

    async def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> httpx.Response:
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if retry and self.policy.should_retry_exception(exc, attempt):
                    await asyncio.sleep(self.policy.delay(attempt))
                    attempt, self.retries_done = attempt + 1, self.retries_done + 1
                    continue
                raise transport_error(exc, self.url) from None
            if retry and self.policy.should_retry_status(response.status_code, attempt):
                await asyncio.sleep(self.policy.delay(attempt, parse_retry_after(response.headers.get("retry-after"))))
                attempt, self.retries_done = attempt + 1, self.retries_done + 1
                continue
            return check(response)

    async def classify(self, model: str, images: Any) -> list[dict[str, Any]]:
        method, path, kwargs = _classify_request(model, images)
        return _parse_classify(await self.request(method, path, **kwargs), len(kwargs["files"]))

    async def forecast(self, history: Sequence[float], steps: int, model: str = FORECAST_MODEL) -> list[float]:
        method, path, kwargs = _forecast_request(history, steps, model)
        return _parse_forecast(await self.request(method, path, **kwargs))

    async def models(self, ready_only: bool = False) -> list[dict[str, Any]]:
        return (await self.request("POST", "/v2/repository/index", json={"ready": ready_only} if ready_only else {})).json()

    async def load_model(self, model: str, version: str | None = None) -> dict[str, Any]:
        method, path, kwargs = _load_request(model, version)
        return (await self.request(method, path, retry=False, **kwargs)).json()

    async def unload_model(self, model: str) -> dict[str, Any]:
        return (await self.request("POST", f"/v2/repository/models/{quote(model, safe='')}/unload", retry=False)).json()

    async def infer(self, model: str, inputs: Mapping[str, Any], outputs: Sequence[Any] | None = None,
                    binary: bool = False, parameters: Mapping[str, Any] | None = None) -> InferResult:
        method, path, kwargs = _infer_request(model, inputs, outputs, binary, parameters)
        response = await self.request(method, path, **kwargs)
        return decode_response(response.content, response.headers)

    async def model_metadata(self, model: str) -> dict[str, Any]:
        return (await self.request("GET", f"/v2/models/{quote(model, safe='')}")).json()

    async def _probe(self, path: str) -> httpx.Response | None:
        try:
            return await self._http.get(path)
        except httpx.TransportError as exc:
            raise transport_error(exc, self.url) from None

    async def health(self) -> dict[str, Any]:
        live, ready = await self._probe("/livez"), await self._probe("/readyz")
        index = await self.models() if _as_bool(live) else []
        metadata = {}
        for e in index:
            if e["state"] == "READY" and _as_bool(r := await self._probe(f"/v2/models/{quote(e['name'], safe='')}")):
                metadata[e["name"]] = r.json()
        return _health_report(self.url, _as_bool(live), _as_bool(ready), index, metadata)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "AsyncZooClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
