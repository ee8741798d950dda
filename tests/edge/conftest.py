"""Registers the fixtures of tests/edge: ``edge`` and ``proxied`` live in edge_support.py, the autouse
``_quiet_logs`` in support/gateway.py (shared with tests/gateway).

Test modules import helpers from ``edge_support`` (a name unique in the whole suite), never from
``conftest``: every test folder has a conftest module, and which one ``import conftest`` finds
depends on the order pytest loaded them.
"""

from edge_support import edge, proxied  # noqa: F401  (fixtures)
from support.gateway import _quiet_logs  # noqa: F401  (an autouse fixture)
