"""The one-off studies (benchmarks/studies/), run as the commands the docs quote, with their results
checked: sine_bound's least-squares bound, sine_band's choice (the README's, from its committed
results), floor's report; plus the sine_band grid the study scores every run on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _study(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"benchmarks.studies.{name}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def _bound(*args: str) -> tuple[dict[float, float], float]:
    """``sine_bound``'s printed figures: {history noise: mean rollout MSE}, step-0 one-step MSE floor."""
    proc = _study("sine_bound", *args)
    assert proc.returncode == 0, proc.stderr
    means = {float(s): float(m) for s, m in re.findall(r"history noise (\S+): mean (\S+)", proc.stdout)}
    step0 = re.search(r"step-0 one-step MSE floor (\S+)", proc.stdout)
    assert means and step0, proc.stdout
    return means, float(step0.group(1))


def test_sine_bound_ideal_fit_is_exact_without_noise_and_degrades_with_it():
    # noiseless histories are extrapolated almost exactly (grid resolution only); history noise 0.01
    # costs orders of magnitude on the 40-step rollout
    means, slow = _bound("--freq-range", "0.5", "2.0", "--amp-range", "0.5", "1.5", "--dt", "0.1", "--sigma", "0", "0.01")
    assert set(means) == {0.0, 0.01}
    assert means[0.0] < 1e-4 and means[0.01] > 100 * means[0.0]
    # step 0 cannot see the slope: its floor is about E[a^2] (f dt)^2 / 2, far above 0, and grows with f * dt
    _, fast = _bound("--freq-range", "3.0", "6.0", "--amp-range", "0.5", "1.5", "--dt", "0.1", "--sigma", "0")
    assert 3e-3 < slow < 3e-2 and fast > 5 * slow


def test_sine_bound_refuses_an_empty_range():
    proc = _study("sine_bound", "--freq-range", "2.0", "0.5")
    assert proc.returncode == 2 and "need 0 < low <= high" in proc.stderr, proc.stderr


