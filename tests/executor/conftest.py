"""Fixtures for the executor tests: a real LocalSandbox on this host (helpers in sandbox_helpers.py).

Everything runs for real (bwrap, cgroups, seccomp, tmpfs). When the probe says this host cannot
sandbox, the tests that need the sandbox are skipped with the probe's reasons; the attack tests are then
never run at all.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sandbox_helpers import SLOTS, UID_BASE, WORK_DIR
from zehanx_executor.sandbox.local import LocalSandbox, LocalSandboxConfig
from zehanx_executor.sandbox.probe import Capabilities, probe


@pytest.fixture(scope="session")
def caps() -> Capabilities:
    c = probe(work_dir=Path(WORK_DIR), probe_uid=UID_BASE + SLOTS)
    if not c.ok:
        pytest.skip("this host cannot run the local sandbox: " + "; ".join(c.missing))
    return c


@pytest.fixture(scope="session")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("runtime")  # under /tmp/pytest-of-root (0700): reached through a stage mount
    d.chmod(0o755)
    (d / "zxrt.py").write_text("VERSION = 1\n")
    return d


@pytest.fixture(scope="session")
def box(caps: Capabilities, runtime_dir: Path) -> Iterator[LocalSandbox]:
    config = LocalSandboxConfig(
        work_dir=Path(WORK_DIR),
        uid_base=UID_BASE,
        python_roots=tuple(dict.fromkeys([Path(sys.prefix), Path(sys.base_prefix)])),
        path_dirs=(str(Path(sys.prefix) / "bin"),),
        runtime_dir=runtime_dir,
    )
    sandbox = LocalSandbox(config, caps)
    yield sandbox
    with contextlib.suppress(OSError):
        sandbox.jobs_root.rmdir()
