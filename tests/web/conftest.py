"""Fixtures of the dashboard's browser tests (defined in web_support.py, which the tests import helpers from)."""

from web_support import data_server, web_browser, web_suite  # noqa: F401
