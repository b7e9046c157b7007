"""Shared fixtures.

``zoo_server`` is defined in test_service_http.py; importing it here registers it once for the whole
session, so a module that uses it without importing it itself shares one server (a module that
imports it by name gets its own instance: pytest registers an imported fixture per module).
"""

from test_service_http import zoo_server  # noqa: F401
