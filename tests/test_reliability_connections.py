"""The header deadline adapter over uvicorn (service/http/connections.py): what it relies on is still there.

The over-HTTP check (idle and byte-a-second sockets are closed, a kept-alive client is served) is in
test_reliability_http_hostile.py; this fails, naming the internal, when uvicorn or BentoML change.
"""

from __future__ import annotations

import inspect

from service.adapters import PROTOCOL_ENTRY as ENTRY
from service.adapters import PROTOCOL_INTERNAL as INTERNAL
from service.http.connections import HeaderDeadline


def test_uvicorn_still_resolves_auto_through_its_protocol_table():
    import uvicorn.config
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    assert "auto" in uvicorn.config.HTTP_PROTOCOLS, f"uvicorn changed {INTERNAL}"
    assert "HTTP_PROTOCOLS.get(self.http" in inspect.getsource(uvicorn.config.Config.load), \
        f"uvicorn's Config.load no longer looks the protocol up in HTTP_PROTOCOLS ({INTERNAL})"
    for method in ("connection_made", "on_response_complete", "connection_lost", "shutdown"):
        assert callable(getattr(AutoHTTPProtocol, method, None)), f"uvicorn's protocol lost {method} ({INTERNAL})"
    source = inspect.getsource(AutoHTTPProtocol)
    assert "self.cycle = " in source and "response_complete" in source, f"uvicorn changed {INTERNAL}"


def test_bentoml_worker_uses_uvicorns_default_protocol():
    import _bentoml_impl.worker.service as worker

    call = inspect.getsource(worker).split("uvicorn.Config(", 1)[1].split("\n    )", 1)[0]
    assert "http=" not in call, "BentoML's worker now chooses uvicorn's http protocol: service/adapters.py " \
                                f"installs through {INTERNAL} and would be bypassed"


def test_install_registers_the_deadline_protocol():
    import uvicorn.config
    from uvicorn.importer import import_from_string

    import service.app  # noqa: F401 - the wiring block installs it
    assert uvicorn.config.HTTP_PROTOCOLS["auto"] == ENTRY
    cls = import_from_string(ENTRY)
    assert issubclass(cls, HeaderDeadline) and cls.header_timeout > 0
