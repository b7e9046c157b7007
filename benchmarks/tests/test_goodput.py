"""``python -m benchmarks.goodput`` end to end, briefly: a real ``bentoml serve`` of a random-weight MLP,
the closed-loop capacity run, then both open-loop modes; checks the shape of what it reports (the figures
themselves need a quiet machine and full durations)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_goodput_command_reports_capacity_goodput_and_waste_per_mode(tmp_path):
    out = tmp_path / "goodput.json"
    cmd = [sys.executable, "-m", "benchmarks.goodput", "--random-weights", "--capacity-s", "1", "--duration", "1",
           "--warmup", "0.5", "--concurrency", "4", "--out", str(out), "--keep", str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["route"] == "/classify_digit" and result["model"] == "mnist-mlp"
    cap = result["capacity"]
    assert cap["rps"] > 0 and cap["statuses"].get("200", 0) > 0 and cap["server_cpu_pct"] > 0
    assert [r["mode"] for r in result["runs"]] == ["deadline", "none"]
    for r in result["runs"]:
        assert r["target_rps"] == pytest.approx(2 * cap["rps"]) and r["give_up_ms"] == 100
        assert sum(r["outcomes"].values()) == r["sent"] > 0  # every request sent has one outcome
        assert set(r["outcomes"]) <= {"in_time", "gave_up", "504", "429", "503"}, r["outcomes"]
        assert r["outcomes"].get("in_time", 0) <= r["computed"]  # an answer in time was computed
        for key in ("goodput_share", "wasted_share", "offered_rps", "client_cpu_pct", "server_cpu_pct"):
            assert math.isfinite(r[key]) and r[key] >= 0, (key, r)
        assert r["wasted_share"] <= 1
    table = proc.stdout
    assert table.startswith("capacity ") and "| mode | offered (target) req/s |" in table
    assert "| deadline |" in table and "| none |" in table
