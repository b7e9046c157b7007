"""``python -m benchmarks.goodput`` end to end, briefly: a real ``bentoml serve`` of a random-weight MLP,
the closed-loop capacity run, then both open-loop modes; checks the shape of what it reports (the figures
themselves need a quiet machine and full durations)."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from benchmarks.keepalive import closed_loop, open_loop

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
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
        assert r["pool"] > 0 and r["reconnects"] >= 0 and 0 <= r["late_share"] <= 1
    table = proc.stdout
    assert table.startswith("capacity ") and "| mode | offered (target) req/s |" in table
    assert "| deadline |" in table and "| none |" in table


async def _toy_server(accepted: list[int]) -> asyncio.AbstractServer:
    """Answers ``/fast`` at once with a 2-byte body and keeps the connection; never answers ``/slow``."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                if head.startswith(b"POST /fast "):
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):  # closed, or shut down
            writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", 0)


def test_keepalive_pool_reuses_connections_and_replaces_those_given_up():
    async def run() -> tuple[Counter, dict, dict, list[int], list[int]]:
        fast_acc: list[int] = []
        server = await _toy_server(fast_acc)
        url = "http://127.0.0.1:%d" % server.sockets[0].getsockname()[1]
        closed = await closed_loop(url + "/fast", b"x" * 100, {}, 3, 0.3)
        fast = await open_loop(url + "/fast", b"x", {}, 200, 0.5, 0.1)
        slow_acc: list[int] = []
        server.close()
        server = await _toy_server(slow_acc)
        url = "http://127.0.0.1:%d" % server.sockets[0].getsockname()[1]
        slow = await open_loop(url + "/slow", b"x", {}, 100, 0.5, 0.05)
        server.close()
        return closed, fast, slow, fast_acc, slow_acc

    closed, fast, slow, fast_acc, slow_acc = asyncio.run(run())
    assert set(closed) == {"200"} and closed["200"] > 3
    # keep-alive: the closed loop's 3 connections and the open loop's pool, nothing reopened
    assert len(fast_acc) == 3 + fast["pool"] and fast["reconnects"] == 0
    assert fast["outcomes"] == {"in_time": fast["sent"]} and fast["sent"] == pytest.approx(100, abs=2)
    # every slow request is given up and its connection replaced by a new one
    assert slow["outcomes"] == {"gave_up": slow["sent"]} and slow["sent"] == pytest.approx(50, abs=2)
    assert slow["reconnects"] >= slow["sent"] - 5 and len(slow_acc) == slow["pool"] + slow["reconnects"]
