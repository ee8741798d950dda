"""Fixtures of the end-to-end tests (defined in e2e_support.py, which the tests import helpers from)."""

from e2e_support import open_gateway, otlp_collector, sandbox, suite  # noqa: F401
