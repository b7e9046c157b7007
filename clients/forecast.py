"""``zoo forecast``: send a history, print the forecast, optionally plot both.

The history comes from ``--history 0.1,0.2,...`` or ``--csv FILE`` (one value per
row; the last numeric column is used, a header row is skipped). The forecast is
printed comma-separated on one line (``--json`` prints ``{"forecast": [...]}``). When the service
warns that the history lies outside the model's trained band, the warning goes to stderr as one
``warning: ...`` line (and into ``--json``'s object as ``"warning"``); the exit status stays 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import warnings

from clients.client import FORECAST_MODEL, ForecastWarning, ZooClient


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--history", help="comma-separated values, e.g. 0.0,0.1,0.2")
    src.add_argument("--csv", metavar="FILE", help="CSV with one value per row (last numeric column)")
    p.add_argument("--steps", type=int, default=50, help="values to forecast (default 50)")
    p.add_argument("--model", default=FORECAST_MODEL, help=f"the forecaster to ask (default {FORECAST_MODEL})")
    p.add_argument("--plot", metavar="PNG", help="save a plot of history and forecast")
    p.add_argument("--json", action="store_true", help='print {"forecast": [...]} instead of comma-separated values')


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {text.strip()!r} is not a finite number")
    return value


def parse_history(text: str) -> list[float]:
    parts = [t for t in text.replace(" ", "").split(",") if t != ""]
    if not parts:
        raise ValueError("--history is empty; give comma-separated numbers, e.g. 0.0,0.1,0.2")
    return [_number(t, f"--history value {i + 1}") for i, t in enumerate(parts)]


def read_history_csv(path: str) -> list[float]:
    """Values from a CSV: the last column of every row; a first row that is not numeric is a header."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text CSV file") from None
    if rows:
        try:
            float(rows[0][-1])
        except ValueError:
            rows = rows[1:]  # header
    if not rows:
        raise ValueError(f"{path} holds no numeric values (one number per row; a first row that is not a number is a header)")
    return [_number(row[-1], f"{path} row {n}") for n, row in enumerate(rows, 1)]


def plot(history: list[float], forecast: list[float], path: str) -> None:
    """History then forecast on one time axis (x in steps), saved as an image."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3))
    n = len(history)
    ax.plot(range(n), history, label="history")
    ax.plot(range(n - 1, n + len(forecast)), [history[-1], *forecast], label="forecast", linestyle="--")
    ax.set_xlabel("step")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    history = parse_history(args.history) if args.history is not None else read_history_csv(args.csv)
    if args.steps < 1:
        raise ValueError("--steps must be at least 1")
    with ZooClient(args.url, timeout=args.timeout, retries=args.retries, token=args.token) as zoo, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ForecastWarning)
        forecast = zoo.forecast(history, args.steps, model=args.model)
    said = [str(w.message) for w in caught if issubclass(w.category, ForecastWarning)]
    if args.json:
        print(json.dumps({"forecast": forecast, **({"warning": said[0]} if said else {})}))
    else:
        print(",".join(repr(v) for v in forecast))
    for text in said:
        print(f"warning: {text}", file=sys.stderr)
    if args.plot:
        plot(history, forecast, args.plot)
        print(f"plot saved to {args.plot}", file=sys.stderr)
    return 0
