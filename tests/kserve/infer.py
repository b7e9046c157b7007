"""Run in .venv-kserve (KServe's SDK, unchanged): readiness, metadata and one ModelInfer over gRPC.

    python tests/kserve/infer.py HOST:PORT TOKEN MODEL INPUTS.npy  -> one JSON line on stdout
"""

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferInput, InferRequest


async def main(target: str, token: str, model: str, inputs: str) -> None:
    x = np.load(inputs)
    headers = [("authorization", f"Bearer {token}")]
    async with InferenceGRPCClient(target, timeout=60) as client:
        ready = await client.is_server_ready(headers=headers)
        tensor = InferInput(name="input", shape=list(x.shape), datatype="FP32")
        tensor.set_data_from_numpy(x)
        answer = await client.infer(InferRequest(model_name=model, infer_inputs=[tensor]), headers=headers)
    out = answer.outputs[0]
    print(json.dumps({"ready": ready, "model": answer.model_name, "output": out.name,
                      "logits": out.as_numpy().tolist()}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:]))
