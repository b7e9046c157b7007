"""The gRPC part: unary and streaming ModelInfer against OIP REST binary on ``mnist-mlp``, C load generators.

    python -m benchmarks.grpc_bench --random-weights --duration 3     # or: python -m benchmarks.run --parts grpc

One ``bentoml serve`` with gRPC on (``MODEL_ZOO_GRPC_PORT``) serves both protocols; at each
concurrency (``LEVELS``) each protocol gets an untimed warm-up, then a timed closed loop:

- gRPC: Debian's ``h2load`` (nghttp2-client) replays one prebuilt request body, a gRPC frame (1 byte
  flag, 4 byte big-endian length, a serialized ``ModelInferRequest`` with one FP32 [1, 784]
  ``raw_input_contents``), with ``content-type: application/grpc`` and ``te: trailers``. h2load sees
  HTTP statuses only, and a gRPC error is HTTP 200 with a ``grpc-status`` trailer: so the model's
  Triton statistics (``success`` count) must grow by the answers h2load counted (give or take the
  calls in flight when a run starts or stops).
- gRPC stream (``grpc-stream``): h2load replays a body of ``STREAM_K`` such frames (distinct ids) on
  ``ModelStreamInfer``, one stream per h2load request, with C / ``STREAM_K`` clients, so that C
  requests are in flight at once (at c=1: one client, streams of one message). Its requests/s counts
  messages (streams/s x messages per stream); its p50/p99 are a whole stream's (every message
  answered). An error inside a stream is a ``ModelStreamInferResponse`` with ``error_message``, under
  HTTP 200 and grpc-status 0: the server's success count is checked as for unary calls.
- REST: ``wrk`` (benchmarks/loadgen.py) posts the same tensor as OIP binary (JSON header + raw bytes).

Each record: requests/s, p50/p99 (h2load's per-request log; wrk's histogram) and the generator's CPU
share (the kernel's rusage of the generator process over the wall time).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.loadgen import TIMEOUT_S, _children_cpu_s, run_wrk
from benchmarks.store import BenchError

MODEL = "mnist-mlp"
LEVELS = (1, 32)
GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
STREAM_PATH = "/inference.GRPCInferenceService/ModelStreamInfer"
STREAM_K = 8  # messages per replayed stream (fewer at a level below it)
REST_PATH = f"/v2/models/{MODEL}/infer"


def tensor(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((1, 784), dtype=np.float32)  # (1, 784) pixels in [0, 1)


def grpc_body(x: np.ndarray, out: Path, ids: tuple[str, ...] = ("",)) -> Path:
    """Length-prefixed gRPC messages, one per id: ``ModelInferRequest`` with ``x`` in ``raw_input_contents``."""
    from service.grpc.protos import grpc_service_pb2 as pb  # this process never imports tritonclient

    frames = []
    for rid in ids:
        request = pb.ModelInferRequest(model_name=MODEL, id=rid)
        request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
        request.raw_input_contents.append(x.astype("<f4").tobytes())
        message = request.SerializeToString()
        frames.append(b"\x00" + struct.pack(">I", len(message)) + message)
    out.write_bytes(b"".join(frames))
    return out


def stream_messages(concurrency: int) -> int:
    """Messages per replayed stream at a level: ``STREAM_K``, or the level itself below it."""
    return min(STREAM_K, concurrency)


def rest_manifest(x: np.ndarray, out: Path) -> Path:
    """OIP binary tensor body for wrk (benchmarks/loadgen.lua's manifest, with its framing header)."""
    raw = x.astype("<f4").tobytes()
    header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    body = out.with_suffix(".bin")
    body.write_bytes(header + raw)
    out.write_text(f"application/octet-stream\t{body}\tInference-Header-Content-Length: {len(header)}\n")
    return out


def h2load_binary() -> str:
    exe = shutil.which("h2load")
    if exe is None:
        raise BenchError("h2load is not installed: `make bench` installs it (apt-get install nghttp2-client)")
    return exe


def run_h2load(target: str, concurrency: int, duration: float, body: Path, log: Path, path: str = GRPC_PATH,
               messages: int = 1) -> dict[str, Any]:
    """One closed-loop h2load run (one connection per client, one stream each); a record like run_wrk's.
    ``messages``: gRPC messages in ``body``, all answered on one stream (``concurrency // messages``
    clients); ``ok`` and requests/s count messages, the latencies are per stream."""
    secs = max(1, math.ceil(duration))
    clients = max(1, concurrency // messages)
    cmd = [h2load_binary(), "--clients", str(clients), "--threads", "1", "--max-concurrent-streams", "1",
           "--duration", str(secs), "--data", str(body), "--header", "content-type: application/grpc",
           "--header", "te: trailers", "--log-file", str(log), f"http://{target}{path}"]
    log.unlink(missing_ok=True)  # h2load appends
    cpu0 = _children_cpu_s()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + TIMEOUT_S + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"h2load did not finish: {' '.join(cmd)}") from None
    cpu = _children_cpu_s() - cpu0
    if proc.returncode != 0:
        raise BenchError(f"h2load failed (exit {proc.returncode}) at {target} c={concurrency}: "
                         f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    statuses = [int(r[1]) for r in rows]
    latencies_us = np.array([int(r[2]) for r in rows if int(r[1]) == 200], dtype=np.float64)
    streams = len(latencies_us)
    ok = streams * messages
    wall = float(secs)
    extra = {"clients": clients, "messages_per_stream": messages, "streams": streams} if path == STREAM_PATH else {}
    return {
        "concurrency": concurrency, "requests": len(rows) * messages, "ok": ok,
        "errors": {"non-200": len(statuses) - streams} if len(statuses) != streams else {}, **extra,
        "wall_s": wall, "requests_per_s": round(ok / wall, 2),
        "p50_ms": round(float(np.percentile(latencies_us, 50)) / 1e3, 3) if ok else None,
        "p99_ms": round(float(np.percentile(latencies_us, 99)) / 1e3, 3) if ok else None,
        "client_cpu_s": round(cpu, 3), "client_cpu_pct": round(100.0 * cpu / wall, 1), "generator": "h2load",
    }


def successes(url: str) -> int:
    import httpx

    return httpx.get(f"{url}/v2/models/{MODEL}/stats", timeout=30).json()["model_stats"][0]["inference_stats"]["success"]["count"]


def run_grpc(home: Path, work: Path, duration: float, warm_s: float, levels: tuple[int, ...] = LEVELS) -> dict:
    """The part's records: per level, gRPC unary, gRPC stream, then REST binary, on one server serving both."""
    from benchmarks.servers import free_port, start_service

    work.mkdir(parents=True, exist_ok=True)
    x = tensor()
    body, manifest = grpc_body(x, work / "infer.grpc"), rest_manifest(x, work / "oip-binary.tsv")
    port = free_port()
    env = {"MODEL_ZOO_GRPC_PORT": str(port), "MODEL_ZOO_GRPC_HOST": "127.0.0.1", "MODEL_ZOO_MODELS": MODEL}
    server = start_service(home, work / "service.log", env)
    target, records = f"127.0.0.1:{port}", []

    def h2load(protocol: str, c: int, path: str, body: Path, messages: int = 1) -> None:
        run_h2load(target, c, warm_s, body, work / "warm.log", path, messages)
        before = successes(server.url)
        rec = run_h2load(target, c, duration, body, work / f"h2load-{protocol}-c{c}.log", path, messages)
        counted = successes(server.url) - before
        # a gRPC error is HTTP 200 too: only the server's count tells. Up to c requests of the warm-up
        # finish after ``before`` is read, and up to c are cut off at the end (answered, not counted)
        if not rec["ok"] <= counted <= rec["ok"] + 2 * c:
            raise BenchError(f"{protocol} c={c}: h2load counted {rec['ok']} answers, the server {counted} successes "
                             f"(log: {work / 'service.log'})")
        records.append({"protocol": protocol, **rec})

    try:
        for c in levels:
            h2load("grpc", c, GRPC_PATH, body)
            k = stream_messages(c)
            frames = grpc_body(x, work / f"stream-{k}.grpc", tuple(f"m{i}" for i in range(k)))
            h2load("grpc-stream", c, STREAM_PATH, frames, k)
            run_wrk(server.url, REST_PATH, c, warm_s, manifest, 1)
            records.append({"protocol": "rest-binary", **run_wrk(server.url, REST_PATH, c, duration, manifest, 1)})
    finally:
        server.stop()
    return {"model": MODEL, "input": "FP32 [1, 784]", "duration_s": duration, "records": records}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.grpc_bench", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=15.0, help="seconds per timed point")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of untimed load before each point")
    p.add_argument("--random-weights", action="store_true", help="a randomly initialised mnist-mlp (no training)")
    p.add_argument("--keep", metavar="DIR", help="work directory to keep (store, logs)")
    p.add_argument("--json", metavar="FILE", help="write the records here too")
    args = p.parse_args(argv)
    from benchmarks.store import fill_store, use_home
    from zoo.datadir import default_data_dir

    work = Path(args.keep).resolve() if args.keep else Path(tempfile.mkdtemp(prefix="model-zoo-grpc-bench-"))
    try:
        home = use_home(work)
        fill_store(work, default_data_dir(), (MODEL,), args.random_weights)
        result = run_grpc(home, work / "grpc", args.duration, args.warmup)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
