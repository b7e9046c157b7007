"""The gRPC part of ``make bench`` (benchmarks/grpc_bench.py), run very briefly: h2load replays a gRPC
ModelInfer frame, and streams of ModelStreamInfer frames, and wrk an OIP binary body against one real
``bentoml serve`` (a random-weight MLP); the report has one record per protocol and level, every answer
a success the server counted."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("h2load") is None or shutil.which("wrk") is None,
                                 reason="h2load (nghttp2-client) and wrk are needed: make test-tools installs them")]
ROOT = Path(__file__).resolve().parents[2]


def test_grpc_part_reports_every_protocol_at_each_level(tmp_path):
    out = tmp_path / "grpc.json"
    cmd = [sys.executable, "-m", "benchmarks.grpc_bench", "--random-weights", "--duration", "1", "--warmup", "0.5",
           "--keep", str(tmp_path / "work"), "--json", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["model"] == "mnist-mlp" and result["input"] == "FP32 [1, 784]"
    recs = {(r["protocol"], r["concurrency"]): r for r in result["records"]}
    assert set(recs) == {(p, c) for p in ("grpc", "grpc-stream", "rest-binary") for c in (1, 32)}
    for (protocol, _), r in recs.items():
        assert r["generator"] == ("wrk" if protocol == "rest-binary" else "h2load")
        assert r["ok"] > 0 and r["errors"] == {} and r["requests_per_s"] > 0, r
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["client_cpu_pct"] > 0, r
    # streams of 8 messages from 4 clients at c=32; one stream of one message at c=1: messages are counted
    for c, clients, k in ((1, 1, 1), (32, 4, 8)):
        r = recs[("grpc-stream", c)]
        assert (r["clients"], r["messages_per_stream"]) == (clients, k), r
        assert r["ok"] == r["streams"] * k and r["requests_per_s"] == round(r["ok"] / r["wall_s"], 2), r
