"""Which sine-rnn band, cell and size forecast the original example within MSE 1e-3?

    python -m benchmarks.studies.sine_band [--jobs 2] [--lock /work/bench.lock] [--out benchmarks/results/sine_band]
    python -m benchmarks.studies.sine_band --runs lstm-16:0.001 --calibration OUT/results.json --out OUT2   # more points
    python -m benchmarks.studies.sine_band --merge OUT/results.json OUT2/results.json --out OUT3              # one table

The original example samples ``sin(t)`` at 50 evenly spaced points over 10 time units: 10/49 =
0.204 rad per step. Every run trains the sine-rnn recipe (``python -m training sine-rnn``, fresh
process) on a band of angular frequencies centred on 0.204 rad per step (dt 0.1, so 2.04 rad per
time unit), amplitude 0.5-1.5, random phase, and scores it on a grid: frequencies across the band
(edges included) x phases x amplitudes {0.5, 1, 1.5}; each grid point is one 50-point window, MSE of
the 40-step rollout after a 10-point history. The table gives the worst and mean grid point and the
worst of the original example itself over several start points.

Budget: a fixed amount of work per run, not wall time. Calibration (under ``--lock``, the timed
part) measures each cell/size's training steps per second with the recipe's settings (batch 64,
50-point windows, 1 thread) and gives every run the steps that ``--budget-s`` (120 s) buys; the
epochs are those steps over the recipe's 32768 windows per epoch. The table reports the measured
training time (longer than the budget on a busy machine; the load average is printed).

Sweep, pruned to fit well under an hour on 2 shared cores: stage 1 screens all cells x sizes at
``--screen-width`` with an eighth of the budget (``--screen-budget-s``); stage 2 trains the ``--top``
configs with the smallest worst case at the full budget at the screen width, then ``--moves`` more
runs each, doubling the width while the worst grid point passes (halving while it fails).
The choice printed last: the widest band, then the smallest model, whose worst grid point is <= 1e-3
at the full budget. Writes ``table.md``, ``results.json`` and ``band_curve.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
ORIGINAL = 10 / 49  # rad per step: sin(t) at 50 evenly spaced points over 10 time units
CENTER = 0.204  # rad per step, the bands' centre (ORIGINAL rounded, so band edges are round numbers)
DT = 0.1  # the recipe's time step; the band is stated in rad per step and passed as rad per time unit
TARGET = 1e-3
BATCH, SEQ_LEN, WINDOWS = 64, 50, 32768  # the recipe's defaults, so a step here is a step there
HISTORY, HORIZON = 10, 40


@contextlib.contextmanager
def locked(path: str | None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (no lock when None): timed runs on a shared machine do not overlap."""
    if not path:
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def params(cell: str, hidden: int) -> int:
    from training.models import build_model

    return sum(p.numel() for p in build_model("sine-rnn", {"cell": cell, "hidden_size": hidden}).parameters())


def steps_per_second(cell: str, hidden: int, n: int = 60) -> float:
    """Training steps per second of the recipe's inner loop (batch 64 x 50 points, Adam, clipping, 1 thread)."""
    from training.data import sine_windows
    from training.models import build_model

    torch.set_num_threads(1)
    model = build_model("sine-rnn", {"cell": cell, "hidden_size": hidden})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = sine_windows(BATCH * 8, SEQ_LEN, seed=0).tensors

    def step(i: int) -> None:
        xb, yb = x[(i % 8) * BATCH:(i % 8 + 1) * BATCH], y[(i % 8) * BATCH:(i % 8 + 1) * BATCH]
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(xb + 0.02 * torch.randn_like(xb))[0], yb)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for i in range(5):  # warm-up: allocator, first-call dispatch
        step(i)
    # CPU time of this thread, not wall time: on a shared machine it is close to what a quiet core needs
    start = time.thread_time()
    for i in range(n):
        step(i)
    return n / (time.thread_time() - start)


def band(width: float) -> tuple[float, float]:
    """Band of ``width`` rad per step centred on 0.204, in rad per time unit (what --freq-range takes)."""
    return (round((CENTER - width / 2) / DT, 5), round((CENTER + width / 2) / DT, 5))


