"""The gRPC server of one worker: ``inference.GRPCInferenceService`` and ``grpc.health.v1.Health``.

BentoML 1.4's new-style services cannot serve gRPC, so every worker runs a ``grpc.aio`` server on its
own event loop beside uvicorn, bound to ``MODEL_ZOO_GRPC_PORT`` with ``SO_REUSEPORT`` (the kernel
spreads connections over the workers, as the arbiter's shared socket does for HTTP). It serves the
worker's ``ModelManager``: the same served models, batchers, caps and repository as the Open Inference
Protocol over REST (service/http/oip.py), through the same served-model interface::

    request = infer_request(message)                         # service/grpc/codec.py: REST's checks
    results = await model.predict_tensors(await model.decode_tensors(request))
    answer  = infer_response(..., output_tensors(model, request, results))   # raw_output_contents

ModelInfer answers one request per call; ModelStreamInfer (service/grpc/stream.py) answers every
message of a bidirectional stream through the same ``InferenceServicer.infer``, concurrently (at most
``MAX_STREAM_IN_FLIGHT`` per stream: reading waits at the bound), one answer per message as it
completes, a client's mistake answering only its own message (``error_message``).

Errors: a ``ServiceError`` becomes the status its HTTP status stands for (``STATUS``), with its message;
a client's mistake is never INTERNAL or UNKNOWN. Messages over ``MODEL_ZOO_MAX_BODY_MB`` are refused by
grpc itself (RESOURCE_EXHAUSTED), and so is request metadata over ``MAX_METADATA_BYTES``. The call's
deadline is the request's deadline (service/core/deadlines.py, as REST's ``Request-Timeout``): one that
passes while the request is queued is answered DEADLINE_EXCEEDED at once and its rows are never
computed, and a call the client cancels is dropped before it is computed (on a stream: every message in
flight). ModelInfer and each stream message fill the same per-request timing record and statistics as
REST (service/core/timing.py, service/core/stats.py), so Triton's statistics (``ModelStatistics`` here,
the REST statistics routes) and the Prometheus series count gRPC inferences too. With
``MODEL_ZOO_API_TOKEN`` set, every call (a stream too) but ServerLive, ServerReady and the health
service needs ``authorization: Bearer <token>`` metadata (UNAUTHENTICATED without it), as REST leaves
only its health routes open (service/http/auth.py).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from typing import Any, Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.config import Settings
from service.control.manager import ModelManager
from service.core import deadlines, stats, timing
from service.errors import BadRequest, Behind, InvalidModelName, NotInStore, ServiceError
from service.grpc import codec
from service.grpc.protos import grpc_service_pb2 as pb
from service.grpc.protos import grpc_service_pb2_grpc as pb_grpc
from service.grpc.stream import Streams
from service.http import admission, oip
from service.http.auth import presented_token, token_from_env
from service.http.drain import process_drain

logger = logging.getLogger("model_zoo.grpc")

SERVICE = "inference.GRPCInferenceService"
OPEN_METHODS = frozenset({f"/{SERVICE}/ServerLive", f"/{SERVICE}/ServerReady",
                          "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
STREAM_METHODS = frozenset({f"/{SERVICE}/ModelStreamInfer"})  # request-streaming methods that need the token
STATUS = {400: grpc.StatusCode.INVALID_ARGUMENT, 403: grpc.StatusCode.PERMISSION_DENIED,
          404: grpc.StatusCode.NOT_FOUND, 408: grpc.StatusCode.DEADLINE_EXCEEDED,
          409: grpc.StatusCode.ABORTED, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
          429: grpc.StatusCode.RESOURCE_EXHAUSTED, 499: grpc.StatusCode.CANCELLED, 503: grpc.StatusCode.UNAVAILABLE,
          504: grpc.StatusCode.DEADLINE_EXCEEDED, 507: grpc.StatusCode.RESOURCE_EXHAUSTED}
MAX_METADATA_BYTES = 16 * 1024  # request metadata (headers) per call; grpc refuses more
GRACE_S = 10.0  # on shutdown, calls in flight get this long to finish
HEALTH_POLL_S = 1.0  # how often the health service's status follows readiness (for Watch)


def status_of(exc: ServiceError) -> grpc.StatusCode:
    """The gRPC status for an error of the service: from its class's HTTP status."""
    return STATUS.get(exc.status, grpc.StatusCode.INTERNAL)


