"""`make serve`'s launcher: ``python -m service.serve [--port 3000] [--host 127.0.0.1]``.

Checks the port is free (a busy one is one line naming it and how to pick another, not BentoML's
traceback), runs ``bentoml serve service.app:ModelZoo``, waits for ``/readyz`` and then prints one
block: the URL, ``/ui``, ``/``, example calls and how to stop. Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from service.examples import ready_block

SERVICE = "service.app:ModelZoo"
STOP_GRACE_S = 30.0  # BentoML drains its workers on SIGINT; after this the launcher kills it


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on (host, port): binding it fails as BentoML's own bind would."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is not "in use"
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def is_ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/readyz", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def stop(proc: subprocess.Popen) -> int:
    """Wait for a server already sent SIGINT (Ctrl-C reaches the whole foreground group); kill it if it lingers."""
    try:
        return proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service.serve", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=3000, help="TCP port (make serve PORT=...)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--check-port", action="store_true", help="only check the port is free (exit 1 when not)")
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"error: --port {args.port} is not a TCP port (1-65535)", file=sys.stderr)
        return 2
    if port_in_use(args.host, args.port):
        print(f"error: port {args.port} on {args.host} is in use (another make serve?); "
              f"choose another with make serve PORT={args.port + 1}", file=sys.stderr)
        return 1
    if args.check_port:
        return 0
    base = f"http://{args.host}:{args.port}"
    bentoml = Path(sys.executable).with_name("bentoml")
    proc = subprocess.Popen([str(bentoml), "serve", SERVICE, "--port", str(args.port), "--host", args.host])
    try:
        while proc.poll() is None and not is_ready(base):
            time.sleep(0.5)
        if proc.poll() is None:
            print("\n" + "\n".join(ready_block(base)) + "\n", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        stop(proc)
        return 0


if __name__ == "__main__":
    sys.exit(main())
