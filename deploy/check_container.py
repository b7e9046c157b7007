"""Check that the containerised service answers exactly like the service run outside the container.

Both servers get the same requests: real MNIST test digits (written as PNG files, uploaded as
multipart ``images`` to ``/classify_digit``) and one sine history (JSON to ``/forecast_sine``).
Labels and class indices must be equal; scores and forecast values equal within a float32
tolerance (the container runs the CPU ``onnxruntime`` wheel, the reference may run another build
of the same kernels).

With ``--token`` (the pod played from the Kubernetes manifest, whose token comes from a Secret) the
requests carry it as a bearer token and one upload without it must be refused with 401; each
``--metric NAME`` must appear in the container's ``/metrics`` (what an autoscaler would read).

Usage: python -m deploy.check_container ready URL [--timeout S]
       python -m deploy.check_container compare --container URL --reference URL --data-dir DIR [--count N]
                                                [--token TOKEN] [--metric NAME ...]
Exit status 0 when ready / when they agree; 1 with one line naming the step and the problem otherwise.
"""

from __future__ import annotations

import argparse
import io
import math
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

RTOL, ATOL = 1e-4, 1e-5  # float32 softmax scores / forecasts: same graph, possibly other ORT build


class CheckError(RuntimeError):
    """A failed check; the message names the step and what differed."""


def wait_ready(url: str, timeout_s: float) -> float:
    """Poll ``GET url/readyz`` until 200; return the seconds waited or raise CheckError."""
    start = time.monotonic()
    last = "no answer"
    while time.monotonic() - start < timeout_s:
        try:
            resp = httpx.get(f"{url}/readyz", timeout=5)
            if resp.status_code == 200:
                return time.monotonic() - start
            last = f"HTTP {resp.status_code} {resp.text[:200]!r}"
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise CheckError(f"readyz: {url} not ready after {timeout_s:.0f} s (last: {last})")


def mnist_pngs(data_dir: Path, count: int) -> list[tuple[str, bytes, int]]:
    """First ``count`` MNIST test digits as ``(file name, PNG bytes, true label)``."""
    from torchvision.datasets import MNIST

    try:
        test_set = MNIST(root=str(data_dir), train=False, download=False)
    except RuntimeError as exc:
        raise CheckError(f"data: MNIST not found under {data_dir} ({exc})") from None
    out = []
    for i in range(count):
        image, label = test_set[i]  # PIL "L" 28x28, int
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out.append((f"mnist-test-{i:05d}.png", buf.getvalue(), int(label)))
    return out


def post(url: str, route: str, token: str | None = None, **kwargs: Any) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    resp = httpx.post(f"{url}{route}", timeout=60, headers=headers, **kwargs)
    if resp.status_code != 200:
        raise CheckError(f"{route}: {url} answered HTTP {resp.status_code}: {resp.text[:300]}")
    return resp.json()


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)


def compare_classifications(got: list[dict], ref: list[dict], names: list[str]) -> list[str]:
    """Differences between two ``/classify_digit`` answers (empty list when they agree)."""
    if len(got) != len(ref) or len(got) != len(names):
        return [f"{len(got)} results from the container, {len(ref)} from the reference, {len(names)} images sent"]
    problems = []
    for name, g, r in zip(names, got, ref):
        if (g.get("label"), g.get("index")) != (r.get("label"), r.get("index")):
            problems.append(f"{name}: label {g.get('label')!r}/{g.get('index')} != {r.get('label')!r}/{r.get('index')}")
        elif not close(float(g["score"]), float(r["score"])):
            problems.append(f"{name}: score {g['score']} != {r['score']}")
        elif [(k["label"], k["index"]) for k in g.get("top_k", [])] != [(k["label"], k["index"]) for k in r.get("top_k", [])]:
            problems.append(f"{name}: top_k order differs")
        elif not all(close(float(a["score"]), float(b["score"])) for a, b in zip(g["top_k"], r["top_k"])):
            problems.append(f"{name}: top_k scores differ")
    return problems


def compare_forecasts(got: list[float], ref: list[float]) -> list[str]:
    if len(got) != len(ref):
        return [f"forecast length {len(got)} != {len(ref)}"]
    return [f"step {i}: {a} != {b}" for i, (a, b) in enumerate(zip(got, ref)) if not close(a, b)]