def test_sine_band_merge_reproduces_the_documented_choice(tmp_path):
    """``--merge`` of the committed results prints the choice the README quotes, and writes its files."""
    proc = _study("sine_band", "--merge", "docs/bench/sine_band/results.json", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    choice = proc.stdout.strip().splitlines()[-2]
    assert choice == ("choice: lstm hidden 16 on 2.035-2.045 rad per time unit (width 0.001 rad/step), "
                      "worst grid MSE 6.18e-04")
    assert choice in (ROOT / "README.md").read_text()
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["choice"]["cell"] == "lstm" and written["choice"]["width"] == 0.001
    assert choice in (tmp_path / "table.md").read_text()
    assert (tmp_path / "band_curve.png").read_bytes()[:4] == b"\x89PNG"


def _row(cell, hidden, params, width, worst, budget_s):
    lo, hi = round((0.204 - width / 2) * 10, 4), round((0.204 + width / 2) * 10, 4)  # rad per time unit at dt 0.1
    return {"cell": cell, "hidden": hidden, "params": params, "width": width, "band": [lo, hi], "worst": worst,
            "mean": worst / 4, "original_worst": worst / 8, "budget_s": budget_s, "epochs": 1, "steps": 512,
            "train_s": 1.0, "load_avg": 0.5}


def test_sine_band_choice_is_the_widest_passing_band_then_the_smallest_model(tmp_path):
    runs = [_row("lstm", 16, 1249, 0.004, 5e-4, 120), _row("gru", 32, 3297, 0.008, 9e-4, 120),
            _row("rnn", 16, 321, 0.008, 8e-4, 120),
            _row("rnn", 16, 321, 0.016, 5e-4, 15),  # a screen run: not at the full budget
            _row("lstm", 64, 17000, 0.016, 2e-3, 120)]
    (tmp_path / "runs.json").write_text(json.dumps({"rows": runs}))
    (tmp_path / "fail.json").write_text(json.dumps({"rows": runs[-1:]}))
    proc = _study("sine_band", "--merge", str(tmp_path / "runs.json"), "--out", str(tmp_path / "a"))
    assert proc.returncode == 0, proc.stderr
    assert "choice: rnn hidden 16 on 2-2.08 rad per time unit (width 0.008 rad/step), worst grid MSE 8.00e-04" in proc.stdout
    proc = _study("sine_band", "--merge", str(tmp_path / "fail.json"), "--out", str(tmp_path / "b"))
    assert proc.returncode == 0, proc.stderr
    assert "no run reached worst grid MSE <= 0.001; best worst-case 2.00e-03" in proc.stdout
    assert json.loads((tmp_path / "b" / "results.json").read_text())["choice"] is None


def test_sine_band_grid_and_original_example():
    # the evaluation data every run is scored on: no command shows it without training, so its functions
    # are checked directly: bands centred on 0.204 rad per step, the original example's samples, the grid
    from benchmarks.studies.sine_band import ORIGINAL, band, grid_windows, original_example

    assert band(0.004) == (2.02, 2.06) and ORIGINAL == pytest.approx(0.20408, abs=1e-5)
    x = original_example(4)[:, :, 0].numpy()  # (4, 50)
    np.testing.assert_allclose(x[0], np.sin(np.linspace(0, 10, 50)), atol=1e-6)
    np.testing.assert_allclose(x[2], np.sin(np.pi + np.linspace(0, 10, 50)), atol=1e-6)
    w, rows = grid_windows(0.2, 0.21, (0.5, 1.5), n_freq=3, n_phase=2)
    assert w.shape == (12, 50, 1) and sorted(set(rows[:, 0])) == pytest.approx([0.2, 0.205, 0.21])
    np.testing.assert_allclose(w[-1, :, 0].numpy(), 1.5 * np.sin(0.21 * np.arange(50) + np.pi), atol=1e-6)


@pytest.mark.slow
def test_floor_measures_both_frameworks_on_the_same_route(tmp_path):
    """``python -m benchmarks.studies.floor``: each server answers the echo route correctly (the command exits 1
    otherwise), and the report has a p50 per server and the difference."""
    out = tmp_path / "floor.md"
    cmd = [sys.executable, "-m", "benchmarks.studies.floor", "--servers", "fastapi,bentoml-lean", "--rounds", "1",
           "--duration", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in out.read_text().splitlines()
            if line.startswith("| fastapi") or line.startswith("| bentoml-lean")}
    assert set(rows) == {"fastapi", "bentoml-lean"}
    fastapi_p50 = float(rows["fastapi"].split("|")[3])
    lean_p50 = float(rows["bentoml-lean"].split("|")[3])
    assert fastapi_p50 > 0 and lean_p50 > 0
    assert rows["bentoml-lean"].split("|")[4].strip() == f"+{lean_p50 - fastapi_p50:.2f} ms"


@pytest.mark.parametrize("args, says", [
    (["--servers", "fastapi,tornado"], "unknown server(s) ['tornado']"),
    (["--rounds", "0"], "need servers, --rounds >= 1 and --duration > 0"),
])
def test_floor_refuses_bad_arguments_naming_them(args, says):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.studies.floor", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(says), proc.stderr


def test_floor_summary_is_the_median_per_server():
    from benchmarks.studies.floor import render, summary

    recs = [{"server": s, "round": r, "p50_ms": p, "p99_ms": 2 * p, "requests_per_s": 1000 / p, "client_cpu_pct": 3.0}
            for s, r, p in (("fastapi", 1, 0.5), ("fastapi", 2, 0.7), ("fastapi", 3, 0.6),
                            ("bentoml-lean", 1, 1.4), ("bentoml-lean", 2, 1.1), ("bentoml-lean", 3, 9.0))]
    assert summary(recs) == {"fastapi": 0.6, "bentoml-lean": 1.4}
    mach = {"date": "d", "cpu": "c", "usable_cpus": 2, "logical_cpus": 2, "load_avg": [0, 0, 0], "os": "o",
            "python": "3", "versions": {}}
    assert "| bentoml-lean | BentoML 1.4, the service's settings" in render(recs, "cmd", mach, [0, 0, 0])
    assert "| 1.400 | +0.80 ms |" in render(recs, "cmd", mach, [0, 0, 0])


def test_refusal_cost_refuses_every_request_in_both_variants():
    """``python -m benchmarks.studies.refusal_cost``: each variant answers nothing but 503s (the command exits
    non-zero otherwise) and prints its row; the figures themselves belong in docs/benchmarks.md."""
    proc = _study("refusal_cost", "--rounds", "1", "--duration", "1", "--concurrency", "4")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    for variant in ("protocol", "middleware"):
        cells = [c.strip() for c in rows[variant].split("|")[2:-1]]
        assert float(cells[0]) > 0 and float(cells[2]) > 0, rows[variant]


def test_middleware_cost_measures_every_middleware_of_the_service_stack():
    """``python -m benchmarks.studies.middleware_cost``: one row per middleware service/app.py installs, in its
    order, between the bare endpoint and the whole stack."""
    proc = _study("middleware_cost", "--requests", "200", "--repeats", "1")
    assert proc.returncode == 0, proc.stderr[-2000:]
    tables = [[line.split("|")[1:-1] for line in block.splitlines() if line.startswith("| ") and "---" not in line][1:]
              for block in proc.stdout.strip().split("\n\n")]
    names = [cells[0].strip() for cells in tables[0]]
    app_py = (ROOT / "service" / "app.py").read_text()
    installed = re.findall(r"add_asgi_middleware\((?:\w+\.)?(\w+)", app_py)
    assert names == ["(endpoint alone)", *installed, "all of them"], names
    assert [cells[0].strip() for cells in tables[1]] == ["multipart: read_uploads", "multipart: Starlette's request.form()"]
    assert all(float(cells[1]) > 0 for table in tables for cells in table)
