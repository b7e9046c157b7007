"""Does a forecast history look like the sines a model was trained on? (the ``"warning"`` of a forecast)

A sine forecaster is trained on ``a * sin(w * t + phase)`` with w and a in the bands its spec records
(``SequenceSpec.freq_range`` in rad per time unit at ``dt``, ``amp_range``). Outside them its rollout
drifts, so the service estimates w and a from the history and says so next to the forecast.

Estimate: least-squares fit of ``a * sin(w k + phase)`` (k the step index) to the last ``MAX_FIT_POINTS``
points: for each candidate w the best (a, phase) is a linear solve, w is the candidate with the least
residual, found on a grid over (0, pi] rad per step and refined on finer grids around the best.
Noise-free sines are recovered to float precision; it needs ``MIN_FIT_POINTS`` points (three unknowns
plus redundancy) and answers nothing for fewer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zoo.spec import SequenceSpec

MIN_FIT_POINTS = 5  # fewer points cannot separate frequency from amplitude and phase robustly
MAX_FIT_POINTS = 64  # the recent past decides; bounds the cost per request
GRID = 128  # candidate frequencies per round (spacing pi/128, well under the fit's resolution 2 pi / 64)


@dataclass(frozen=True)
class SineFit:
    rad_per_step: float
    amplitude: float


def _residuals(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares residual (G,) and amplitude (G,) of the best ``a sin(w k + phase)`` per candidate w (G,)."""
    k = np.arange(len(x), dtype=np.float64)
    s, c = np.sin(w[:, None] * k), np.cos(w[:, None] * k)  # (G, T)
    ss, cc, sc = (s * s).sum(1), (c * c).sum(1), (s * c).sum(1)
    xs, xc = s @ x, c @ x
    det = ss * cc - sc * sc
    ok = det > 1e-12 * np.maximum(ss * cc, 1e-300)  # w near 0 or pi: sin and cos columns are (nearly) dependent
    det = np.where(ok, det, 1.0)
    p = np.where(ok, (cc * xs - sc * xc) / det, 0.0)  # coefficient of sin
    q = np.where(ok, (ss * xc - sc * xs) / det, 0.0)  # coefficient of cos
    resid = np.where(ok, (x @ x) - (p * xs + q * xc), np.inf)
    return resid, np.hypot(p, q)


def fit_sine(history: np.ndarray) -> SineFit | None:
    """The sine that best fits ``history`` (T,), or None when T < MIN_FIT_POINTS; all zeros fit amplitude 0."""
    x = np.asarray(history, dtype=np.float64)[-MAX_FIT_POINTS:]
    if len(x) < MIN_FIT_POINTS:
        return None
    if not np.any(x):
        return SineFit(float("nan"), 0.0)  # any frequency fits: only the amplitude is known
    lo, hi = 1e-3, np.pi
    for _ in range(4):  # coarse grid, then finer grids around the best candidate
        w = np.linspace(lo, hi, GRID)
        resid, amp = _residuals(x, w)
        i = int(np.argmin(resid))
        step = w[1] - w[0]
        lo, hi = max(1e-3, w[i] - 2 * step), min(np.pi, w[i] + 2 * step)
    return SineFit(float(w[i]), float(amp[i]))


def band_warning(history: np.ndarray, seq: SequenceSpec) -> str | None:
    """A sentence saying how the history lies outside the model's trained band, or None when inside."""
    fit = fit_sine(history)
    if fit is None:
        return (f"the history has {len(history)} points, too few to check it against the band this model was "
                f"trained on (needs {MIN_FIT_POINTS})")
    w = fit.rad_per_step / seq.dt  # rad per time unit, as the spec states the band
    (f_lo, f_hi), (a_lo, a_hi) = seq.freq_range, seq.amp_range
    problems = []
    if not math.isnan(w) and not f_lo <= w <= f_hi:
        problems.append(f"angular frequency {w:.4g} rad per time unit ({fit.rad_per_step:.4g} rad per step at dt "
                        f"{seq.dt:g}) is outside the trained {f_lo:g}-{f_hi:g}")
    if not a_lo <= fit.amplitude <= a_hi:
        problems.append(f"amplitude {fit.amplitude:.3g} is outside the trained {a_lo:g}-{a_hi:g}")
    if not problems:
        return None
    return "history fitted as a sine: " + "; ".join(problems) + ": the forecast may drift off the curve"
