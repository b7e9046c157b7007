"""Issue 18's hostile requests against a real server with a bearer token: what each costs the worker.

    python -m benchmarks.reliability.hostile --home H [--json out.json]

One ``bentoml serve`` on the store in ``--home`` (mnist-mlp and sine-rnn needed), ``MODEL_ZOO_API_TOKEN``
set, then one probe per item of issue 18, each printing its answer and what it cost: statuses, seconds,
response bytes, worker RSS (before -> peak) and, where it matters, how long ``/livez`` took meanwhile.
Sizes are scaled down from the issue's (a 2-core shared machine): the point is before/after on the
same command. Run from a checkout of the version to measure (the server imports ``service`` from it).
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
from PIL import Image

from devtools.launch import ONE_WORKER, Server, home_over, start_service

TOKEN = "hostile-probe-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MiB = 2**20


class Peak:
    """Samples the worker's RSS every 50 ms while a probe runs."""

    def __init__(self, served: Server) -> None:
        self.served, self.peak, self.start, self._stop = served, 0, 0, threading.Event()

    def __enter__(self) -> "Peak":
        self.start = sum(self.served.worker_rss().values())
        self.peak = self.start
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, sum(self.served.worker_rss().values()))

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def text(self) -> str:
        return f"worker RSS {self.start / MiB:.0f} -> peak {self.peak / MiB:.0f} MiB"


