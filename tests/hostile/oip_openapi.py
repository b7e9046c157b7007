"""An OpenAPI 3.0 description of the service's Open Inference Protocol routes, for schemathesis.

The OIP routes are a mounted Starlette app, so BentoML's own ``/docs.json`` does not list them. This
document follows the KServe v2 REST spec (the request/response shapes the service implements in
service/http/oip.py) closely enough that schemathesis generates requests of the right structure -- tensor
objects with name/datatype/shape/data -- and, in negative mode, the near-misses around them.
"""

from __future__ import annotations

from typing import Any

# served by the test server, missing from its store (404), unknown (404)
MODELS = ["mnist-mlp", "sine-rnn", "cifar10-resnet18", "no-such-model"]
DATATYPES = ["BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]

_error = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": MODELS}}
_free_name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}

TENSOR: dict[str, Any] = {
    "type": "object",
    "required": ["name", "datatype", "shape", "data"],
    "properties": {
        "name": {"type": "string", "enum": ["input", "images", "x", "h", "c", "logits", "y"]},
        "datatype": {"type": "string", "enum": DATATYPES},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": -2, "maximum": 800}, "maxItems": 5},
        "data": {"type": "array", "maxItems": 64,
                 "items": {"anyOf": [{"type": "number"}, {"type": "string", "maxLength": 64},
                                     {"type": "boolean"}, {"type": "array", "maxItems": 8, "items": {"type": "number"}}]}},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer"}}},
    },
}
REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string", "maxLength": 40},
        "inputs": {"type": "array", "items": TENSOR, "maxItems": 3},
        "outputs": {"type": "array", "maxItems": 3, "items": {
            "type": "object", "required": ["name"],
            "properties": {"name": {"type": "string", "enum": ["logits", "y", "h_out", "c_out", "nope"]},
                           "parameters": {"type": "object", "properties": {
                               "classification": {"type": "integer", "minimum": -2, "maximum": 20},
                               "binary_data": {"type": "boolean"}}}}}},
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
    },
}


def _get(summary: str, params: list[dict], ok: str = "200") -> dict[str, Any]:
    return {"get": {"summary": summary, "parameters": params, "responses": {
        ok: {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}},
        "400": {"description": "false / bad request", "content": {"application/json": {"schema": {"type": "object"}}}},
        "404": {"description": "unknown model", "content": {"application/json": {"schema": _error}}},
        "503": {"description": "not loaded", "content": {"application/json": {"schema": _error}}}}}}


def document() -> dict[str, Any]:
    infer = {"post": {
        "summary": "inference",
        "parameters": [_name],
        "requestBody": {"required": True, "content": {"application/json": {"schema": REQUEST}}},
        "responses": {
            "200": {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}},
            "400": {"description": "bad request", "content": {"application/json": {"schema": _error}}},
            "404": {"description": "unknown model", "content": {"application/json": {"schema": _error}}},
            "413": {"description": "over a cap", "content": {"application/json": {"schema": _error}}},
            "503": {"description": "not loaded / overloaded", "content": {"application/json": {"schema": _error}}},
        },
    }}
    return {
        "openapi": "3.0.3",
        "info": {"title": "model zoo: Open Inference Protocol", "version": "2"},
        "paths": {
            "/v2": _get("server metadata", []),
            "/v2/health/live": _get("liveness", []),
            "/v2/health/ready": _get("readiness", []),
            "/v2/models/{name}": _get("model metadata", [_free_name]),
            "/v2/models/{name}/ready": _get("model readiness", [_free_name]),
            "/v2/models/{name}/infer": infer,
        },
    }
