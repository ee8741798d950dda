"""The program-output protocol: how a sandboxed program reports to the platform (contract version 1).

A program prints records on stdout, one per line: :data:`RECORD_PREFIX` followed by one JSON object.
The executor splits the output into lines, parses these (untrusted: size-, rate- and shape-checked)
and streams them as ``MetricRecord`` messages; the trainer reads their meaning (``"v"`` and ``"kind"``,
``docs/program_contract.md``). The contract is written down in
``protos/zehanx/executor/v1/executor_service.proto`` (``MetricRecord``); these constants are its one
place in code. ``zxrt.py``, the helper a program imports, cannot import this (it runs alone in the
sandbox, standard library only), so it repeats the prefix and the line limit, and a test holds them
equal.
"""

from __future__ import annotations

from typing import Final

#: Starts every record line on stdout; anything else is plain output.
RECORD_PREFIX: Final = b"@@zx:"
#: Longest record line, prefix included; a longer one is dropped (and counted).
MAX_RECORD_LINE_BYTES: Final = 64 * 1024
#: Record lines a program may print per second (a token bucket); beyond, they are dropped and counted.
MAX_RECORD_LINES_PER_SECOND: Final = 200
