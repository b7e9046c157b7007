"""Prometheus ``endpoint`` labels by route template, not by raw path: an adapter over one BentoML internal.

BentoML 1.4's traffic metrics middleware (``INTERNAL`` below) is the outermost middleware of the
service's app, so it runs before any auth or routing, and labels every request with its raw path:
each unknown or parameterised path (``/v2/models/<anything>/infer``, a 401 or a 404 included) became a
new label set, a new series in every metric file of every worker and a longer ``/metrics`` page,
without bound. BentoML has no public switch for this, so ``install`` subclasses that middleware in
the module BentoML's app factory imports it from: the subclass hands BentoML a copy of the scope
whose ``path`` is the route template (``/v2/models/{name}/infer``; ``UNMATCHED`` for paths no route
serves), and gives the app behind it the real path back. tests/test_reliability_metrics.py fails,
naming the internal, when BentoML moves or changes it.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from starlette.routing import compile_path

from zoo.families import FAMILIES

INTERNAL = "bentoml._internal.server.http.instruments.RunnerTrafficMetricsMiddleware"
UNMATCHED = "<unmatched>"  # every path no route serves: one label, whatever was asked for
_REAL_PATH = "model_zoo.real_path"  # scope key carrying the real path past BentoML's middleware

# DESIGN.md's HTTP surface and BentoML's own routes: labelled by template even before a route exists in
# this process (routes added by other modules are found at install time as well, see route_templates).
CONTRACT = (
    "/", "/docs", "/docs.json", "/livez", "/readyz", "/healthz", "/metrics", "/ui",
    *(f"/{family.route}" for family in FAMILIES.values()),  # the alias routes (zoo/families.py)
    "/models/{name}/classify", "/models/{name}/forecast",
    "/v2", "/v2/health/live", "/v2/health/ready",
    "/v2/models/{name}", "/v2/models/{name}/ready", "/v2/models/{name}/infer",
    "/v2/models/{name}/versions/{version}", "/v2/models/{name}/versions/{version}/ready",
    "/v2/models/{name}/versions/{version}/infer",
    "/v2/repository/index", "/v2/repository/models/{name}/load", "/v2/repository/models/{name}/unload",
)


class RouteLabels:
    """path -> the template of the route that serves it, else ``UNMATCHED``."""

    def __init__(self, templates: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.patterns: list[tuple[re.Pattern[str], str]] = []
        for template in dict.fromkeys(templates):  # de-duplicated, in order
            if "{" in template:
                self.patterns.append((compile_path(template)[0], template))
            else:
                self.exact.add(template)

    def __call__(self, path: str) -> str:
        if path in self.exact:
            return path
        for pattern, template in self.patterns:
            if pattern.match(path):
                return template
        return UNMATCHED


def route_templates(service: Any, *apps: Any) -> list[str]:
    """The contract's templates, the service's API routes and the routes of mounted Starlette apps."""
    out = list(CONTRACT)
    out += [api.route for api in getattr(service, "apis", {}).values()]
    for app in apps:
        for route in getattr(app, "routes", []):
            path = getattr(route, "path", None)
            if isinstance(path, str) and path:
                out.append(path)
    return out


def install(templates: Iterable[str]) -> type:
    """Make BentoML's app factory build the templated metrics middleware; returns the class installed."""
    from bentoml._internal.server.http import instruments

    labels = RouteLabels(templates)
    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "route_labels", None) is not None:  # installed already (module imported twice)
        base.route_labels = labels
        return base

    class TemplatedTrafficMetrics(base):  # type: ignore[misc, valid-type]
        route_labels = labels

        def __init__(self, app: Any, **kwargs: Any) -> None:
            super().__init__(_RealPath(app), **kwargs)

        async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket") and scope.get("path") != "/metrics":
                scope = {**scope, "path": self.route_labels(scope["path"]), _REAL_PATH: scope["path"]}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = TemplatedTrafficMetrics
    return TemplatedTrafficMetrics


class _RealPath:
    """Behind BentoML's metrics middleware: the app sees the request's real path again."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if _REAL_PATH in scope:
            scope = dict(scope)
            scope["path"] = scope.pop(_REAL_PATH)
        await self.app(scope, receive, send)
