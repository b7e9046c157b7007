"""Service settings, read once from the environment (safe defaults; every cap is configurable).

| variable | default | meaning |
| --- | --- | --- |
| ``MODEL_ZOO_RUNTIME`` | ``onnx`` | ``onnx`` (ONNX Runtime) or ``torchscript`` |
| ``MODEL_ZOO_PRECISION`` | ``auto`` | ``auto`` (fp16 on a real GPU, else fp32), ``fp32``, ``fp16``, ``int8`` (CPU ONNX) |
| ``MODEL_ZOO_WORKERS`` | usable cores | server worker processes (each loads every served model) |
| ``MODEL_ZOO_THREADS`` | cores / workers | intra-op threads per model session on CPU (workers x threads <= cores) |
| ``MODEL_ZOO_MAX_BODY_MB`` | ``32`` | request body cap, MiB (413 above it) |
| ``MODEL_ZOO_MAX_IMAGES`` | ``256`` | images per request (413 above it); at most 999 (starlette stops at 1000) |
| ``MODEL_ZOO_MAX_PIXELS`` | ``16777216`` | pixels per decoded image (4096x4096; decompression bombs); a model's own cap follows its input size (service/core/limits.py) |
| ``MODEL_ZOO_MAX_REQUEST_PIXELS`` | ``67108864`` | decoded pixels per request, all images together (4 x 4096x4096) |
| ``MODEL_ZOO_HEADER_TIMEOUT_S`` | ``10`` | seconds a connection may take to send a request's headers, or sit idle before its first one |
| ``MODEL_ZOO_BODY_TIMEOUT_S`` | ``10`` | seconds a request body may pause between chunks before the request gets 408 (service/http/bodies.py) |
| ``MODEL_ZOO_BODIES_PER_CLIENT`` | ``64`` | request bodies one client address may be sending to one worker at once (429 above it); behind a proxy every client shares its address |
| ``MODEL_ZOO_MAX_BATCH`` | ``128`` | adaptive batcher: most items per model call |
| ``MODEL_ZOO_MAX_LATENCY_MS`` | ``2000`` | adaptive batcher: latency budget before it sheds load (503) |
| ``MODEL_ZOO_BATCH_WAIT_MS`` | ``0`` | adaptive batcher: longest an idle model waits for a batch to fill (Triton's ``max_queue_delay_microseconds``); 0: a batch starts as soon as the model is free, with what queued meanwhile |
| ``MODEL_ZOO_MAX_QUEUE`` | ``0`` (unbounded) | requests one model's batcher may hold queued; the next gets 429 + Retry-After. Per model: ``16,cifar10-resnet18=4`` |
| ``MODEL_ZOO_MAX_QUEUE_DELAY_MS`` | ``0`` (none) | a request still queued after this long gets 429 + Retry-After (per model as above) |
| ``MODEL_ZOO_DEFAULT_TIMEOUT_MS`` | ``0`` (none) | deadline of a request that brings none (``Request-Timeout``, OIP ``parameters.timeout``): 504 past it (per model as above) |
| ``MODEL_ZOO_SHED_LAG_MS`` | ``50`` | a worker whose event loop runs more than this far behind (three timer ticks in a row) answers new inference requests 503 + Retry-After before reading them, gRPC UNAVAILABLE (service/http/admission.py); 0: never |
| ``MODEL_ZOO_WARMUP_S`` | ``0`` | keep warming up at least this long before ``/readyz`` turns 200 |
| ``MODEL_ZOO_MODELS`` | every stored model of a known family | ``name[:version],...``: exactly these at start-up |
| ``MODEL_ZOO_FAMILIES`` | none | ``module[:function],...``: plugin modules that register more families (zoo/families.py ``load_plugins``; torch-free) |
| ``MODEL_ZOO_MODEL_CONTROL`` | ``1`` | ``0``: ``/v2/repository/models/{name}/load`` and ``/unload`` answer 403 (Triton's ``--model-control-mode=none``) |
| ``MODEL_ZOO_ALLOWED_HOSTS`` | ``localhost,*.localhost``; ``*`` with a token | ``Host`` names answered (``*.example.com``, ``*``); IP addresses always are (service/http/origin.py) |
| ``MODEL_ZOO_ALLOWED_ORIGINS`` | none | ``https://app.example.com,...``: web origins besides the server's own that may POST |
| ``MODEL_ZOO_GRPC_PORT`` | ``0`` (off) | port of the gRPC ``inference.GRPCInferenceService`` in every worker (service/grpc/; 8001 is Triton's) |
| ``MODEL_ZOO_GRPC_HOST`` | ``0.0.0.0`` | address the gRPC server binds (``bentoml serve``'s own default host) |

Model control stays on by default: ``make serve``, the demo's instructions and the repository tests use it,
and service/http/origin.py closes it to web pages (a foreign ``Origin``, a non-JSON body or an unlisted
``Host`` is a 403), so only a client that can reach the port (and holds the token, when one is set) can
load or unload. Turn it off where the served set must not change at run time. The host list defaults to
any name when ``MODEL_ZOO_API_TOKEN`` is set: a rebinding page cannot present the token.

Why the batching defaults are what they are (measurements): service/README.md.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Callable

from zoo.families import InvalidName, check_model_name, check_version

MULTIPART_HARD_LIMIT = 1000  # starlette's own max_files; our cap stays below it so ours answers first


class ConfigError(ValueError):
    """A malformed MODEL_ZOO_* variable; the message names it and the accepted values."""


def _number(name: str, default: Any, convert: Callable[[str], Any], kind: str) -> Any:
    """``$name`` converted (``default`` when unset or blank); a ConfigError naming it when malformed."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return convert(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not {kind}") from None


