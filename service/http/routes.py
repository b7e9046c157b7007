"""The route table: every path the service answers, stated once.

BentoML serves its own routes (``BENTOML_ROUTES``); the app it mounts at ``/`` serves ``mounted()``: the
family aliases (service/http/aliases.py, one per family of zoo/families.py), and ``MOUNTED``: per-model
REST, the Open Inference Protocol with Triton's repository extension, the pages, Swagger UI (``/docs``)
and the OpenAPI document.
Two things read the table: Prometheus' ``endpoint`` label, which is the route template, never the raw
path (``RouteLabels``, installed by service/adapters.py ``install_route_labels``: unknown or
parameterised paths would otherwise add a series each, without bound), and the OpenAPI document
(service/http/openapi.py, one description per mounted route).
"""

from __future__ import annotations

import re
from typing import Any, Iterable

from starlette.routing import BaseRoute, compile_path

from service.http import aliases, oip, openapi, pages, rest, statistics, swagger
from zoo.families import FAMILIES

BENTOML_ROUTES = ("/livez", "/readyz", "/healthz", "/metrics")  # BentoML's own
MOUNTED: list[BaseRoute] = [*statistics.ROUTES, *oip.ROUTES, *rest.ROUTES, *pages.ROUTES, *swagger.ROUTES, *openapi.ROUTES]
UNMATCHED = "<unmatched>"  # every path no route serves: one label, whatever was asked for


def family_routes() -> list[str]:
    """The alias routes: ``/classify_digit`` ... for the model stored under each family's own name."""
    return [f"/{family.route}" for family in FAMILIES.values()]


def mounted() -> list[BaseRoute]:
    """What the mounted app serves: the family routes (of the families registered by now), then ``MOUNTED``."""
    return [*aliases.family_routes(), *MOUNTED]


def table() -> list[str]:
    """Every route template of DESIGN.md's HTTP surface."""
    return [*BENTOML_ROUTES, *family_routes(), *(route.path for route in MOUNTED)]


def route_templates(service: Any, *apps: Any) -> list[str]:
    """The table, plus the API routes of ``service`` and the routes of ``apps`` (anything added to them)."""
    out = table()
    out += [api.route for api in getattr(service, "apis", {}).values()]
    for app in apps:
        for route in getattr(app, "routes", []):
            path = getattr(route, "path", None)
            if isinstance(path, str) and path:
                out.append(path)
    return out


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
