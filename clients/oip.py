"""Open Inference Protocol (KServe v2) request/response encoding, JSON and binary.

JSON form: ``{"inputs": [{"name", "shape", "datatype", "data": [flat values]}], "outputs": [...]}``.
Binary tensor extension (Triton/KServe): the body is the JSON header followed by the
raw little-endian tensor bytes; the header's length is in the
``Inference-Header-Content-Length`` HTTP header and each binary tensor carries
``parameters.binary_data_size``. BYTES tensors are 4-byte little-endian length-prefixed.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"

# OIP datatype <-> numpy dtype (little-endian on the wire).
_TO_NUMPY = {
    "BOOL": np.dtype(bool), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_FROM_NUMPY = {dt.newbyteorder("=") if dt.byteorder != "|" else dt: name for name, dt in _TO_NUMPY.items()}


def datatype_of(array: np.ndarray) -> str:
    if array.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    key = array.dtype.newbyteorder("=") if array.dtype.byteorder not in ("|", "=") else array.dtype
    try:
        return _FROM_NUMPY[key]
    except KeyError:
        raise ValueError(f"dtype {array.dtype} has no Open Inference Protocol datatype") from None


def _bytes_elements(array: np.ndarray) -> list[bytes]:
    return [x if isinstance(x, bytes) else str(x).encode("utf-8") for x in array.reshape(-1).tolist()]


def _serialize_bytes(array: np.ndarray) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in _bytes_elements(array))


def _deserialize_bytes(raw: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        out.append(raw[pos + 4:pos + 4 + n])
        pos += 4 + n
    return out


@dataclass
class InferResult:
    """An OIP response: ``outputs`` maps tensor name -> numpy array (BYTES -> str objects)."""

    model_name: str
    outputs: dict[str, np.ndarray]
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # the JSON header as received

    def __getitem__(self, name: str) -> np.ndarray:
        return self.outputs[name]


def encode_request(
    inputs: Mapping[str, Any],
    outputs: Sequence[str | Mapping[str, Any]] | None = None,
    *,
    binary: bool = False,
    parameters: Mapping[str, Any] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) for ``POST /v2/models/{name}/infer``.

    ``inputs``: name -> array-like (numpy arrays keep their dtype; lists become
    float32 if they hold floats). ``outputs``: names, or dicts passed through as
    OIP output requests (e.g. ``{"name": "logits", "parameters": {"classification": 3}}``).
    ``binary`` sends the input tensors and asks for the outputs in binary form.
    """
    if not inputs:
        raise ValueError("infer needs at least one input tensor")
    tensors, blobs = [], []
    for name, value in inputs.items():
        array = np.asarray(value)
        if array.dtype == np.float64 and not isinstance(value, np.ndarray):
            array = array.astype(np.float32)  # plain Python floats: models take FP32
        dtype = datatype_of(array)
        tensor: dict[str, Any] = {"name": name, "shape": list(array.shape), "datatype": dtype}
        if binary:
            blob = _serialize_bytes(array) if dtype == "BYTES" else np.ascontiguousarray(array).astype(_TO_NUMPY[dtype]).tobytes()
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        elif dtype == "BYTES":
            tensor["data"] = [b.decode("utf-8", "replace") for b in _bytes_elements(array)]
        else:
            tensor["data"] = array.reshape(-1).tolist()
        tensors.append(tensor)
    request: dict[str, Any] = {"inputs": tensors}
    if outputs is not None:
        request["outputs"] = []
        for out in outputs:
            spec = {"name": out} if isinstance(out, str) else dict(out)
            if binary:
                spec.setdefault("parameters", {})
                spec["parameters"] = {**spec["parameters"], "binary_data": True}
            request["outputs"].append(spec)
    params = dict(parameters or {})
    if binary and outputs is None:
        params.setdefault("binary_data_output", True)
    if params:
        request["parameters"] = params
    header = json.dumps(request, separators=(",", ":")).encode("utf-8")
    if not binary:
        return header, {"Content-Type": "application/json"}
    return header + b"".join(blobs), {
        "Content-Type": "application/octet-stream",
        HEADER_LENGTH: str(len(header)),
    }


def decode_response(content: bytes, headers: Mapping[str, str]) -> InferResult:
    """Parse a JSON or binary-extension OIP response into numpy arrays."""
    header_len = headers.get(HEADER_LENGTH) or headers.get(HEADER_LENGTH.lower())
    split = int(header_len) if header_len else len(content)
    try:
        body = json.loads(content[:split])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"inference response is not valid JSON: {exc}") from exc
    blob, pos = content[split:], 0
    outputs: dict[str, np.ndarray] = {}
    for tensor in body.get("outputs", []):
        name, shape, dtype = tensor["name"], tuple(tensor.get("shape", ())), tensor["datatype"]
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = blob[pos:pos + size]
            pos += size
            if dtype == "BYTES":
                values = [b.decode("utf-8", "replace") for b in _deserialize_bytes(raw)]
                array = np.array(values, dtype=object).reshape(shape)
            else:
                array = np.frombuffer(raw, dtype=_TO_NUMPY[dtype]).reshape(shape)
        elif dtype == "BYTES":
            array = np.array(np.asarray(tensor["data"], dtype=object).reshape(-1).tolist(), dtype=object).reshape(shape)
        else:
            array = np.asarray(tensor["data"], dtype=_TO_NUMPY[dtype]).reshape(shape)
        outputs[name] = array
    return InferResult(
        model_name=body.get("model_name", ""),
        model_version=body.get("model_version"),
        id=body.get("id"),
        outputs=outputs,
        parameters=body.get("parameters") or {},
        raw=body,
    )
