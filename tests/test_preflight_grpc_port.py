"""The arbiter's start-up check of ``MODEL_ZOO_GRPC_PORT`` (service/control/preflight.py ``check_grpc_port``).

Every worker binds the gRPC port with ``SO_REUSEPORT``, so a taken port would be shared silently; the
check binds it plainly and names the port and the setting when anything listens there: a plain
listener, or one bound with ``SO_REUSEPORT`` as our own workers bind it. (tests/test_grpc.py starts a
second real server on a running server's port.)
"""

from __future__ import annotations

import socket

import pytest

from devtools.launch import free_port
from service.config import Settings
from service.control.preflight import check_grpc_port


def listener(port: int, reuseport: bool) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1)
    return sock


@pytest.mark.parametrize("reuseport", [False, True], ids=["plain", "so_reuseport"])
def test_a_taken_grpc_port_is_one_problem_naming_the_port_and_the_setting(reuseport):
    port = free_port()
    settings = Settings(grpc_port=port, grpc_host="127.0.0.1")
    assert check_grpc_port(settings) == []  # free: nothing to say (and the probe let go of it)
    with listener(port, reuseport):
        [problem] = check_grpc_port(settings)
    assert problem.startswith(f"MODEL_ZOO_GRPC_PORT={port}: cannot bind 127.0.0.1:{port} for gRPC")
    assert "choose another MODEL_ZOO_GRPC_PORT" in problem
    assert check_grpc_port(settings) == []  # free again once the holder closed


def test_no_grpc_port_is_not_checked():
    assert check_grpc_port(Settings(grpc_port=0)) == []


def test_an_unknown_host_is_named():
    [problem] = check_grpc_port(Settings(grpc_port=free_port(), grpc_host="no-such-host.invalid"))
    assert problem.startswith("MODEL_ZOO_GRPC_HOST='no-such-host.invalid' is not an address of this machine")
