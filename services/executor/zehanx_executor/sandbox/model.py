"""Moved to :mod:`zehanx_executor.domain` (issue 21's layout). This name stays only for
``tests/executor/test_ray_backend.py`` until it imports ``zehanx_executor.domain``; then delete it."""

from zehanx_executor.domain import ExitReason, Finished, Output, Started, Stream

__all__ = ["ExitReason", "Finished", "Output", "Started", "Stream"]
