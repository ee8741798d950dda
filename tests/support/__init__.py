"""Helpers shared by more than one test folder, written once.

``tests/`` is on ``sys.path`` while pytest runs (its ``conftest.py`` puts it there), so test modules and
the folders' ``*_support.py`` files import these as ``support.<module>``.
"""
