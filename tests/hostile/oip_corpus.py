"""Hostile Open Inference Protocol requests, each with its documented answer (docs/reliability.md).

Every case is one ``POST /v2/models/{model}/infer`` body (JSON, or a JSON header plus binary tensor
data) that once cost the server a 500 or far more work than its size: malformed JSON the parser chokes
on in unusual ways, shapes numpy cannot build, wrongly typed fields, ragged nesting, and tensors whose
answer is orders of magnitude larger than the request. Each must be a 4xx JSON ``{"error": ...}``
containing ``fragment``, answered quickly, with the server still ready.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Case:
    name: str
    what: str  # one line for the docs table
    model: str
    body: bytes
    status: int
    fragment: str
    headers: dict[str, str] = field(default_factory=dict)


def _tensor(name: str, shape: list, datatype, data) -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


def binary(inputs: list[tuple[str, str, list[int], bytes]]) -> tuple[bytes, dict[str, str]]:
    """(name, datatype, shape, raw bytes) tensors -> body and headers of the binary tensor extension."""
    header = json.dumps({"inputs": [{"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
                                    for n, d, s, b in inputs]}).encode()
    return header + b"".join(b for *_, b in inputs), {"inference-header-content-length": str(len(header))}


def cases() -> list[Case]:
    out = []

    def add(name, what, model, payload, status, fragment, headers=None):
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        out.append(Case(name, what, model, body, status, fragment, headers or {}))

    # --- inputs that were a plain-text 500 (issue 18, item 6)
    add("huge-zero-shape", "`shape` [0, 4611686018427387904] with empty data", "mnist-mlp",
        _tensor("input", [0, 4611686018427387904], "FP32", []), 400, "dimension over")
    add("datatype-list", '`"datatype": ["FP32"]`', "mnist-mlp", _tensor("input", [1, 784], ["FP32"], [0.0] * 784),
        400, "unknown datatype ['FP32']")
    add("int-4301-digits", "an integer literal of 4,301 digits", "mnist-mlp",
        b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [' + b"7" * 4301 + b"]}]}",
        400, "not valid JSON")
    add("nested-100k", "100,000 nested `[`", "mnist-mlp", b"[" * 100_000, 400, "nested too deeply")
    add("output-params-string", '`"outputs": [{"name": "logits", "parameters": "x"}]`', "mnist-mlp",
        {**_tensor("input", [1, 784], "FP32", [0.0] * 784), "outputs": [{"name": "logits", "parameters": "x"}]},
        400, "'parameters' must be an object")
    # --- ragged or wrongly nested data (item 7)
    add("ragged", "ragged nested `data` ([[...784], [...783]] for shape [2, 784])", "mnist-mlp",
        _tensor("input", [2, 784], "FP32", [[0.0] * 784, [0.0] * 783 + [[0.0]]]), 400, "does not match shape")
    add("ragged-same-count", "nested rows of 2 and 4 values for shape [3, 2]", "sine-rnn",
        _tensor("x", [3, 2, 1], "FP32", [[[0.1], [0.2]], [[0.3], [0.4], [0.5], [0.6]], []]), 400, "does not match shape")
    add("too-many-dims", "a shape with 9 dimensions", "mnist-mlp", _tensor("input", [1] * 9, "FP32", [0.0]),
        400, "more than 8 dimensions")
    # --- small requests asking for huge answers (item 1): sine-rnn and the image tensor path are capped
    body, headers = binary([("x", "FP32", [1_000_000, 1, 1], np.zeros(1_000_000, "<f4").tobytes())])
    out.append(Case("sine-batch-1m", "sine-rnn `x` [1000000, 1, 1] (4 MB binary; was a 663 MB answer)", "sine-rnn",
                    body, 413, "over the cap of 256 per request", headers))
    body, headers = binary([("x", "FP32", [256, 400, 1], np.zeros(256 * 400, "<f4").tobytes())])
    out.append(Case("sine-steps", "sine-rnn `x` [256, 400, 1]: N x T over 65536", "sine-rnn", body, 413,
                    "102400 time steps is over the cap of 65536", headers))
    body, headers = binary([("input", "FP32", [2000, 784], np.zeros(2000 * 784, "<f4").tobytes())])
    out.append(Case("image-batch", "mnist-mlp `input` [2000, 784] (6 MB binary)", "mnist-mlp", body, 413,
                    "2000 items is over the cap of 256", headers))
    return out

