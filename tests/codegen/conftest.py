"""Registers the fixtures of tests/codegen, which live in codegen_support.py.

Test modules import helpers from ``codegen_support`` (a name unique in the whole suite), never from
``conftest``: every test folder has a conftest module, and which one ``import conftest`` finds
depends on the order pytest loaded them.
"""

from codegen_support import *  # noqa: F403  (fixtures)
