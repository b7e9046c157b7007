"""The naive reference server: what someone following a PyTorch tutorial would write.

FastAPI + uvicorn (one process) + eager PyTorch loaded from the checkpoint, torchvision transforms,
one forward pass per request and no batching across requests. The endpoints are ``async def`` and
compute inline, so the event loop finishes one request before it reads the next: one request at a
time (per model, and per server). Same routes and response shapes as the service
(DESIGN.md): ``POST /classify_digit`` / ``/classify_cifar10`` (multipart ``images``) ->
``[{"label", "index", "score", "top_k": [...]}]``, ``POST /forecast_sine`` -> ``{"forecast": [...]}``,
``GET /readyz``. The only extra over a tutorial: an undecodable upload is a 400 with a message,
not a 500, so a benchmark with a bad body fails loudly instead of counting errors as answers.

    python -m benchmarks.baselines.naive_server --model mnist-mlp=checkpoints/mnist-mlp/best.pt --port 8000
"""

from __future__ import annotations

import io
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision.transforms as T
from fastapi import FastAPI, File, UploadFile
from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from benchmarks.baselines import family_paths, serve
from zoo.spec import Spec
from training.checkpoint import CheckpointError, load_checkpoint
from training.models import build_model

ROUTES = {"mnist-mlp": "classify_digit", "cifar10-resnet18": "classify_cifar10", "sine-rnn": "forecast_sine"}
TOP_K = 5


@dataclass
class Loaded:
    model: torch.nn.Module
    spec: Spec
    transform: T.Compose | None  # PIL image -> (C, H, W) tensor; None for the forecaster


class ForecastRequest(BaseModel):
    history: list[float]
    steps: int


def load(path: Path, family: str) -> Loaded:
    """The tutorial way: build the module, load the state dict, eval()."""
    ckpt = load_checkpoint(path, family=family)
    model = build_model(family, ckpt["config"]["model"])
    model.load_state_dict(ckpt["model"])
    spec = Spec.from_dict(ckpt["spec"])
    transform = None
    if spec.image is not None:  # mean/std from the spec, as the service does
        im = spec.image
        transform = T.Compose([T.Resize((im.height, im.width)), T.ToTensor(), T.Normalize(im.mean, im.std)])
    return Loaded(model.eval(), spec, transform)


def classify(m: Loaded, blobs: list[tuple[str | None, bytes]]) -> list[dict] | JSONResponse:
    try:
        images = [Image.open(io.BytesIO(data)).convert(m.spec.image.color_mode) for _, data in blobs]
        x = torch.stack([m.transform(img) for img in images])  # (N, C, H, W)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        return JSONResponse({"error": f"cannot decode an uploaded image: {exc}"}, status_code=400)
    if m.spec.image.layout == "NF":
        x = x.flatten(1)  # (N, C*H*W) for the MLP
    with torch.no_grad():
        probs = torch.softmax(m.model(x), dim=1)
    scores, indices = probs.topk(min(TOP_K, m.spec.num_classes), dim=1)
    out = []
    for row_s, row_i in zip(scores.tolist(), indices.tolist()):
        top = [{"label": m.spec.labels[i], "index": i, "score": s} for s, i in zip(row_s, row_i)]
        out.append({**top[0], "top_k": top})
    return out


def forecast(m: Loaded, history: list[float], steps: int) -> dict | JSONResponse:
    if not history or not 1 <= steps <= m.spec.sequence.max_steps:
        return JSONResponse({"error": f"need a non-empty history and 1 <= steps <= {m.spec.sequence.max_steps}"},
                            status_code=400)
    preds = []
    with torch.no_grad():
        y, state = m.model(torch.tensor(history, dtype=torch.float32).view(1, -1, 1))  # (1, T, 1)
        nxt = y[:, -1:]  # prediction of the value after the history, (1, 1, 1)
        for _ in range(steps):
            preds.append(float(nxt))
            y, state = m.model(nxt, state)
            nxt = y[:, -1:]
    return {"forecast": preds}


def create_app(checkpoints: dict[str, Path]) -> FastAPI:
    app = FastAPI(title="naive model zoo (benchmark baseline)")
    models = {family: load(path, family) for family, path in checkpoints.items()}

    def model(family: str) -> Loaded | JSONResponse:
        if family not in models:
            return JSONResponse({"error": f"{family} is not loaded in the naive server"}, status_code=503)
        return models[family]

    @app.get("/readyz")
    async def readyz() -> dict:
        return {"ready": True, "models": sorted(models)}

    @app.post("/classify_digit")
    async def classify_digit(images: list[UploadFile] = File(...)):
        m = model("mnist-mlp")
        return m if isinstance(m, JSONResponse) else classify(m, [(f.filename, await f.read()) for f in images])

    @app.post("/classify_cifar10")
    async def classify_cifar10(images: list[UploadFile] = File(...)):
        m = model("cifar10-resnet18")
        return m if isinstance(m, JSONResponse) else classify(m, [(f.filename, await f.read()) for f in images])

    @app.post("/forecast_sine")
    async def forecast_sine(req: ForecastRequest):
        m = model("sine-rnn")
        return m if isinstance(m, JSONResponse) else forecast(m, req.history, req.steps)

    return app


def parse_models(items: list[str]) -> dict[str, Path]:
    return family_paths(items, ROUTES, "CHECKPOINT")


def main(argv: list[str] | None = None) -> int:
    return serve(__spec__.name, __doc__, "FAMILY=CHECKPOINT", lambda items: create_app(parse_models(items)),
                 (ValueError, CheckpointError), argv)


if __name__ == "__main__":
    sys.exit(main())
