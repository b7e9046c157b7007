"""gRPC messages of ``inference.GRPCInferenceService`` <-> the Open Inference Protocol's parsed request.

``infer_request`` turns a ``ModelInferRequest`` into the same ``InferRequest`` the REST codec makes
(service/http/oip_codec.py), with the same checks and messages: each input's tensor comes from
``raw_input_contents`` (little-endian, BYTES elements length-prefixed: what tritonclient sends) or from
its typed ``contents`` (``fp32_contents``, ``bytes_contents`` ...), never both. ``infer_response`` puts
every output in ``raw_output_contents``, as Triton answers; ``model_statistics`` makes Triton's
``ModelStatisticsResponse`` from the REST route's dicts. Every malformed request raises
``BadRequest`` naming the tensor and the problem.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from google.protobuf import json_format

from service.errors import BadRequest
from service.grpc.protos import grpc_service_pb2 as pb
from service.http.oip_codec import DTYPES, InferRequest, Tensor, check_datatype, check_shape, raw_bytes, raw_values

# Triton's typed contents field for each datatype (FP16 and BF16 travel raw only)
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def parameters(params: Any) -> dict[str, Any]:
    """A ``map<string, InferParameter>`` (or ``ModelRepositoryParameter``) as plain values."""
    out = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(param, choice)
    return out


def _typed_values(t: Any, datatype: str, shape: list[int]) -> Any:
    field = CONTENTS.get(datatype)
    if field is None:
        raise BadRequest(f"input {t.name!r}: {datatype} data can only be sent in raw_input_contents")
    others = [f.name for f, _ in t.contents.ListFields() if f.name != field]
    if others:
        raise BadRequest(f"input {t.name!r}: a {datatype} tensor's data belongs in contents.{field}, "
                         f"got {', '.join(others)}")
    values = getattr(t.contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise BadRequest(f"input {t.name!r}: shape {shape} needs {count} elements, contents.{field} has {len(values)}")
    if datatype == "BYTES":
        return list(values)
    try:
        return np.asarray(values, dtype=DTYPES[datatype])
    except (OverflowError, ValueError) as exc:  # an int32 field holding a value past INT8
        raise BadRequest(f"input {t.name!r}: data does not fit {datatype}: {exc}") from None


def infer_request(request: Any) -> InferRequest:
    """A ``ModelInferRequest`` -> tensors by name, checked as the REST codec checks them."""
    if not request.inputs:
        raise BadRequest("inference request must have at least one input")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs: "
                         "send one per input, in input order, or typed contents for every input")
    inputs: dict[str, Tensor] = {}
    for i, t in enumerate(request.inputs):
        name = t.name
        if not name:
            raise BadRequest(f"inputs[{i}] has no name")
        datatype = check_datatype(t.datatype, name)
        shape = check_shape(list(t.shape), name)
        if raw:
            if t.HasField("contents"):
                raise BadRequest(f"input {name!r}: both raw_input_contents and typed contents; send one")
            value = raw_values(raw[i], name, datatype, shape)
        else:
            value = _typed_values(t, datatype, shape)
        if datatype != "BYTES":
            value = value.reshape(shape)
        if name in inputs:
            raise BadRequest(f"input {name!r} given twice")
        inputs[name] = Tensor(name, datatype, shape, value, parameters(t.parameters))
    outputs = [{"name": o.name, "parameters": parameters(o.parameters)} for o in request.outputs]
    return InferRequest(inputs, outputs, parameters(request.parameters), request.id or None)


def infer_response(name: str, version: str, request_id: str | None,
                   tensors: list[tuple[dict[str, Any], Any, bool]]) -> Any:
    """Output tensors (service/http/oip.py ``output_tensors``) -> a ``ModelInferResponse``, all raw."""
    response = pb.ModelInferResponse(model_name=name, model_version=version, id=request_id or "")
    for meta, values, _binary in tensors:  # gRPC answers are always raw (the binary flag is REST's)
        response.outputs.add(name=meta["name"], datatype=meta["datatype"], shape=meta["shape"])
        response.raw_output_contents.append(raw_bytes(meta["datatype"], values))
    return response


def model_metadata(meta: dict[str, Any]) -> Any:
    """OIP model metadata (service/http/oip.py ``metadata``) -> a ``ModelMetadataResponse``."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=meta["name"], versions=meta["versions"], platform=meta["platform"],
        inputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["inputs"]],
        outputs=[tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"]) for t in meta["outputs"]])


def model_statistics(entries: list[dict[str, Any]]) -> Any:
    """Triton's ``model_stats`` entries (service/core/stats.py ``model_statistics``: the proto's field
    names) -> a ``ModelStatisticsResponse``."""
    return json_format.ParseDict({"model_stats": entries}, pb.ModelStatisticsResponse())
