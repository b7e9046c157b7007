"""The BentoML internals the service relies on where BentoML 1.4 has no public API, in one place.

- ``cork_dispatcher`` / ``raise_latency_budget``: BentoML's adaptive batcher, ``CorkDispatcher``, the one
  ``@bentoml.api(batchable=True)`` uses inside. A batchable API decodes every request before our code
  sees it (one bad file fails the whole batch, PIL errors become 500s), so service/core/batching.py batches
  decoded arrays with the dispatcher itself; the budget is raised once a model's speed is known.
- ``input_as_parsed``: an input spec's ``from_http_request`` (service/http/uploads.py, service/app.py)
  parses the request itself and hands the endpoint what it parsed, or the ``ServiceError`` to answer
  with, unvalidated: BentoML passes the returned model's attributes to the endpoint as they are, and
  renders an exception raised there as a 500 (or, for its own 4xx, as a JSON list).
- ``bind_api_methods``: BentoML looks an endpoint up on the service instance for every request and
  ``APIMethod.__get__`` rebuilds the call wrapper (with ``inspect.signature``) each time; an instance
  attribute holding the same wrapper wins over that non-data descriptor.

tests/test_bentoml_adapter.py fails, naming the internal (``INTERNALS``), when BentoML changes one.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

INTERNALS = {
    "dispatcher": "bentoml._internal.marshal.dispatcher.CorkDispatcher(max_latency_in_ms, max_batch_size, "
                  "fallback, get_batch_size, batch_dim) and its max_latency attribute",
    "input": "_bentoml_impl.server.app.ServiceAppFactory.api_endpoint: the endpoint's arguments are "
             "getattr(input_spec.from_http_request(...), field)",
    "api_method": "_bentoml_sdk.method.APIMethod.__get__ (a non-data descriptor) and api_endpoint's "
                  "getattr(service_instance, name).local",
}


def cork_dispatcher(max_latency_ms: int, max_batch: int, fallback: Callable[[], Any]) -> Any:
    """A dispatcher that batches ``(n_i, ...)`` arrays along axis 0, counting items, not requests."""
    from bentoml._internal.marshal.dispatcher import CorkDispatcher

    return CorkDispatcher(max_latency_in_ms=max_latency_ms, max_batch_size=max_batch, fallback=fallback,
                          get_batch_size=len, batch_dim=(0, 0))


def raise_latency_budget(dispatcher: Any, seconds: float) -> float:
    """At least ``seconds`` before the dispatcher sheds a queued request; returns the budget (seconds)."""
    dispatcher.max_latency = max(dispatcher.max_latency, seconds)
    return dispatcher.max_latency


def input_as_parsed(spec: type, **values: Any) -> Any:
    """The input model ``from_http_request`` returns, holding ``values`` as they are (no validation)."""
    return spec.model_construct(**values)


def bind_api_methods(instance: Any, names: Iterable[str]) -> None:
    """Resolve each API's call wrapper once, on the instance."""
    for name in names:
        instance.__dict__[name] = getattr(instance, name)
