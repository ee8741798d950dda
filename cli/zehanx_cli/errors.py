"""The one error the launcher raises: a message for a person, printed as ``error: ...`` with exit 1."""

from __future__ import annotations


class LaunchError(RuntimeError):
    """Something the user can act on: the message says what went wrong and what to change."""
