"""Registers the fixtures of tests/gateway, which live in gateway_support.py.

Test modules import helpers from ``gateway_support`` (a name unique in the whole suite), never from
``conftest``: every test folder has a conftest module, and which one ``import conftest`` finds
depends on the order pytest loaded them.
"""

from gateway_support import *  # noqa: F403  (fixtures)
from support.gateway import _quiet_logs  # noqa: F401  (an autouse fixture, shared with tests/edge)