def _int(name: str, default: int, lo: int, hi: int | None = None) -> int:
    value = _number(name, default, int, "an integer")
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{name}={value} is out of range [{lo}, {hi if hi is not None else 'inf'}]")
    return value


def _float(name: str, default: float, lo: float) -> float:
    value = _number(name, default, float, "a number")
    if not value >= lo:
        raise ConfigError(f"{name}={value} must be >= {lo}")
    return value


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r}; choose one of {', '.join(choices)}")
    return value


def _names(name: str, default: str) -> tuple[str, ...]:
    """A comma-separated list, lower-case, blanks dropped (host names and origins are case-insensitive)."""
    raw = os.environ.get(name, "").strip() or default
    return tuple(dict.fromkeys(item.strip().lower().rstrip("/") for item in raw.split(",") if item.strip()))


def worker_cores() -> int:
    """CPU cores this process may run on (cgroup/affinity aware where the OS tells us)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)


def parse_models(raw: str) -> tuple[tuple[str, str | None], ...]:
    """``"my-digits,my-flowers:abc123"`` -> ``(("my-digits", None), ("my-flowers", "abc123"))``."""
    out: list[tuple[str, str | None]] = []
    for item in (i.strip() for i in raw.split(",")):
        if not item:
            continue
        name, _, version = item.partition(":")
        try:
            out.append((check_model_name(name), check_version(version) if version else None))
        except InvalidName as exc:
            raise ConfigError(f"MODEL_ZOO_MODELS: {exc}") from None
    if len({n for n, _ in out}) != len(out):
        raise ConfigError(f"MODEL_ZOO_MODELS={raw!r} names a model twice (one version per name is served)")
    return tuple(out)


@dataclass(frozen=True)
class PerModel:
    """A setting with a default and per-model overrides: ``"16,cifar10-resnet18=4"``."""

    default: int = 0
    models: tuple[tuple[str, int], ...] = ()

    def get(self, model: str) -> int:
        return dict(self.models).get(model, self.default)


def _per_model(name: str, hi: int) -> PerModel:
    """``$name`` as ``[DEFAULT][,MODEL=VALUE...]``, each value an integer in 0..hi; a ConfigError naming it."""
    default, models = 0, []
    for item in (i.strip() for i in os.environ.get(name, "").split(",")):
        if not item:
            continue
        model, _, raw = item.rpartition("=")
        try:
            value = int(raw)
            if model:
                check_model_name(model.strip())
        except (ValueError, InvalidName):
            raise ConfigError(f"{name}: {item!r} is not VALUE or MODEL=VALUE (e.g. 16,cifar10-resnet18=4)") from None
        if not 0 <= value <= hi:
            raise ConfigError(f"{name}: {item!r} is out of range [0, {hi}]")
        if model:
            models.append((model.strip(), value))
        else:
            default = value
    return PerModel(default, tuple(models))


@dataclass(frozen=True)
class Settings:
    runtime: str = "onnx"
    precision: str = "auto"
    workers: int = 1
    threads: int = 1
    max_body_bytes: int = 32 * 2**20
    max_images: int = 256
    max_pixels: int = 4096 * 4096
    max_request_pixels: int = 4 * 4096 * 4096
    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    bodies_per_client: int = 64
    max_batch: int = 128
    max_latency_ms: int = 2000
    batch_wait_ms: float = 0.0
    max_queue: PerModel = PerModel()
    max_queue_delay_ms: PerModel = PerModel()
    default_timeout_ms: PerModel = PerModel()
    shed_lag_ms: float = 50.0
    warmup_s: float = 0.0
    models: tuple[tuple[str, str | None], ...] | None = None  # None: every stored model of a known family
    model_control: bool = True
    allowed_hosts: tuple[str, ...] = ("localhost", "*.localhost")
    allowed_origins: tuple[str, ...] = ()
    grpc_port: int = 0  # 0: no gRPC server
    grpc_host: str = "0.0.0.0"

    @classmethod
    def from_env(cls) -> "Settings":
        raw_models = os.environ.get("MODEL_ZOO_MODELS", "").strip()
        cores = worker_cores()
        workers = _int("MODEL_ZOO_WORKERS", cores, 1, 256)
        return cls(
            runtime=_choice("MODEL_ZOO_RUNTIME", "onnx", ("onnx", "torchscript")),
            precision=_choice("MODEL_ZOO_PRECISION", "auto", ("auto", "fp32", "fp16", "int8")),
            workers=workers,
            # more threads than cores only makes the workers' pools fight over them
            threads=_int("MODEL_ZOO_THREADS", max(1, cores // workers), 1, cores),
            max_body_bytes=_int("MODEL_ZOO_MAX_BODY_MB", 32, 1, 4096) * 2**20,
            max_images=_int("MODEL_ZOO_MAX_IMAGES", 256, 1, MULTIPART_HARD_LIMIT - 1),
            max_pixels=_int("MODEL_ZOO_MAX_PIXELS", 4096 * 4096, 64, 2**31),
            max_request_pixels=_int("MODEL_ZOO_MAX_REQUEST_PIXELS", 4 * 4096 * 4096, 64, 2**40),
            header_timeout_s=_float("MODEL_ZOO_HEADER_TIMEOUT_S", 10.0, 0.5),
            body_timeout_s=_float("MODEL_ZOO_BODY_TIMEOUT_S", 10.0, 0.5),
            bodies_per_client=_int("MODEL_ZOO_BODIES_PER_CLIENT", 64, 1, 100_000),
            max_batch=_int("MODEL_ZOO_MAX_BATCH", 128, 2, 65536),
            max_latency_ms=_int("MODEL_ZOO_MAX_LATENCY_MS", 2000, 1, 600_000),
            batch_wait_ms=_float("MODEL_ZOO_BATCH_WAIT_MS", 0.0, 0.0),
            max_queue=_per_model("MODEL_ZOO_MAX_QUEUE", 1_000_000),
            max_queue_delay_ms=_per_model("MODEL_ZOO_MAX_QUEUE_DELAY_MS", 3_600_000),
            default_timeout_ms=_per_model("MODEL_ZOO_DEFAULT_TIMEOUT_MS", 3_600_000),
            shed_lag_ms=_float("MODEL_ZOO_SHED_LAG_MS", 50.0, 0.0),
            warmup_s=_float("MODEL_ZOO_WARMUP_S", 0.0, 0.0),
            models=parse_models(raw_models) if raw_models else None,
            model_control=_choice("MODEL_ZOO_MODEL_CONTROL", "1", ("1", "0")) == "1",
            allowed_hosts=_names("MODEL_ZOO_ALLOWED_HOSTS", "*" if os.environ.get("MODEL_ZOO_API_TOKEN", "").strip()
                                 else "localhost,*.localhost"),
            allowed_origins=_names("MODEL_ZOO_ALLOWED_ORIGINS", ""),
            grpc_port=_int("MODEL_ZOO_GRPC_PORT", 0, 0, 65535),
            grpc_host=os.environ.get("MODEL_ZOO_GRPC_HOST", "").strip() or "0.0.0.0",
        )


@functools.cache
def settings() -> Settings:
    """This process's settings (read once; a malformed variable fails start-up with its name)."""
    return Settings.from_env()
