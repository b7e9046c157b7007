"""`make serve`'s launcher (python -m service.serve): one "ready" block after /readyz, one line for a busy port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from devtools.launch import ONE_WORKER, free_port
from service.serve import port_in_use

ROOT = Path(__file__).resolve().parents[1]


def launcher(port: int, tmp_path: Path) -> subprocess.Popen:
    env = {**os.environ, **ONE_WORKER, "BENTOML_HOME": str(tmp_path / "bentoml")}  # an empty store: nothing to load
    return subprocess.Popen([sys.executable, "-m", "service.serve", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def test_ready_block_comes_after_readyz_and_ctrl_c_stops(tmp_path):
    port = free_port()
    proc = launcher(port, tmp_path)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any("stop" in ln and "Ctrl-C" in ln for ln in lines) and time.monotonic() < deadline:
            assert proc.poll() is None, "".join(lines)[-3000:]
            time.sleep(0.5)
        out = [ln.rstrip("\n") for ln in lines]
        start = next(i for i, ln in enumerate(out) if ln.startswith("Model Zoo is ready"))
        block = out[start:start + 7]
        base = f"http://127.0.0.1:{port}"
        assert block[0] == f"Model Zoo is ready at {base}", block
        assert block[1].split() == ["browser", "demo", f"{base}/ui"] and block[2].split()[-1] == f"{base}/"
        assert block[3].split()[:2] == ["try", "curl"] and f"{base}/classify_digit" in block[3]
        assert block[4].split()[0] == "curl" and f"{base}/forecast_sine" in block[4]
        assert f"zoo classify --url {base} " in block[5] and block[6].split() == ["stop", "Ctrl-C"]
        assert httpx.get(base + "/readyz").status_code == 200  # it said ready because it was
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's foreground group
        rc = proc.wait(60)
    assert rc == 0, "".join(lines)[-3000:]
    assert "Traceback" not in "".join(lines)
    assert not port_in_use("127.0.0.1", port)


def test_busy_port_is_one_line_naming_it_and_the_fix(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = launcher(port, tmp_path)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert out.strip().count("\n") == 0, out
    assert f"port {port}" in out and f"make serve PORT={port + 1}" in out
