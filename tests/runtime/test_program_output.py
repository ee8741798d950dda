"""The program-output protocol has one prefix and one line limit: the executor's parser and the helper
a program imports (``zxrt.py``, which cannot import the runtime) use the same ones."""

from __future__ import annotations

import importlib.util
import io
import sys
from contextlib import redirect_stdout
from typing import Any

from zehanx_executor.sandbox import metrics
from zehanx_runtime import program_output
from zehanx_trainer.runtime_helper import ZXRT_PATH


def _zxrt() -> Any:
    """The helper loaded from its file, as a program loads it (its own module, not a package's)."""
    spec = importlib.util.spec_from_file_location("zxrt_under_test", ZXRT_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_the_helper_prints_what_the_executor_parses_with_the_same_prefix_and_limit() -> None:
    zxrt = _zxrt()
    assert zxrt.PREFIX.encode() == program_output.RECORD_PREFIX == metrics.PREFIX
    assert zxrt.MAX_LINE_BYTES == program_output.MAX_RECORD_LINE_BYTES == metrics.MAX_LINE_BYTES
    printed = io.StringIO()
    with redirect_stdout(printed):
        zxrt.log("hello")
    line = printed.getvalue().strip().encode()
    assert line.startswith(program_output.RECORD_PREFIX)
    record = metrics.parse_metric(line[len(program_output.RECORD_PREFIX) :])
    assert (record["v"], record["kind"], record["message"]) == (1, "log", "hello")
