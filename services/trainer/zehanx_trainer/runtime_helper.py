"""Where the program runtime helper ``zxrt`` lives, for staging it next to a program.

``zxrt_runtime/`` holds exactly one module, ``zxrt.py``: the folder is what a program's ``PYTHONPATH``
points at (the sandbox's read-only runtime folder, or a staged copy). Code generators and tests that
run a program outside the platform put the same folder on ``PYTHONPATH``; there is no second copy.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

#: The folder to put on PYTHONPATH so that ``import zxrt`` works.
RUNTIME_DIR = Path(__file__).resolve().parent / "zxrt_runtime"
ZXRT_PATH = RUNTIME_DIR / "zxrt.py"
#: Program contract version this helper speaks (``zxrt.VERSION``).
ZXRT_VERSION = 1


@cache
def zxrt_source() -> bytes:
    """The helper's source, staged into the sandbox beside the program."""
    return ZXRT_PATH.read_bytes()


def zxrt_sha256() -> str:
    return hashlib.sha256(zxrt_source()).hexdigest()
