"""The executor's local sandbox as the trainer and end-to-end suites start it (as a process)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from zehanx_executor.sandbox.probe import Capabilities

    from support.services import ServiceProcess


def require_local_sandbox(work_dir: str | Path, uid_base: int, slots: int) -> Capabilities:
    """What the host offers; skips, with the probe's reasons, when it cannot run the local sandbox."""
    from zehanx_executor.sandbox.probe import probe

    caps = probe(work_dir=Path(work_dir), probe_uid=uid_base + slots)
    if not caps.ok:
        pytest.skip("this host cannot run the executor's local sandbox: " + "; ".join(caps.missing))
    return caps


def local_executor_env(work_dir: str | Path, uid_base: int, slots: int) -> dict[str, str]:
    """The executor's settings for a local sandbox of ``slots`` runs under uids from ``uid_base``."""
    return {
        "ZX_EXECUTOR_BACKEND": "local",
        "ZX_EXECUTOR_WORK_DIR": str(work_dir),
        "ZX_EXECUTOR_UID_BASE": str(uid_base),
        "ZX_EXECUTOR_MAX_CONCURRENT": str(slots),
    }


@contextmanager
def local_executor(
    tmp: Path, token: str, work_dir: str | Path, uid_base: int, slots: int
) -> Iterator[ServiceProcess]:
    """The executor as a process (``zx-executor``) on the local sandbox, serving; stopped on exit. Skips
    where the host cannot run the local sandbox."""
    from support.services import start_service

    require_local_sandbox(work_dir, uid_base, slots)
    executor = start_service(
        "executor", tmp, token=token, extra_env=local_executor_env(work_dir, uid_base, slots)
    )
    try:
        executor.wait_serving(90)
        yield executor
    finally:
        executor.stop()