def answers(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """A servicer method whose ``ServiceError`` ends the call with its status and message."""
    async def call(self: "InferenceServicer", request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except ServiceError as exc:
            await context.abort(status_of(exc), exc.message)

    call.__name__ = method.__name__
    return call


def call_deadline(context: grpc.aio.ServicerContext) -> deadlines.Deadline | None:
    """The client's deadline for this call (None when it set none)."""
    left = context.time_remaining()
    return None if left is None else deadlines.Deadline.after(left, deadlines.GRPC)


def client_gone(context: grpc.aio.ServicerContext) -> Callable[[], Awaitable[bool]]:
    """True once the client has cancelled the call (the batcher asks before computing a queued request)."""
    async def gone() -> bool:
        return context.cancelled()

    return gone


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """KServe v2 / Triton over gRPC, answered by this worker's models (as service/http/oip.py over REST)."""

    def __init__(self, models: ModelManager, shed_lag_ms: float = 0.0) -> None:
        self.models = models
        self.shed_s = shed_lag_ms / 1e3  # service/http/admission.py: UNAVAILABLE while the loop lags more
        self.streams = Streams()  # the open ModelStreamInfer calls

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ServerReadyResponse(ready=self.models.is_ready())

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        import bentoml

        return pb.ServerMetadataResponse(name="model_zoo", version=bentoml.__version__, extensions=oip.EXTENSIONS)

    @answers
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            await self.models.get(request.name, request.version or None)
        except (NotInStore, InvalidModelName):  # no such model (or version): an error, as over REST
            raise
        except ServiceError:  # loading, failed or not loaded: it exists and is not ready
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @answers
    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        model = await self.models.get(request.name, request.version or None)
        return codec.model_metadata(oip.metadata(request.name, model))

    async def infer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """One ``ModelInferRequest`` -> its ``ModelInferResponse`` (``ServiceError`` for the client's
        mistakes), for ModelInfer and for each message of ModelStreamInfer. As OIP REST's infer
        (service/http/oip.py): phases into the timing record, the answer into the model's statistics,
        the call's deadline and cancellation to the batcher."""
        if admission.LAG.behind(self.shed_s):  # as REST's edge: refused before it is decoded
            refusal = Behind.lagging(admission.LAG.lag, self.shed_s)
            admission.shed(refusal)
            raise refusal
        record, model, name = timing.start(request.id), None, request.model_name
        start, deadline = time.monotonic(), call_deadline(context)
        try:
            async with self.models.use(name, request.model_version or None) as model:
                if deadline is not None and deadline.expired():  # passed before decoding: nothing is done
                    raise deadlines.deadline_exceeded(model.name, deadline)
                record.begin()
                req = codec.infer_request(request)
                # Triton's parameters.timeout (microseconds; tritonclient's timeout=), as over REST: the
                # earlier of it and the call's deadline
                deadline = deadlines.earliest(deadline, deadlines.from_oip(req.parameters, start))
                feeds = await model.decode_tensors(req)
                record.decoded(feeds)
                with deadlines.client_wait(deadline, client_gone(context)):
                    results = await model.predict_tensors(feeds)
                record.predicted()
                answer = codec.infer_response(name, model.version, req.id, oip.output_tensors(model, req, results))
                record.encoded()
                stats.succeeded(model.name, record)
                return answer
        except ServiceError as exc:
            # a call the client cancels (or whose deadline grpc ends) is cancelled in its task; BentoML's
            # dispatcher answers a cancelled wait with its fallback (Overloaded): it is still a cancellation
            cancelled = bool(asyncio.current_task().cancelling())
            if model is not None:
                stats.failed(model.name, record, "client_disconnect" if cancelled else stats.reason_of(type(exc)))
            if cancelled:
                raise asyncio.CancelledError from exc
            raise
        except asyncio.CancelledError:
            if model is not None:
                stats.failed(model.name, record, "client_disconnect")
            raise

    @answers
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return await self.infer(request, context)

    async def ModelStreamInfer(self, requests: Any, context: grpc.aio.ServicerContext) -> None:
        """Every message through ``infer``, concurrently; an answer per message as it completes
        (service/grpc/stream.py reads and writes through ``context``; ``requests`` is its reader)."""
        await self.streams.answer(context, lambda request: self.infer(request, context))

    @answers
    async def ModelStatistics(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Triton's statistics of one model (``name``, optionally ``version``) or of every served one:
        the numbers of the REST statistics routes (service/http/statistics.py), summed over every worker."""
        if request.name:
            pairs = [(request.name, (await self.models.get(request.name, request.version or None)).version)]
        else:
            pairs = sorted((n, served.version) for n, served in self.models.served.items())
        # reads every worker's metric files: off the event loop
        return codec.model_statistics(await asyncio.to_thread(stats.model_statistics, pairs))

    @answers
    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        rows = await asyncio.to_thread(self.models.repository.index, request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

    @answers
    async def RepositoryModelLoad(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        oip.model_control()
        name = request.model_name
        params = codec.parameters(request.parameters)
        unsupported = sorted(k for k in params if k != "version")
        if unsupported:
            raise BadRequest(f"unsupported load parameter(s) {unsupported}: models come from the model store "
                                 "as exported (python -m export); only 'version' may be given")
        version = params.get("version")
        if version is not None and not isinstance(version, str):
            raise BadRequest(f"'version' must be a string parameter, got {version!r}")
        await process_drain().until(self.models.repository.load(name, version), oip.changed("load", name))
        return pb.RepositoryModelLoadResponse()

    @answers
    async def RepositoryModelUnload(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        oip.model_control()
        name = request.model_name
        await process_drain().until(self.models.repository.unload(name), oip.changed("unload", name))
        return pb.RepositoryModelUnloadResponse()


class TokenCheck(grpc.aio.ServerInterceptor):
    """``authorization: Bearer <token>`` on every call but the health ones, when a token is set."""

    def __init__(self, token: bytes) -> None:
        self.token = token

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "unauthorized: send metadata 'authorization: Bearer <token>' (MODEL_ZOO_API_TOKEN)")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)
        # a stream is denied before any message is read (a unary handler would wait for the first one)
        self._deny_stream = grpc.stream_stream_rpc_method_handler(deny)

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        if details.method in OPEN_METHODS:
            return await continuation(details)
        headers = [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in details.invocation_metadata or ()]
        given = presented_token(headers)
        if given is not None and hmac.compare_digest(given, self.token):
            return await continuation(details)
        return self._deny_stream if details.method in STREAM_METHODS else self._deny


class ReadinessHealth(health.aio.HealthServicer):
    """``grpc.health.v1`` whose ``Check`` answers from readiness at the moment it is asked (the server's
    poll, which keeps ``Watch`` streams current, may be up to ``HEALTH_POLL_S`` behind)."""

    def __init__(self, ready: Any) -> None:
        super().__init__()
        self._ready = ready

    async def Check(self, request: Any, context: Any) -> Any:
        if request.service in ("", SERVICE):
            serving = self._ready()
            await self.set(request.service, health_pb2.HealthCheckResponse.SERVING if serving
                           else health_pb2.HealthCheckResponse.NOT_SERVING)  # ignored once shutting down
        return await super().Check(request, context)


class GrpcServer:
    """This worker's gRPC server: started with the worker, stopped on SIGTERM's drain or shutdown."""

    def __init__(self, models: ModelManager, settings: Settings) -> None:
        self.models = models
        self.settings = settings
        self.address = f"{settings.grpc_host}:{settings.grpc_port}"
        self.server: grpc.aio.Server | None = None
        self.servicer: InferenceServicer | None = None
        self.health = ReadinessHealth(models.is_ready)
        self.started = False
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        token = token_from_env()
        self.server = grpc.aio.server(
            interceptors=[TokenCheck(token)] if token else [],
            options=[("grpc.so_reuseport", 1),  # every worker binds the same port
                     ("grpc.max_receive_message_length", self.settings.max_body_bytes),  # REST's body cap
                     ("grpc.max_send_message_length", -1),  # answers are bounded by the request caps
                     ("grpc.max_metadata_size", MAX_METADATA_BYTES)])
        self.servicer = InferenceServicer(self.models, self.settings.shed_lag_ms)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(self.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.server.add_insecure_port(self.address)  # RuntimeError naming the address when it cannot bind
        await self.server.start()
        self.started = True
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._follow_readiness()), loop.create_task(self._stop_on_drain())]
        logger.info("gRPC inference.GRPCInferenceService on %s (worker %d)", self.address, self.models.worker)

    async def _follow_readiness(self) -> None:
        """The health service says SERVING exactly when readiness (/readyz) would."""
        serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
        while True:
            status = serving if self.models.is_ready() else not_serving
            for name in ("", SERVICE):
                await self.health.set(name, status)
            await asyncio.sleep(HEALTH_POLL_S)

    async def _stop_on_drain(self) -> None:
        """SIGTERM: stop taking calls when uvicorn begins its graceful shutdown; calls in flight finish."""
        try:
            await process_drain().until(asyncio.Event().wait(), "")
        except ServiceError:  # ShuttingDown: the drain has begun
            await self.stop()

    async def stop(self) -> None:
        if self.server is None:
            return
        server, self.server, self.started = self.server, None, False
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await self.health.enter_graceful_shutdown()
        if self.servicer is not None:
            self.servicer.streams.close()  # open streams answer what they read, then end UNAVAILABLE
        await server.stop(GRACE_S)
        logger.info("gRPC server on %s stopped (worker %d)", self.address, self.models.worker)
