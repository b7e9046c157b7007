"""Route-template labels for BentoML's traffic metrics (service/http/routes.py).

The label function is checked here; the adapter over BentoML's internal middleware is checked for
the things it relies on, so a BentoML upgrade that moves or changes them fails here with the
internal's name (the over-HTTP check is test_reliability_http_hostile.py's label-cardinality test).
"""

from __future__ import annotations

import inspect

from service.adapters import METRICS_INTERNAL as INTERNAL
from service.http.routes import UNMATCHED, RouteLabels, route_templates


def test_paths_are_labelled_by_their_route_template():
    from service.http.oip import oip_app

    labels = RouteLabels(route_templates(None, oip_app))
    assert labels("/classify_digit") == "/classify_digit"
    assert labels("/v2/models/mnist-mlp/infer") == "/v2/models/{name}/infer"
    assert labels("/v2/models/" + "x" * 16000 + "/infer") == "/v2/models/{name}/infer"
    assert labels("/v2/models/a/versions/3/infer") == "/v2/models/{name}/versions/{version}/infer"
    assert labels("/models/transfer-cats/classify") == "/models/{name}/classify"
    assert labels("/v2/repository/models/m/unload") == "/v2/repository/models/{name}/unload"
    for unknown in ("/nope", "/" + "a" * 16000, "/v2/models/a/b/c", "/metrics/", "/classify_digit/x"):
        assert labels(unknown) == UNMATCHED, unknown


def test_routes_added_to_the_oip_app_or_the_service_are_labelled_too():
    from starlette.applications import Starlette
    from starlette.routing import Route

    class Api:
        route = "/models/{name}/explain"

    class Service:
        apis = {"explain": Api()}

    extra = Starlette(routes=[Route("/v2/models/{name}/trace", lambda r: None)])
    labels = RouteLabels(route_templates(Service(), extra))
    assert labels("/models/m/explain") == "/models/{name}/explain"
    assert labels("/v2/models/m/trace") == "/v2/models/{name}/trace"


def test_the_bentoml_internal_the_adapter_relies_on_is_still_there():
    module, _, name = INTERNAL.rpartition(".")
    try:
        instruments = __import__(module, fromlist=[name])
        installed = getattr(instruments, name)
    except (ImportError, AttributeError) as exc:
        raise AssertionError(f"BentoML no longer has {INTERNAL}: service/adapters.py must change ({exc})")
    base = next(c for c in installed.__mro__ if c.__module__ == module)  # BentoML's own, under our subclass
    params = list(inspect.signature(base.__init__).parameters)
    assert params[:2] == ["self", "app"], f"{INTERNAL}.__init__ changed: {params}"
    assert 'endpoint = scope["path"]' in inspect.getsource(base.__call__), \
        f"{INTERNAL} no longer takes its endpoint label from scope['path']: service/adapters.py must change"
    from _bentoml_impl.server.app import ServiceAppFactory

    source = inspect.getsource(ServiceAppFactory.middlewares.fget)
    assert f"from {module} import" in source and name in source, \
        f"BentoML's app factory no longer imports {INTERNAL} when it builds the app: the adapter would not apply"


def test_install_makes_bentoml_build_the_templated_middleware():
    from bentoml._internal.server.http import instruments

    import service.app  # noqa: F401 - the wiring block installs it
    installed = instruments.RunnerTrafficMetricsMiddleware
    assert installed.__name__ == "TemplatedTrafficMetrics" and installed.route_labels("/v2/models/x/ready") == \
        "/v2/models/{name}/ready"
