"""sine-rnn: next-value regression on synthetic sine windows, evaluated by autoregressive rollout.

Data (training/specs.py SINE_DEFAULTS, stored in the spec): a * sin(w * t + phase) sampled every
dt = 0.1, amplitude a in [0.5, 1.5], random phase, angular frequency w in a band around 2.04 rad per
time unit (0.204 rad per step: the original example, sin(t) at 50 evenly spaced points over 10 time
units). Teacher-forced training with noisy inputs (targets clean), Adam + OneCycle, gradient clipping.

The band is narrow because a 40-step rollout after a 10-point history needs the frequency read to a
fraction of a percent (a frequency error grows into a phase error along the rollout); the band, cell
and size were chosen by ``python -m benchmarks.studies.sine_band`` and the figures are in the README
("Training"), next to that command. ``--freq-range`` trains a wider band at that cost;
``python -m benchmarks.studies.sine_bound`` gives the ideal least-squares bound for any band.
The forecast plot (``forecast.png``) shows a rollout after a 10-point history against the true curve.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training import engine
from training.data import load_sine, sine_windows
from training.models import RNNConfig, build_model, build_sine_rnn, model_config
from training.options import common_parser, parse, setup_run
from training.registry import TrainingFamily, register_training
from training.specs import SINE_DEFAULTS, sine_spec

FAMILY = "sine-rnn"
QUICK = {"epochs": 12, "train_windows": 16384}


def get_args_parser() -> argparse.ArgumentParser:
    p = common_parser(FAMILY, epochs=32, batch_size=64, optimizer="adam", lr=1e-2, scheduler="onecycle", clip_grad=1.0,
                      threads=1)  # a 16-unit LSTM gains nothing from more threads
    p.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="lstm")
    p.add_argument("--hidden-size", type=int, default=16)
    p.add_argument("--num-layers", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=50, help="points per training window")
    p.add_argument("--train-windows", type=int, default=32768)
    p.add_argument("--val-windows", type=int, default=1024, help="also the number of held-out test windows")
    p.add_argument("--freq-range", type=float, nargs=2, default=list(SINE_DEFAULTS["freq_range"]),
                   help="angular frequency range, rad per time unit")
    p.add_argument("--amp-range", type=float, nargs=2, default=list(SINE_DEFAULTS["amp_range"]))
    p.add_argument("--dt", type=float, default=SINE_DEFAULTS["dt"], help="time between points")
    p.add_argument("--history", type=int, default=10, help="points fed before the evaluated rollout")
    p.add_argument("--horizon", type=int, default=40, help="rollout steps evaluated after the history")
    p.add_argument("--input-noise", type=float, default=0.02,
                   help="std of Gaussian noise added to training inputs (targets clean): the model learns to "
                        "correct its own errors, which keeps rollouts on the curve")
    p.add_argument("--rollout-weight", type=float, default=0.0,
                   help="weight of the free-running rollout loss added in training (0: teacher forcing only)")
    return p


def task(args: argparse.Namespace | None = None) -> engine.Task:
    """Validation metric: one-step (teacher-forced) MSE over whole windows.

    Training feeds inputs with ``--input-noise`` (targets clean) and may add ``--rollout-weight`` x the MSE of a free-running rollout after a random
    history of ``history/2 .. 2*history`` points, so errors fed back are seen in training and
    the forecast stays on the curve.
    """
    extra, noisy = None, None
    if args is not None and args.input_noise > 0:
        def noisy(x: torch.Tensor) -> torch.Tensor:
            return x + args.input_noise * torch.randn_like(x)
    if args is not None and args.rollout_weight > 0:
        gen = torch.Generator().manual_seed(args.seed)
        lo, hi = max(1, args.history // 2), min(2 * args.history, args.seq_len - 1)

        def extra(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            h = int(torch.randint(lo, hi + 1, (1,), generator=gen))
            pred = rollout(model, x[:, :h], x.shape[1] - h, grad=True)  # predicts points h .. T-1
            return args.rollout_weight * nn.functional.mse_loss(pred, x[:, h:])

    return engine.Task(metric="mse", loss_fn=nn.MSELoss(), extra_loss=extra, train_input=noisy)


def train_one_epoch(model, loader, optimizer, device, epoch, args, scheduler=None) -> dict[str, float]:
    return engine.train_one_epoch(model, loader, task(args), optimizer, device, epoch, args, scheduler)


def evaluate(model, loader, device, args) -> dict[str, float]:
    return engine.evaluate(model, loader, task(), device, args)


def rollout(model: nn.Module, history: torch.Tensor, steps: int, grad: bool = False) -> torch.Tensor:
    """Feed history (N, H, 1) from zero state, then ``steps`` predictions fed back one at a time -> (N, steps, 1)."""
    if not grad:
        model.eval()
        with torch.no_grad():
            return rollout(model, history, steps, grad=True)
    y, state = model(history)
    nxt = y[:, -1:]  # (N, 1, 1): prediction of the point after the history
    out = [nxt]
    for _ in range(steps - 1):
        y, state = model(nxt, state)
        nxt = y[:, -1:]
        out.append(nxt)
    return torch.cat(out, dim=1)


def rollout_metrics(model: nn.Module, x: torch.Tensor, history: int, horizon: int) -> dict[str, float]:
    """MSE of a ``horizon``-step rollout after ``history`` points; x (N, T, 1) with T >= history + horizon."""
    if x.shape[1] < history + horizon:
        raise ValueError(f"windows of {x.shape[1]} points are shorter than --history + --horizon ({history + horizon})")
    pred = rollout(model, x[:, :history], horizon)
    return {"rollout_mse": (pred - x[:, history:history + horizon]).pow(2).mean().item(),
            "rollout_history": history, "rollout_steps": horizon}


def plot_forecast(model: nn.Module, x: torch.Tensor, history: int, horizon: int, dt: float, path: Path) -> Path:
    """forecast.png: three held-out windows, history + rollout against the true curve."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    x = x[:3, :history + horizon].cpu()
    pred = rollout(model, x[:, :history], horizon).cpu()
    t = torch.arange(history + horizon) * dt
    fig, axes = plt.subplots(len(x), 1, figsize=(8, 2.4 * len(x)), sharex=True)
    for ax, xs, ps in zip(axes, x, pred):
        ax.plot(t, xs[:, 0], color="0.6", label="true")
        ax.plot(t[:history], xs[:history, 0], "o", color="C0", ms=3, label=f"history ({history} points)")
        ax.plot(t[history:], ps[:, 0], "--", color="C3", label=f"forecast ({horizon} steps)")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("time")
    fig.suptitle(f"{FAMILY} autoregressive forecast (rollout MSE {(pred - x[:, history:]).pow(2).mean():.2e})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(args: Any = None) -> dict[str, Any]:
    args = parse(get_args_parser(), args, QUICK)
    device = setup_run(args)
    ranges = {"freq_range": tuple(args.freq_range), "amp_range": tuple(args.amp_range), "dt": args.dt}
    splits = load_sine(args.train_windows, args.val_windows, args.val_windows, args.seq_len, args.seed, **ranges)
    cfg = model_config(FAMILY, {"cell": args.cell, "hidden_size": args.hidden_size, "num_layers": args.num_layers})
    model = build_model(FAMILY, cfg)
    spec = sine_spec(args.cell, args.hidden_size, args.num_layers, **ranges)

    def final_eval(best: nn.Module) -> dict[str, Any]:
        x = splits.test.tensors[0].to(device)
        metrics = rollout_metrics(best, x, args.history, args.horizon)
        metrics["forecast_png"] = str(plot_forecast(best, x, args.history, args.horizon, args.dt,
                                                    Path(args.out_dir) / "forecast.png"))
        return metrics

    return engine.fit(engine.Job(FAMILY, model, cfg, spec, splits, task(args), final_eval=final_eval), args, device)


def eval_samples(ckpt: dict[str, Any], n: int, data_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows x (n, T, 1) and next values y (n, T, 1) in the spec's band, from a seed training never used."""
    train_cfg, seq = ckpt["config"].get("train", {}), ckpt["spec"]["sequence"]
    ds = sine_windows(n, train_cfg.get("seq_len", 50), tuple(seq["freq_range"]), tuple(seq["amp_range"]),
                      seq["dt"], seed=train_cfg.get("seed", 0) + 1000)
    return ds.tensors[0], ds.tensors[1]


register_training(TrainingFamily(FAMILY, RNNConfig, build_sine_rnn, sine_spec, main, eval_samples))  # synthetic: always available

if __name__ == "__main__":
    main()
