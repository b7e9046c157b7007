"""Open Inference Protocol (KServe v2) tensors on the wire: JSON and the binary tensor data extension.

Request: a JSON header ``{"inputs": [{"name", "shape", "datatype", "data" | "parameters":
{"binary_data_size": n}}], "outputs": [...], "parameters": {...}}``; with the binary extension the
header's length is in ``Inference-Header-Content-Length`` and the raw tensors follow it, in input
order, little-endian; BYTES elements are each prefixed by a 4-byte little-endian length.
In JSON, a BYTES element is a string; this service reads image bytes sent in JSON as base64.
Every malformed request raises ``BadRequest`` naming the tensor and the problem.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.errors import BadRequest

HEADER_LENGTH = "inference-header-content-length"
DTYPES = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    value: Any  # np.ndarray for numeric tensors, list[bytes] for BYTES
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferRequest:
    inputs: dict[str, Tensor]
    outputs: list[dict[str, Any]]  # requested outputs as sent ({"name", "parameters"}); empty: all
    parameters: dict[str, Any]
    id: str | None


MAX_DIMS = 8  # no served model takes more than 3; a long shape list is only work for the parser
MAX_DIM = 2**31 - 1  # numpy refuses sizes past this (a 500 if it reached np.reshape)


def _shape(raw: Any, name: str) -> list[int]:
    if not isinstance(raw, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of non-negative integers, got {_short(raw)}")
    if len(raw) > MAX_DIMS or any(d > MAX_DIM for d in raw):
        raise BadRequest(f"input {name!r}: shape {_short(raw)} has more than {MAX_DIMS} dimensions or a dimension "
                         f"over {MAX_DIM}")
    return raw


def _short(value: Any, limit: int = 80) -> str:
    """A client's value for an error message, cut so a huge one cannot make the answer huge."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _flatten(data: Any, shape: list[int], name: str) -> list[Any]:
    """``data`` flat (row-major, as KServe allows) or nested exactly as ``shape``; ragged nesting is a 400."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(item, list) for item in data):
        return data
    out: list[Any] = []
    stack = [(data, 0)]  # (list, its depth); iterative: the nesting depth is the client's choice
    while stack:
        items, depth = stack.pop()
        if depth >= len(shape) or len(items) != shape[depth]:
            raise BadRequest(f"input {name!r}: nested 'data' does not match shape {shape} (ragged or wrongly "
                             "nested lists); send it nested exactly as the shape, or flat")
        if depth == len(shape) - 1:
            if any(isinstance(item, list) for item in items):
                raise BadRequest(f"input {name!r}: nested 'data' does not match shape {shape}: nested deeper than it")
            out.extend(items)
        else:
            stack.extend((item if isinstance(item, list) else [item], depth + 1) for item in reversed(items))
    return out


def _bytes_elements(raw: bytes, name: str) -> list[bytes]:
    items, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadRequest(f"input {name!r}: BYTES data ends inside an element's 4-byte length prefix")
        (n,) = struct.unpack_from("<I", raw, pos)
        if pos + 4 + n > len(raw):
            raise BadRequest(f"input {name!r}: BYTES element of {n} bytes runs past the tensor's data")
        items.append(raw[pos + 4:pos + 4 + n])
        pos += 4 + n
    return items


def _json_values(tensor: dict[str, Any], name: str, datatype: str, count: int) -> Any:
    if "data" not in tensor:
        raise BadRequest(f"input {name!r}: no 'data' (and no parameters.binary_data_size)")
    flat = _flatten(tensor["data"], tensor["shape"], name)
    if len(flat) != count:
        raise BadRequest(f"input {name!r}: shape {tensor['shape']} needs {count} elements, 'data' has {len(flat)}")
    if datatype == "BYTES":
        out = []
        for i, v in enumerate(flat):
            if not isinstance(v, str):
                raise BadRequest(f"input {name!r}: BYTES element {i} must be a string (base64 for binary data)")
            try:
                out.append(base64.b64decode(v, validate=True))
            except (binascii.Error, ValueError):
                raise BadRequest(f"input {name!r}: BYTES element {i} is not valid base64; send image bytes as "
                                 "base64 in JSON, or raw with the binary tensor data extension") from None
        return out
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in flat) and datatype != "BOOL":
        raise BadRequest(f"input {name!r}: {datatype} data must be numbers")
    try:
        return np.asarray(flat, dtype=DTYPES[datatype])
    except (OverflowError, ValueError) as exc:
        raise BadRequest(f"input {name!r}: data does not fit {datatype}: {exc}") from None


def check_datatype(datatype: Any, name: str) -> str:
    """A tensor's datatype as sent, if it is one of the protocol's; else a 400 listing them."""
    if not isinstance(datatype, str) or (datatype not in DTYPES and datatype != "BYTES"):
        raise BadRequest(f"input {name!r}: unknown datatype {_short(datatype)}; one of {', '.join([*DTYPES, 'BYTES'])}")
    return datatype


def check_shape(raw: Any, name: str) -> list[int]:
    """A tensor's shape as sent: non-negative integers, at most ``MAX_DIMS`` of them, each at most ``MAX_DIM``."""
    return _shape(raw, name)


