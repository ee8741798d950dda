"""Registers the fixtures of tests/crawler, which live in crawler_support.py.

Test modules import helpers from ``crawler_support`` (a name unique in the whole suite), never from
``conftest``: every test folder has a conftest module, and which one ``import conftest`` finds
depends on the order pytest loaded them.
"""

from crawler_support import *  # noqa: F403  (fixtures)