def train(cell: str, hidden: int, width: float, steps: int, out: Path, seed: int) -> dict[str, Any]:
    """One recipe run in a fresh process: ``steps`` optimizer steps on the band; returns its metrics."""
    epochs = max(1, round(steps * BATCH / WINDOWS))
    lo, hi = band(width)
    cmd = [sys.executable, "-m", "training", "sine-rnn", "--cell", cell, "--hidden-size", str(hidden),
           "--freq-range", str(lo), str(hi), "--epochs", str(epochs), "--train-windows", str(WINDOWS),
           "--seed", str(seed), "--out-dir", str(out), "--log-dir", str(out / "runs"), "--no-progress"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"sine_band: {cell}-{hidden} width {width}: training failed: "
                         f"{(proc.stderr.strip().splitlines() or ['(no output)'])[-1]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"epochs": epochs, "steps": epochs * WINDOWS // BATCH, "train_s": metrics["train_seconds"], "wall_s": wall,
            "command": "python " + " ".join(cmd[1:cmd.index("--out-dir")]), "checkpoint": str(out / "best.pt")}


def grid_windows(lo: float, hi: float, amps: tuple[float, ...], n_freq: int = 9,
                 n_phase: int = 16) -> tuple[torch.Tensor, np.ndarray]:
    """Windows (n_freq * n_phase * len(amps), 50, 1) across the band [lo, hi] rad per step,
    and their (rad/step, phase, amp) rows."""
    rows = np.array([(w, p, a) for w in np.linspace(lo, hi, n_freq)
                     for p in np.arange(n_phase) * 2 * np.pi / n_phase for a in amps])
    k = np.arange(HISTORY + HORIZON)
    x = rows[:, 2:3] * np.sin(rows[:, 0:1] * k + rows[:, 1:2])
    return torch.tensor(x, dtype=torch.float32)[..., None], rows


def original_example(starts: int = 8) -> torch.Tensor:
    """sin(t) at 50 evenly spaced points over 10 time units, from ``starts`` start points over a cycle: (S, 50, 1)."""
    t0 = np.arange(starts) * 2 * np.pi / starts
    x = np.sin(t0[:, None] + np.linspace(0, 10, HISTORY + HORIZON)[None])  # spacing ORIGINAL
    return torch.tensor(x, dtype=torch.float32)[..., None]


