"""The naive ONNX Runtime server: the eager naive server's shape, with the service's runtime and model file.

FastAPI + uvicorn (one process), one ``onnxruntime.InferenceSession`` per model opened on the very
``model.onnx`` the service serves (the store entry's directory), the service's own decode and
preprocessing (``service.core.preprocess``) and top-k, one session call per request, no batching across
requests, ONNX Runtime's thread pool sized by its default and not spinning. The endpoints are
``async def`` and compute inline: one request at a time. So the
service's ratio over this server is what the service adds beyond the runtime (workers, adaptive
batching, threads), not a faster runtime. Same routes and answers as the service's family routes
for the classifiers, and ``GET /readyz``; an undecodable upload is a 400 with the service's message.

    python -m benchmarks.baselines.naive_ort_server --model mnist-mlp=STORE_ENTRY_DIR --port 8000
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, File, UploadFile
from fastapi.responses import JSONResponse

from benchmarks.baselines import family_paths, serve
from service.core.classifier import TOP_K, softmax, top_k
from service.core.preprocess import preprocess_many
from service.errors import ServiceError
from zoo.families import FAMILIES
from zoo.spec import Spec

MAX_PIXELS = 3_200_000  # per image: the service's cap for a 28x28 model (service/core/limits.py), ample here


@dataclass
class Loaded:
    session: ort.InferenceSession
    input_name: str
    spec: Spec


def load(entry_dir: Path) -> Loaded:
    """An InferenceSession on the file: CPU, ONNX Runtime's default thread count (the cores), but its
    pool does not busy-wait between calls (as in the service): with the default spinning, the idle pool
    takes a core from the one thread serving HTTP, and the ratio would measure that setting."""
    spec = Spec.from_json((entry_dir / "spec.json").read_text())
    opts = ort.SessionOptions()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(entry_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    return Loaded(sess, sess.get_inputs()[0].name, spec)


def classify(m: Loaded, blobs: list[tuple[str | None, bytes]]) -> list[dict] | JSONResponse:
    try:
        x = preprocess_many(blobs, m.spec.image, MAX_PIXELS)
    except ServiceError as exc:  # service.core.preprocess names the file and the problem
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
    logits = m.session.run(None, {m.input_name: x})[0]
    rows = top_k(softmax(np.asarray(logits)), m.spec.labels, min(TOP_K, m.spec.num_classes))
    return [{**row[0], "top_k": row} for row in rows]


def create_app(entries: dict[str, Path]) -> FastAPI:
    app = FastAPI(title="naive ONNX Runtime model zoo (benchmark baseline)")
    models = {family: load(path) for family, path in entries.items()}

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"ready": True, "models": sorted(models)}

    for family in models:
        route = FAMILIES[family].route

        def endpoint(family: str = family):
            async def classify_route(images: list[UploadFile] = File(...)):
                return classify(models[family], [(f.filename, await f.read()) for f in images])
            return classify_route

        app.post(f"/{route}", name=route)(endpoint())
    return app


def parse_models(items: list[str]) -> dict[str, Path]:
    classifiers = [name for name, f in FAMILIES.items() if f.decoder == "images"]
    out = family_paths(items, classifiers, "STORE_ENTRY_DIR")
    for family, path in out.items():
        if not (path / "model.onnx").is_file():
            raise ValueError(f"--model {family}={path}: no model.onnx in {path}")
    return out


def main(argv: list[str] | None = None) -> int:
    return serve(__spec__.name, __doc__, "FAMILY=STORE_ENTRY_DIR", lambda items: create_app(parse_models(items)),
                 (ValueError, OSError), argv)


if __name__ == "__main__":
    sys.exit(main())