def check_token_required(url: str, digits: list[tuple[str, bytes, int]]) -> str:
    """An upload without the bearer token must be refused with 401."""
    name, data, _ = digits[0]
    resp = httpx.post(f"{url}/classify_digit", files=[("images", (name, data, "image/png"))], timeout=60)
    if resp.status_code != 401:
        raise CheckError(f"auth: {url}/classify_digit without a token answered HTTP {resp.status_code}, expected 401 "
                         f"(is MODEL_ZOO_API_TOKEN reaching the container?)")
    return "auth: an upload without the bearer token is refused with 401"


def check_metrics(url: str, names: list[str], token: str | None = None) -> str:
    """Every metric name in ``names`` is exported at ``url/metrics`` (behind the token when one is set)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    resp = httpx.get(f"{url}/metrics", timeout=30, headers=headers)
    if resp.status_code != 200:
        raise CheckError(f"metrics: {url}/metrics answered HTTP {resp.status_code}")
    text = resp.text
    missing = [n for n in names if not re.search(rf"^{re.escape(n)}[{{ ]", text, re.MULTILINE)]
    if missing:
        raise CheckError(f"metrics: {url}/metrics has no {missing}")
    return f"metrics: /metrics exports {', '.join(names)}"


def run_checks(container: str, reference: str, data_dir: Path, count: int, ready_timeout: float,
               token: str | None = None, metrics: list[str] | None = None) -> list[str]:
    """All checks; returns the summary lines, raises CheckError on the first failure."""
    wait_ready(container, ready_timeout)
    wait_ready(reference, ready_timeout)
    lines = []

    digits = mnist_pngs(data_dir, count)
    names = [name for name, _, _ in digits]
    if token:
        lines.append(check_token_required(container, digits))

    def upload(url: str) -> list[dict]:
        files = [("images", (name, data, "image/png")) for name, data, _ in digits]
        return post(url, "/classify_digit", token=token, files=files)

    got, ref = upload(container), upload(reference)
    problems = compare_classifications(got, ref, names)
    if problems:
        raise CheckError(f"classify_digit: container differs from reference: {'; '.join(problems[:3])}")
    correct = sum(int(g["index"]) == label for g, (_, _, label) in zip(got, digits))
    lines.append(
        f"classify_digit: {count} MNIST test images, container == reference; "
        f"accuracy {correct}/{count} against the true labels"
    )

    # 40 samples of sin(2 t) at dt 0.1: the sine-rnn default recipe's nominal frequency.
    payload = {"history": [math.sin(0.2 * t) for t in range(40)], "steps": 10}
    got_f = post(container, "/forecast_sine", token=token, json=payload)["forecast"]
    ref_f = post(reference, "/forecast_sine", token=token, json=payload)["forecast"]
    problems = compare_forecasts(got_f, ref_f)
    if problems:
        raise CheckError(f"forecast_sine: container differs from reference: {'; '.join(problems[:3])}")
    truth = [math.sin(0.2 * t) for t in range(40, 50)]
    err = max(abs(a - b) for a, b in zip(got_f, truth))
    lines.append(f"forecast_sine: 10 steps, container == reference; max |forecast - sin| = {err:.3f}")
    if metrics:
        lines.append(check_metrics(container, metrics, token))
    return lines


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ready = sub.add_parser("ready", help="wait until URL/readyz answers 200")
    ready.add_argument("url")
    ready.add_argument("--timeout", type=float, default=180.0, help="seconds to wait")
    compare = sub.add_parser("compare", help="send the same requests to both services and compare")
    compare.add_argument("--container", required=True, help="base URL of the containerised service")
    compare.add_argument("--reference", required=True, help="base URL of the service run outside the container")
    compare.add_argument("--data-dir", type=Path, required=True, help="folder holding MNIST/raw")
    compare.add_argument("--count", type=int, default=32, help="MNIST test images to classify")
    compare.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for /readyz")
    compare.add_argument("--token", default=None, help="bearer token the container requires (sent to both)")
    compare.add_argument("--metric", action="append", default=[], help="metric the container must export")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        if args.command == "ready":
            print(f"container-test: {args.url} ready after {wait_ready(args.url, args.timeout):.1f} s")
        else:
            for line in run_checks(args.container, args.reference, args.data_dir, args.count, args.timeout,
                                   args.token, args.metric):
                print(f"container-test: {line}")
    except CheckError as exc:
        print(f"container-test: {exc}", file=sys.stderr)
        return 1
    except httpx.HTTPError as exc:
        print(f"container-test: HTTP error talking to the services: {exc!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
