"""Registers the fixtures of tests/trainer, which live in trainer_support.py.

Test modules import helpers from ``trainer_support`` (a name unique in the whole suite), never from
``conftest``: every test folder has a conftest module, and which one ``import conftest`` finds
depends on the order pytest loaded them.
"""

from trainer_support import *  # noqa: F403  (fixtures)
