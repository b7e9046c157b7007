"""What each transport costs with no model behind it: why unary gRPC cannot beat REST in this Python
service (issue 29), and what a stream changes.

    python -m benchmarks.studies.grpc_transport [--duration 6] [--concurrency 32]

Three bare servers, each one process on one event loop with the service's own libraries, answering a
40-byte reply to the benchmark's request (a ``ModelInferRequest`` with one FP32 [1, 784] tensor; the
same tensor as OIP binary for REST):

- ``rest``: a plain ASGI app on uvicorn (httptools, uvloop when installed, as the service runs), driven by wrk;
- ``grpc-unary``: ``grpc.aio`` with a ``ModelInfer`` handler, driven by h2load (one call per stream);
- ``grpc-stream``: ``grpc.aio`` with a ``ModelStreamInfer`` handler, driven by h2load with 8 messages
  per stream, ``concurrency / 8`` streams at once (so ``concurrency`` messages are in flight).

Each prints requests (messages) per second and the server's CPU over the run (``/proc``), so CPU per
request = CPU / (req/s x duration). The service adds its own per-request work on top of any of these
(routing, decoding, batching, statistics), the same for every protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from benchmarks.grpc_bench import STREAM_K as K  # messages per stream

ROOT = Path(__file__).resolve().parents[2]

SERVERS = {
    "rest": """
        import sys, uvicorn
        async def app(scope, receive, send):
            if scope["type"] != "http":
                return
            more = True
            while more:
                more = (await receive()).get("more_body", False)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/octet-stream")]})
            await send({"type": "http.response.body", "body": bytes(40)})
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
    """,
    "grpc": """
        import asyncio, sys, grpc
        from service.grpc.protos import grpc_service_pb2 as pb, grpc_service_pb2_grpc as pb_grpc
        class S(pb_grpc.GRPCInferenceServiceServicer):
            async def ModelInfer(self, request, context):
                return pb.ModelInferResponse(model_name=request.model_name, id=request.id, raw_output_contents=[bytes(40)])
            async def ModelStreamInfer(self, requests, context):
                async for request in requests:
                    yield pb.ModelStreamInferResponse(infer_response=pb.ModelInferResponse(
                        model_name=request.model_name, id=request.id, raw_output_contents=[bytes(40)]))
        async def main():
            try:
                import uvloop
                uvloop.install()
            except ImportError:
                pass
            server = grpc.aio.server()
            pb_grpc.add_GRPCInferenceServiceServicer_to_server(S(), server)
            server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
            await server.start()
            await server.wait_for_termination()
        asyncio.run(main())
    """,
}


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(kind: str, port: int, work: Path) -> subprocess.Popen:
    script = work / f"bare_{kind}_server.py"  # not grpc.py: it would shadow the grpc package
    script.write_text(textwrap.dedent(SERVERS[kind]))
    proc = subprocess.Popen([sys.executable, str(script), str(port)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    time.sleep(2.0)
    if proc.poll() is not None:
        raise SystemExit(f"the {kind} server did not start")
    return proc


def measure(kind: str, concurrency: int, duration: int, work: Path) -> dict:
    """One bare server of ``kind`` under the grpc_bench part's own load generators: a warm-up run, then a timed one."""
    from benchmarks.grpc_bench import GRPC_PATH, REST_PATH, STREAM_PATH, grpc_body, rest_manifest, run_h2load, tensor
    from benchmarks.loadgen import run_wrk
    from benchmarks.servers import free_port

    x, port = tensor(), free_port()
    if kind == "rest":
        manifest = rest_manifest(x, work / "oip.tsv")

        def load() -> dict:
            return run_wrk(f"http://127.0.0.1:{port}", REST_PATH, concurrency, duration, manifest, 1)
    else:
        k = K if kind == "grpc-stream" else 1
        body = grpc_body(x, work / f"{kind}.grpc", tuple(str(i) for i in range(k)))

        def load() -> dict:
            return run_h2load(f"127.0.0.1:{port}", concurrency, duration, body, work / "h2load.log",
                              STREAM_PATH if k > 1 else GRPC_PATH, k)
    proc = serve("rest" if kind == "rest" else "grpc", port, work)
    try:
        load()  # warm-up, same length
        c0 = cpu_s(proc.pid)
        record = load()
        cpu = cpu_s(proc.pid) - c0
    finally:
        proc.terminate()
        proc.wait(10)
    rps, wall = record["requests_per_s"], record["wall_s"]
    return {"transport": kind, "concurrency": concurrency, "per_s": round(rps), "server_cpu_pct": round(100 * cpu / wall),
            "server_cpu_us_per_request": round(1e6 * cpu / (rps * wall), 1), "client_cpu_pct": record["client_cpu_pct"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.studies.grpc_transport", description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=6)
    p.add_argument("--concurrency", type=int, default=32)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="grpc-transport-") as tmp:
        rows = [measure(kind, args.concurrency, args.duration, Path(tmp)) for kind in ("rest", "grpc-unary", "grpc-stream")]
    print("| transport | c | requests (messages)/s | server CPU | server CPU per request | load generator CPU |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['transport']} | {r['concurrency']} | {r['per_s']} | {r['server_cpu_pct']}% | "
              f"{r['server_cpu_us_per_request']} us | {r['client_cpu_pct']}% |")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