def raw_values(raw: bytes, name: str, datatype: str, shape: list[int], size_is: str = "got") -> Any:
    """One tensor's raw little-endian bytes (the binary extension's, gRPC's ``raw_input_contents``) ->
    a flat array, or the list of elements of a BYTES tensor (each prefixed by its 4-byte length).
    ``size_is`` names the byte count in the error (REST: "binary_data_size is")."""
    count = math.prod(shape)
    if datatype == "BYTES":
        value = _bytes_elements(raw, name)
        if len(value) != count:
            raise BadRequest(f"input {name!r}: shape {shape} needs {count} BYTES elements, got {len(value)}")
        return value
    if len(raw) != count * DTYPES[datatype].itemsize:
        raise BadRequest(f"input {name!r}: shape {shape} of {datatype} needs "
                         f"{count * DTYPES[datatype].itemsize} bytes, {size_is} {len(raw)}")
    return np.frombuffer(raw, dtype=DTYPES[datatype])


def parse_infer(body: bytes, header_length: str | None) -> InferRequest:
    """Raw request body (+ the Inference-Header-Content-Length header) -> tensors by name."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length {header_length!r} is not an integer") from None
        if not 0 < split <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {split} does not fit a body of {len(body)} bytes")
    else:
        split = len(body)
    try:
        header = json.loads(body[:split])
    except (ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError, bad UTF-8 and an integer literal past Python's digit limit;
        # RecursionError: nesting deeper than the parser's recursion limit
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise BadRequest(f"inference request header is not valid JSON: {reason}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list) or not header["inputs"]:
        raise BadRequest("inference request must be a JSON object with a non-empty 'inputs' list")
    blob, pos = body[split:], 0
    inputs: dict[str, Tensor] = {}
    for i, t in enumerate(header["inputs"]):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise BadRequest(f"inputs[{i}] must be an object with a 'name'")
        name = t["name"]
        datatype = check_datatype(t.get("datatype"), name)
        shape = _shape(t.get("shape"), name)
        count = math.prod(shape)
        params = t.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size < 0 or pos + size > len(blob):
                raise BadRequest(f"input {name!r}: binary_data_size {size!r} runs past the {len(blob)} bytes of tensor data")
            value: Any = raw_values(blob[pos:pos + size], name, datatype, shape, "binary_data_size is")
            pos += size
        else:
            value = _json_values(t, name, datatype, count)
        if datatype != "BYTES":
            try:
                value = value.reshape(shape)
            except ValueError as exc:
                raise BadRequest(f"input {name!r}: cannot shape the data as {shape}: {exc}") from None
        if name in inputs:
            raise BadRequest(f"input {name!r} given twice")
        inputs[name] = Tensor(name, datatype, shape, value, params if isinstance(params, dict) else {})
    if pos != len(blob):
        raise BadRequest(f"{len(blob) - pos} bytes of tensor data after the header are not claimed by any "
                         "input's binary_data_size")
    outputs = header.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    for o in outputs:
        if not isinstance(o.get("parameters") or {}, dict):
            raise BadRequest(f"output {o['name']!r}: 'parameters' must be an object, got {_short(o['parameters'])}")
    parameters = header.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest("'parameters' must be an object")
    return InferRequest(inputs, outputs, parameters, header.get("id") if isinstance(header.get("id"), str) else None)


def raw_bytes(datatype: str, values: Any) -> bytes:
    """One output tensor as raw little-endian bytes (binary extension, gRPC ``raw_output_contents``);
    BYTES elements each prefixed by a 4-byte little-endian length."""
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in values)
    return np.ascontiguousarray(values, dtype=DTYPES[datatype]).tobytes()


def encode_response(header: dict[str, Any], tensors: list[tuple[dict[str, Any], Any, bool]]) -> tuple[bytes, dict[str, str]]:
    """``tensors``: (output metadata {"name","datatype","shape"}, values, binary?) -> (body, headers)."""
    outputs, blobs = [], []
    for meta, values, binary in tensors:
        meta = dict(meta)
        if binary:
            blob = raw_bytes(meta["datatype"], values)
            meta["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif meta["datatype"] == "BYTES":
            meta["data"] = [b.decode("utf-8") for b in values]
        else:
            meta["data"] = np.asarray(values).reshape(-1).tolist()
        outputs.append(meta)
    text = json.dumps({**header, "outputs": outputs}, separators=(",", ":")).encode("utf-8")
    if not blobs:
        return text, {"content-type": "application/json"}
    return text + b"".join(blobs), {"content-type": "application/octet-stream",
                                    "inference-header-content-length": str(len(text))}
