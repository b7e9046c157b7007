"""Print example calls against a running service: ``python -m service.examples --port 3000``.

The digit is the first image of the real MNIST test split (label 7), committed as
``service/examples/digit7.png``; the forecast history is a sine sampled at the spec's default
step (dt = 0.1). The tests post the same inputs.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from pathlib import Path

DIGIT = Path(__file__).resolve().parent / "examples" / "digit7.png"


def sine_history(n: int = 30, dt: float = 0.1, freq: float = 2.04) -> list[float]:
    """n points of sin(freq * t), t = k * dt, rounded for a readable command line (freq: the middle of
    the sine forecaster's default band, 0.204 rad per step, so the answer carries no warning)."""
    return [round(math.sin(freq * k * dt), 4) for k in range(n)]


def example_commands(base_url: str) -> list[str]:
    body = json.dumps({"history": sine_history(), "steps": 10})
    return [
        f"curl -s -F images=@{shlex.quote(str(DIGIT))} {base_url}/classify_digit",
        f"curl -s -H 'content-type: application/json' -d {shlex.quote(body)} {base_url}/forecast_sine",
    ]


def ready_block(base_url: str) -> list[str]:
    """What `make serve` prints once the service answers /readyz: where it is, what to try, how to stop."""
    curls = example_commands(base_url)
    return [
        f"Model Zoo is ready at {base_url}",
        f"  browser demo    {base_url}/ui",
        f"  what it serves  {base_url}/",
        f"  try             {curls[0]}",
        f"                  {curls[1]}",
        f"  or the client   zoo classify --url {base_url} {shlex.quote(str(DIGIT))}",
        "  stop            Ctrl-C",
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--host", default="127.0.0.1")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is not a TCP port (1-65535)", file=sys.stderr)
        return 2
    base = f"http://{args.host}:{args.port}"
    print(f"Once {base}/readyz answers 200, try:")
    for cmd in example_commands(base):
        print("  " + cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
