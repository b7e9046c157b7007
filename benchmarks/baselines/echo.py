"""One trivial JSON route, ``POST /echo {"x": int} -> {"y": x}``, served three ways (benchmarks/studies/floor.py).

- ``app``: FastAPI under uvicorn, the framework of the naive peers (``python -m uvicorn benchmarks.baselines.echo:app``).
- ``EchoLean``: a BentoML 1.4 service with the settings service/app.py uses for its inference routes
  (one worker per process here, metrics on, access log off, the route excluded from tracing).
- ``EchoDefaults``: the same service with BentoML's defaults (tracing and access log on).

No model and no decoding: what each costs per request is the framework's own floor.
"""

from __future__ import annotations

import bentoml
from fastapi import FastAPI

app = FastAPI()


@app.post("/echo")
async def echo(body: dict) -> dict:
    return {"y": body.get("x", 0)}


@app.get("/readyz")
async def readyz() -> dict:
    return {"ready": True}


class _Echo:
    @bentoml.api
    async def echo(self, x: int = 0) -> dict:
        return {"y": x}


EchoLean = bentoml.service(name="echo_lean", workers=1, metrics={"enabled": True},
                           logging={"access": {"enabled": False}},
                           tracing={"excluded_urls": ["/echo"]})(type("EchoLean", (_Echo,), {}))
EchoDefaults = bentoml.service(name="echo_defaults", workers=1)(type("EchoDefaults", (_Echo,), {}))
