"""The one server helper (devtools/launch.py) on tiny stand-in servers: ready, failed start, stop."""

from __future__ import annotations

import sys

import httpx
import psutil
import pytest

from devtools.launch import ServerError, free_port, spawn

# A server that answers /readyz 503 twice, then 200, and starts a child process (like BentoML's workers).
SERVER = """
import http.server, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
calls = []
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/readyz":
            calls.append(1)
        code = 200 if self.path != "/readyz" or len(calls) > 2 else 503
        self.send_response(code); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a):
        pass
print("listening", flush=True)
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_ready_watch_and_stop_end_the_whole_group(tmp_path):
    port = free_port()
    with spawn("stand-in", [sys.executable, "-c", SERVER, str(port)], tmp_path / "s.log", port) as server:
        server.wait_ready(30, watch=("/livez", "/readyz"))
        assert server.seen[-2:] == [(200, 503), (200, 503)] and server.start_s > 0
        assert httpx.get(server.url + "/readyz").status_code == 200 and server.port == port
        tree = server.tree()
        assert len(tree) == 2 and server.cpu_seconds() >= 0
    assert server.proc.poll() is not None
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree), "a child outlived stop()"
    assert "listening" in server.tail()


def test_a_server_that_exits_is_an_error_quoting_its_log(tmp_path):
    port = free_port()
    server = spawn("broken", [sys.executable, "-c", "import sys; print('no model store'); sys.exit(3)"],
                   tmp_path / "b.log", port)
    with pytest.raises(ServerError, match=r"(?s)broken server exited with 3 before it was ready.*no model store"):
        server.wait_ready(30)
