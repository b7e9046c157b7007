"""gRPC: the KServe v2 / Triton ``inference.GRPCInferenceService`` beside REST, in every worker.

``MODEL_ZOO_GRPC_PORT`` turns it on (service/config.py); service/grpc/server.py is the server,
service/grpc/stream.py its ModelStreamInfer, service/grpc/codec.py the messages, service/grpc/protos/
the proto file and its generated stubs.
Nothing here is imported while the port is unset.
"""

from __future__ import annotations

from typing import Any

from service.config import Settings


def grpc_server(models: Any, settings: Settings) -> Any:
    """This worker's ``GrpcServer`` over its ``ModelManager``, or None when gRPC is off."""
    if not settings.grpc_port:
        return None
    from service.grpc.server import GrpcServer

    return GrpcServer(models, settings)