def livez_during(url: str, work: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``work`` while polling /livez; returns its result and the slowest /livez answer (s)."""
    worst, done = [0.0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            try:
                httpx.get(url + "/livez", timeout=60)
            except httpx.HTTPError:
                pass
            worst[0] = max(worst[0], time.monotonic() - t0)
            time.sleep(0.1)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    try:
        return work(), worst[0]
    finally:
        done.set()
        thread.join()


def oip_binary(name: str, shape: list[int]) -> tuple[bytes, dict[str, str]]:
    raw = np.zeros(int(np.prod(shape)), "<f4").tobytes()
    header = json.dumps({"inputs": [{"name": name, "datatype": "FP32", "shape": shape,
                                     "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header + raw, {**AUTH, "inference-header-content-length": str(len(header))}


def raw_request(port: int, head: bytes, body_chunks: int, chunk: int = MiB) -> bytes:
    """Send ``head`` then ``body_chunks`` chunked-encoded chunks; returns the status line (or the error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        s.sendall(head)
        try:
            piece = f"{chunk:x}\r\n".encode() + b"\0" * chunk + b"\r\n"
            for _ in range(body_chunks):
                s.sendall(piece)
            s.sendall(b"0\r\n\r\n")
        except OSError as exc:
            return f"(send stopped: {type(exc).__name__})".encode() + _status(s)
        return _status(s)


def _status(s: socket.socket) -> bytes:
    try:
        return s.recv(4096).split(b"\r\n", 1)[0]
    except OSError as exc:
        return f"(no answer: {type(exc).__name__})".encode()


def probes(served: Server, args: argparse.Namespace) -> dict[str, Any]:
    url, port, out = served.url, served.port, {}

    def report(key: str, **figures: Any) -> None:
        out[key] = figures
        print(f"{key}: " + "; ".join(f"{k} {v}" for k, v in figures.items()), flush=True)

    # 1. sine-rnn x (N, 1, 1), a 4-byte-per-row binary request
    body, headers = oip_binary("x", [args.sine_rows, 1, 1])
    with Peak(served) as peak:
        t0 = time.monotonic()
        r, live = livez_during(url, lambda: httpx.post(url + "/v2/models/sine-rnn/infer", content=body,
                                                       headers=headers, timeout=300))
        report("1 sine-rnn batch", request_bytes=len(body), status=r.status_code, response_bytes=len(r.content),
               seconds=round(time.monotonic() - t0, 2), slowest_livez_s=round(live, 2), rss=peak.text())
    # 2. Content-Length: 10 with a chunked body of args.smuggle_mb MiB
    head = (b"POST /v2/models/mnist-mlp/infer HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer " + TOKEN.encode()
            + b"\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n")
    with Peak(served) as peak:
        t0 = time.monotonic()
        status = raw_request(port, head, args.smuggle_mb)
        report("2 CL+TE body", body_mib=args.smuggle_mb, answer=status.decode(errors="replace"),
               seconds=round(time.monotonic() - t0, 2), rss=peak.text())
    # 3. lossless WebPs of 4096x4096 (702 bytes each), 20 per request, 3 clients; one ordinary digit meanwhile
    buf = io.BytesIO()
    Image.new("L", (4096, 4096)).save(buf, "WEBP", lossless=True)
    bomb = [("images", (f"w{i}.webp", buf.getvalue(), "image/webp")) for i in range(20)]
    digit = (Path(__file__).resolve().parents[2] / "service" / "examples" / "digit7.png").read_bytes()
    statuses: list[int] = []

    def attack() -> None:
        r = httpx.post(url + "/classify_digit", files=bomb, headers=AUTH, timeout=300)
        statuses.append(r.status_code)

    with Peak(served) as peak:
        threads = [threading.Thread(target=attack) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        r = httpx.post(url + "/classify_digit", files=[("images", ("7.png", digit, "image/png"))], headers=AUTH,
                       timeout=300)
        ordinary = time.monotonic() - t0
        for t in threads:
            t.join()
        report("3 webp bombs", request_bytes=20 * len(buf.getvalue()), attack_statuses=statuses,
               ordinary_digit=f"{r.status_code} in {ordinary:.2f} s", rss=peak.text())
    # 4. unauthenticated GETs of unique long paths, then one authenticated scrape
    prom = served.home / "prometheus_multiproc_dir"
    before = sum(f.stat().st_size for f in prom.glob("*.db"))
    with Peak(served) as peak, httpx.Client(timeout=60) as client:
        t0 = time.monotonic()
        for i in range(args.unique_paths):
            client.get(f"{url}/{i:06d}" + "a" * 16000)
        sent = time.monotonic() - t0
        after = sum(f.stat().st_size for f in prom.glob("*.db"))
        t0 = time.monotonic()
        page = client.get(url + "/metrics", headers=AUTH)
        report("4 unique paths", requests=args.unique_paths, sending_s=round(sent, 1),
               metric_files=f"{before / MiB:.1f} -> {after / MiB:.1f} MiB", metrics_page_bytes=len(page.content),
               scrape_s=round(time.monotonic() - t0, 2), unauthenticated_metrics=httpx.get(url + "/metrics").status_code,
               rss=peak.text())
    # 5. chunked POST /livez without a token, 10 at once
    head = b"POST /livez HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    answers: list[bytes] = []
    with Peak(served) as peak:
        t0 = time.monotonic()
        threads = [threading.Thread(target=lambda: answers.append(raw_request(port, head, args.open_mb)))
                   for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        report("5 bodies on /livez", clients=10, body_mib=args.open_mb,
               answers=sorted({a.decode(errors="replace") for a in answers}),
               seconds=round(time.monotonic() - t0, 2), rss=peak.text())
    # 6. the five inputs that were a 500
    five = {
        "shape [0, 2**62]": {"inputs": [{"name": "input", "shape": [0, 4611686018427387904], "datatype": "FP32", "data": []}]},
        "datatype list": {"inputs": [{"name": "input", "shape": [1, 784], "datatype": ["FP32"], "data": [0.0] * 784}]},
        "4301-digit int": None, "100k nested [": None,
        "outputs parameters 'x'": {"inputs": [{"name": "input", "shape": [1, 784], "datatype": "FP32", "data": [0.0] * 784}],
                                   "outputs": [{"name": "logits", "parameters": "x"}]},
    }
    raw = {"4301-digit int": b'{"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": ['
                             + b"7" * 4301 + b"]}]}", "100k nested [": b"[" * 100_000}
    answers6 = {}
    for name, payload in five.items():
        content = raw[name] if payload is None else json.dumps(payload).encode()
        r = httpx.post(url + "/v2/models/mnist-mlp/infer", content=content, headers=AUTH, timeout=60)
        answers6[name] = f"{r.status_code} {r.headers.get('content-type', '').split(';')[0]}"
    report("6 five inputs", **answers6)
    # 7. redirect Location, idle/unfinished-header sockets, lax forecast fields, ragged OIP data
    r = httpx.get(url + "/metrics/", headers={**AUTH, "Host": "evil.example"})
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(args.sockets)]
    for s in socks[: args.sockets // 2]:
        s.sendall(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n")  # headers never finished
    time.sleep(args.idle_s)
    still_open = 0
    for s in socks:
        s.settimeout(0.2)
        try:
            still_open += s.recv(1) != b""
        except socket.timeout:
            still_open += 1
        except OSError:
            pass
        s.close()
    lax = {}
    for steps in (True, "3"):
        rr = httpx.post(url + "/forecast_sine", json={"history": [0.0, 0.1, 0.2], "steps": steps}, headers=AUTH)
        lax[json.dumps(steps)] = rr.status_code
    ragged = {"inputs": [{"name": "x", "shape": [3, 2, 1], "datatype": "FP32",
                          "data": [[[0.1], [0.2]], [[0.3], [0.4], [0.5], [0.6]], []]}]}
    rr = httpx.post(url + "/v2/models/sine-rnn/infer", json=ragged, headers=AUTH)
    report("7 smaller", redirect_location=r.headers.get("location"),
           sockets_open_after=f"{still_open} of {args.sockets} after {args.idle_s:.0f} s", forecast_steps=lax,
           ragged_oip=rr.status_code)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True, help="BENTOML_HOME with mnist-mlp and sine-rnn in its store")
    ap.add_argument("--sine-rows", type=int, default=200_000, help="N of the sine-rnn x (N, 1, 1) request")
    ap.add_argument("--smuggle-mb", type=int, default=100, help="MiB sent chunked under Content-Length: 10")
    ap.add_argument("--unique-paths", type=int, default=300)
    ap.add_argument("--open-mb", type=int, default=32, help="MiB per chunked POST /livez")
    ap.add_argument("--sockets", type=int, default=20)
    ap.add_argument("--idle-s", type=float, default=25.0)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        home = home_over(Path(args.home), Path(tmp))  # its own metric files
        env = {"MODEL_ZOO_API_TOKEN": TOKEN, "MODEL_ZOO_MODELS": "mnist-mlp,sine-rnn"}
        with start_service(home, Path(tmp) / "server.log", {**ONE_WORKER, **env}) as served:
            figures = probes(served, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
