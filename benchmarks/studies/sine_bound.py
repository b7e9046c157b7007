"""How well can *any* forecaster do on sine-rnn's rollout task? A least-squares lower bound.

    python -m benchmarks.studies.sine_bound [--freq-range 0.5 2.0] [--amp-range 0.5 1.5] [--dt 0.1] [--sigma 0.003 0.01]

The issue's target is MSE <= 1e-3 for a 40-step rollout after a 10-point history. A forecaster sees
10 points of ``a * sin(f * t + phase)``; here an ideal one fits (f, a, phase) to them by least squares
(dense grid over the stated frequency range, exact linear solve for a and phase) and extrapolates.
``sigma`` is Gaussian noise on the 10 history points: it stands for how precisely a network's state
holds what it read (a 16-unit LSTM's one-step error is ~0.01 RMS, see the report). Errors in f grow
linearly along the rollout, so when the history covers a small part of a cycle (small f * dt), the
rollout is ill-conditioned even for this ideal fitter; a network cannot beat it at the same sigma.

Second constraint, printed too: the one-step MSE is averaged over *whole* windows, including step 0
where one point cannot tell the slope; its error is about a^2 (f dt)^2 / 2, so large f * dt fails
the one-step target (<= 1e-3 over 50 steps) by itself.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def ideal_rollout_mse(freq_range: tuple[float, float], amp_range: tuple[float, float], dt: float, sigma: float,
                      n: int = 2000, history: int = 10, horizon: int = 40, seed: int = 0) -> np.ndarray:
    """Per-window rollout MSE (n,) of the least-squares sine fit to ``history`` noisy points."""
    rng = np.random.default_rng(seed)
    t = np.arange(history + horizon) * dt  # (H + S,) time units
    grid = np.linspace(*freq_range, 600)  # candidate frequencies, rad per time unit
    # (G, H, 2) bases sin/cos per candidate; pseudo-inverses solve every candidate's (a cos, a sin) at once
    basis_h = np.stack([np.sin(grid[:, None] * t[:history]), np.cos(grid[:, None] * t[:history])], -1)
    basis_f = np.stack([np.sin(grid[:, None] * t[history:]), np.cos(grid[:, None] * t[history:])], -1)
    pinv = np.linalg.pinv(basis_h)  # (G, 2, H)
    f = rng.uniform(*freq_range, n)
    a = rng.uniform(*amp_range, n)
    ph = rng.uniform(0, 2 * np.pi, n)
    x = a[:, None] * np.sin(f[:, None] * t + ph[:, None])  # (n, H + S)
    hist = x[:, :history] + sigma * rng.standard_normal((n, history))
    coef = np.einsum("gkh,nh->ngk", pinv, hist)  # (n, G, 2)
    resid = ((np.einsum("ghk,ngk->ngh", basis_h, coef) - hist[:, None]) ** 2).sum(-1)  # (n, G)
    best = resid.argmin(1)
    pred = np.einsum("nsk,nk->ns", basis_f[best], coef[np.arange(n), best])  # (n, S)
    return ((pred - x[:, history:]) ** 2).mean(1)


def first_step_mse(freq_range: tuple[float, float], amp_range: tuple[float, float], dt: float, n: int = 20000,
                   seed: int = 0) -> float:
    """MSE of the best guess of x[1] from x[0] alone (conditional mean, estimated by binning), the floor of step 0."""
    rng = np.random.default_rng(seed)
    f, a, ph = rng.uniform(*freq_range, n), rng.uniform(*amp_range, n), rng.uniform(0, 2 * np.pi, n)
    x0, x1 = a * np.sin(ph), a * np.sin(f * dt + ph)
    bins = np.digitize(x0, np.linspace(x0.min(), x0.max(), 200))
    means = np.bincount(bins, x1) / np.maximum(np.bincount(bins), 1)
    return float(((x1 - means[bins]) ** 2).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--freq-range", type=float, nargs=2, default=[0.5, 2.0], help="rad per time unit")
    p.add_argument("--amp-range", type=float, nargs=2, default=[0.5, 1.5])
    p.add_argument("--dt", type=float, default=0.1)
    p.add_argument("--sigma", type=float, nargs="+", default=[0.003, 0.01], help="noise std on the history points")
    args = p.parse_args(argv)
    if not (0 < args.freq_range[0] <= args.freq_range[1] and 0 < args.amp_range[0] <= args.amp_range[1] and args.dt > 0):
        print("sine_bound: need 0 < low <= high for --freq-range and --amp-range, and --dt > 0", file=sys.stderr)
        return 2
    fr, ar = tuple(args.freq_range), tuple(args.amp_range)
    print(f"freq {list(fr)} rad/unit, amp {list(ar)}, dt {args.dt}: history covers "
          f"{9 * fr[0] * args.dt:.2f}-{9 * fr[1] * args.dt:.2f} rad of a 6.28 rad cycle")
    for s in args.sigma:
        e = ideal_rollout_mse(fr, ar, args.dt, s)
        print(f"  ideal least-squares 40-step rollout MSE, history noise {s:g}: mean {e.mean():.2e}  "
              f"median {np.median(e):.2e}  p90 {np.quantile(e, 0.9):.2e}")
    step0 = first_step_mse(fr, ar, args.dt)
    print(f"  step-0 one-step MSE floor {step0:.2e} -> adds {step0 / 50:.2e} to the 50-step whole-window mean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