def window_mse(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Per-window MSE (N,) of the 40-step rollout after the first 10 points."""
    from training.recipes.sine_rnn import rollout

    pred = rollout(model, x[:, :HISTORY], HORIZON)
    return (pred - x[:, HISTORY:]).pow(2).mean(dim=(1, 2)).numpy()


def score(checkpoint: str | Path) -> dict[str, Any]:
    """Worst and mean grid point over the band the checkpoint's spec records, and the original example's worst start."""
    from training.checkpoint import load_checkpoint
    from training.models import build_model

    ckpt = load_checkpoint(Path(checkpoint))
    model = build_model("sine-rnn", ckpt["config"]["model"])
    model.load_state_dict(ckpt["model"])
    seq = ckpt["spec"]["sequence"]
    lo, hi = (f * seq["dt"] for f in seq["freq_range"])
    a_lo, a_hi = seq["amp_range"]
    x, rows = grid_windows(lo, hi, (a_lo, (a_lo + a_hi) / 2, a_hi))
    mse = window_mse(model, x)
    w, p, a = rows[int(mse.argmax())]
    return {"worst": float(mse.max()), "mean": float(mse.mean()), "worst_at": {"rad_per_step": w, "phase": p, "amp": a},
            "original_worst": float(window_mse(model, original_example()).max())}


def run_one(cell: str, hidden: int, width: float, steps: int, budget_s: float, root: Path, seed: int) -> dict[str, Any]:
    out = root / f"{cell}{hidden}_w{width:g}_b{budget_s:g}"
    res = train(cell, hidden, width, steps, out, seed)
    row = {"cell": cell, "hidden": hidden, "params": params(cell, hidden), "width": width, "band": band(width),
           "budget_s": budget_s, **res, **score(res["checkpoint"]), "load_avg": round(os.getloadavg()[0], 2)}
    print(f"  {cell:<4} {hidden:>3}  width {width:.4f} rad/step  budget {budget_s:g} s  worst {row['worst']:.2e}  "
          f"mean {row['mean']:.2e}  original {row['original_worst']:.2e}  {row['epochs']} epochs {row['train_s']:.0f} s  "
          f"load {row['load_avg']}", flush=True)
    return row


def walk(first: dict, steps: int, root: Path, seed: int, min_width: float, max_width: float, moves: int) -> list[dict]:
    """From a full-budget run: double the width while the worst grid point passes, halve while it fails, until
    the pass/fail edge lies between the last two widths, the width leaves [min_width, max_width] or after ``moves`` runs."""
    rows, width = [first], first["width"]
    for _ in range(moves):
        passed = rows[-1]["worst"] <= TARGET
        width = width * 2 if passed else width / 2
        if not min_width <= width <= max_width:
            return rows
        rows.append(run_one(first["cell"], first["hidden"], width, steps, first["budget_s"], root, seed))
        if (rows[-1]["worst"] <= TARGET) != passed:
            return rows
    return rows


def choose(rows: list[dict], budget_s: float) -> dict | None:
    """The widest band, then the fewest parameters, whose worst grid point is <= 1e-3 at the full budget."""
    ok = [r for r in rows if r["worst"] <= TARGET and r["budget_s"] == budget_s]
    return min(ok, key=lambda r: (-r["width"], r["params"], r["cell"])) if ok else None


def table(rows: list[dict]) -> str:
    head = ("| cell | hidden | params | band, rad/step | band, rad/unit at dt 0.1 | worst grid MSE | mean grid MSE | "
            "original example, worst start | budget, s | epochs (steps) | train time, s | load avg |\n"
            "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    lines = []
    for r in sorted(rows, key=lambda r: (r["budget_s"], r["width"], r["cell"], r["hidden"])):
        lo, hi = r["band"]
        lines.append(f"| {r['cell']} | {r['hidden']} | {r['params']} | {lo * DT:.4f}-{hi * DT:.4f} | {lo:g}-{hi:g} | "
                     f"{r['worst']:.2e}{' ✓' if r['worst'] <= TARGET else ''} | {r['mean']:.2e} | "
                     f"{r['original_worst']:.2e} | {r['budget_s']:g} | {r['epochs']} ({r['steps']}) | "
                     f"{r['train_s']:.0f} | {r['load_avg']} |")
    return (head + "\n".join(lines) + "\n\nBudget: the training steps that many seconds buy on a quiet core (calibrated "
            "by CPU time); train time is the measured wall time of the recipe's training loop.\n")


def plot(rows: list[dict], budget_s: float, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = [r for r in rows if r["budget_s"] == budget_s]  # the screen runs had less work
    configs = sorted({(r["cell"], r["hidden"]) for r in rows})
    for i, (cell, hidden) in enumerate(configs):
        pts = sorted((r["width"], r["worst"]) for r in rows if (r["cell"], r["hidden"]) == (cell, hidden))
        ax.plot(*zip(*pts), "-o" if len(pts) > 1 else "o", color=f"C{i % 10}", label=f"{cell} {hidden}", ms=4)
    ax.axhline(TARGET, color="k", ls="--", lw=1, label="target 1e-3")
    ax.set(xlabel="band width, rad per step (centred on 0.204)", ylabel="worst grid point: 40-step rollout MSE",
           yscale="log", title=f"sine-rnn: band width vs worst-case rollout, {budget_s:g} s of training")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def sweep(args: argparse.Namespace, configs: list, screen: dict, full: dict, root: Path, pool: ThreadPoolExecutor) -> list[dict]:
    """Stage 1 (every config at the screen width and budget), then stage 2 (the best at the full budget, walking the width)."""
    print(f"stage 1: {len(configs)} configs at width {args.screen_width} rad/step, budget {args.screen_budget_s:g} s",
          flush=True)
    rows = list(pool.map(lambda cfg: run_one(*cfg, args.screen_width, screen[cfg], args.screen_budget_s, root,
                                             args.seed), configs))
    best = [(r["cell"], r["hidden"]) for r in sorted(rows, key=lambda r: r["worst"])[:args.top]]
    print(f"stage 2: {', '.join(f'{c}-{h}' for c, h in best)} at budget {args.budget_s:g} s, "
          f"widths from {args.screen_width} doubling/halving to the pass/fail edge", flush=True)

    def stage2(cfg: tuple[str, int]) -> list[dict]:
        first = run_one(*cfg, args.screen_width, full[cfg], args.budget_s, root, args.seed)
        return walk(first, full[cfg], root, args.seed, args.min_width, args.max_width, args.moves)

    for more in pool.map(stage2, best):
        rows += more
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cells", nargs="+", choices=["rnn", "gru", "lstm"], default=["rnn", "gru", "lstm"])
    p.add_argument("--hidden", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--screen-width", type=float, default=0.004, help="stage 1 band width, rad per step")
    p.add_argument("--min-width", type=float, default=0.001, help="stage 2 narrowest band, rad per step")
    p.add_argument("--max-width", type=float, default=0.032, help="stage 2 widest band, rad per step")
    p.add_argument("--top", type=int, default=2, help="configs carried to stage 2")
    p.add_argument("--moves", type=int, default=1, help="stage 2 runs per config after its first (width doubled or halved)")
    p.add_argument("--budget-s", type=float, default=120.0, help="training work per run: what this buys on a quiet core")
    p.add_argument("--screen-budget-s", type=float, default=15.0, help="stage 1 training work per run")
    p.add_argument("--jobs", type=int, default=2, help="runs in parallel (each one process, 1 thread)")
    p.add_argument("--lock", default=None, help="hold this lock file while calibrating (the timed part)")
    p.add_argument("--runs", nargs="+", default=None, metavar="CELL-HIDDEN:WIDTH",
                   help="train only these at the full budget (e.g. lstm-16:0.001), no screen or walk")
    p.add_argument("--calibration", default=None, help="reuse the steps per second of an earlier results.json")
    p.add_argument("--merge", nargs="+", default=None, metavar="RESULTS_JSON",
                   help="train nothing: one table and curve from earlier results.json files (a sweep and its --runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "sine_band"))
    args = p.parse_args(argv)
    widths_ok = 0 < args.min_width <= args.screen_width <= args.max_width < CENTER
    if not (args.budget_s > 0 and args.jobs >= 1 and args.top >= 0 and widths_ok):
        print("sine_band: need --budget-s > 0, --jobs >= 1, --top >= 0 and "
              "0 < --min-width <= --screen-width <= --max-width < 0.204", file=sys.stderr)
        return 2
    out = Path(args.out)
    if args.merge:
        try:
            rows = [row for f in args.merge for row in json.loads(Path(f).read_text())["rows"]]
        except (OSError, ValueError, KeyError) as exc:
            print(f"sine_band: --merge needs results.json files written by this command ({exc})", file=sys.stderr)
            return 2
        out.mkdir(parents=True, exist_ok=True)
        return report(rows, args.budget_s, out, {"merged_from": args.merge, "rows": rows})
    try:
        runs = [(r.split(":")[0].split("-")[0], int(r.split(":")[0].split("-")[1]), float(r.split(":")[1]))
                for r in args.runs or []]
    except (IndexError, ValueError):
        print(f"sine_band: --runs takes CELL-HIDDEN:WIDTH, e.g. lstm-16:0.001 (got {' '.join(args.runs)})", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    configs = sorted({(c, h) for c, h, _ in runs}) if runs else [(c, h) for c in args.cells for h in args.hidden]
    if args.calibration:
        try:
            earlier = json.loads(Path(args.calibration).read_text())
            load = (earlier["calibration_load_avg"],)
            rates = {(c, h): earlier["calibration_steps_per_s"][f"{c}-{h}"] for c, h in configs}
        except (OSError, ValueError, KeyError) as exc:
            print(f"sine_band: --calibration needs a sweep's results.json covering {configs} ({exc})", file=sys.stderr)
            return 2
    else:
        with locked(args.lock):
            load = os.getloadavg()
            rates = {cfg: steps_per_second(*cfg) for cfg in configs}
    print(f"calibration (load average {load[0]:.2f}): " + ", ".join(
        f"{c}-{h} {rates[(c, h)]:.1f} steps/s" for c, h in configs), flush=True)
    started = time.perf_counter()
    screen = {cfg: int(rates[cfg] * args.screen_budget_s) for cfg in configs}
    full = {cfg: int(rates[cfg] * args.budget_s) for cfg in configs}
    with tempfile.TemporaryDirectory(prefix="sine_band_") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        root = Path(tmp)  # each run is its own process with 1 thread; the pool runs --jobs of them at once
        if runs:
            rows = list(pool.map(lambda r: run_one(*r, full[r[:2]], args.budget_s, root, args.seed), runs))
        else:
            rows = sweep(args, configs, screen, full, root, pool)
    return report(rows, args.budget_s, out, {
        "calibration_steps_per_s": {f"{c}-{h}": r for (c, h), r in rates.items()}, "calibration_load_avg": load[0],
        "rows": rows, "sweep_wall_s": time.perf_counter() - started})


def report(rows: list[dict], budget_s: float, out: Path, results: dict) -> int:
    """Print and write the table, the choice, results.json and the curve."""
    pick = choose(rows, budget_s)
    summary = (f"choice: {pick['cell']} hidden {pick['hidden']} on {pick['band'][0]:g}-{pick['band'][1]:g} rad per time unit "
               f"(width {pick['width']:g} rad/step), worst grid MSE {pick['worst']:.2e}" if pick else
               f"no run reached worst grid MSE <= {TARGET:g}; best worst-case "
               f"{min(r['worst'] for r in rows):.2e}")
    (out / "table.md").write_text(table(rows) + "\n" + summary + "\n")
    (out / "results.json").write_text(json.dumps({**results, "choice": pick}, indent=2, default=float))
    plot(rows, budget_s, out / "band_curve.png")
    print(table(rows))
    print(summary)
    print(f"wrote {out}/table.md, results.json, band_curve.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
