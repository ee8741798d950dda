"""Which ``local_path`` sources the crawler reads (security review L1 and S1), through its real gRPC API.

L1: a path outside ``ZX_CRAWLER_LOCAL_ROOTS`` gets one error whether or not it exists, and the error names
no server folder. S1: process-relative pseudo files (``/proc/self/...``, ``/dev/fd/N``, ``/dev/stdin``) are
refused even under a root that holds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import grpc
import pytest
from crawler_support import Crawler, build_request, crawler_settings, start_crawler, stop_crawler
from zehanx_crawler.localpaths import resolve_local_path
from zehanx_runtime.errors import NotFound, PermissionDenied
from zehanx_runtime.status import error_info_of

pytestmark = pytest.mark.timeout(120)


async def _refusal(crawler: Crawler, path: str) -> tuple[grpc.StatusCode, str, str]:
    """``(code, reason, message)`` of the build that reads ``path``, the path itself blanked out."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in crawler.stream(build_request("anything", path)):
            pass
    error = info.value
    details = error_info_of(error)
    reason = details.reason if details is not None else ""
    return error.code(), reason, (error.details() or "").replace(path, "<path>")


async def test_l1_outside_the_roots_existing_and_missing_paths_get_the_same_error(
    tmp_path: Path, shared_data: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "to-shadow.csv").symlink_to("/etc/shadow")
    (root / "to-nothing.csv").symlink_to("/etc/nope")
    crawler = await start_crawler(crawler_settings(tmp_path, shared_data, local_roots=[root, shared_data]))
    try:
        paths = [
            "/etc/shadow",
            "/etc/passwd",
            "/etc/nope",
            "/etc/nope/deeper",
            f"{root}/../../../../etc/passwd",
            f"{root}/../nope",
            str(root / "to-shadow.csv"),
            str(root / "to-nothing.csv"),
        ]
        answers = {path: await _refusal(crawler, path) for path in paths}
        first = answers[paths[0]]
        assert first[:2] == (grpc.StatusCode.PERMISSION_DENIED, "PATH_NOT_ALLOWED")
        assert all(answer == first for answer in answers.values()), answers
        assert "ZX_CRAWLER_LOCAL_ROOTS" in first[2]
        for folder in (str(root), str(shared_data), str(tmp_path)):
            assert folder not in first[2]  # the roots (and so ZX_HOME) are not revealed

        # Inside the roots, a missing file is still told apart: the caller may read there anyway.
        code, reason, _ = await _refusal(crawler, str(root / "missing.csv"))
        assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "PATH_NOT_FOUND")
    finally:
        await stop_crawler(crawler)


def test_l1_the_roots_are_checked_before_the_file_system_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []
    for name in ("stat", "lstat", "readlink"):
        real = getattr(os, name)

        def spy(path: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            looked_up.append(os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else str(path))
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(os, name, spy)
    for path in ("/etc/shadow", "/etc/nope", f"{tmp_path}/../../etc/shadow"):
        with pytest.raises(PermissionDenied):
            resolve_local_path(path, [tmp_path])
    assert not [p for p in looked_up if p.startswith("/etc")], looked_up
    monkeypatch.undo()
    with pytest.raises(NotFound):
        resolve_local_path(str(tmp_path / "missing.csv"), [tmp_path])


@pytest.mark.parametrize(
    "path",
    ["/proc/self/environ", "/proc/self/fd/0", "/dev/fd/0", "/dev/stdin", "/dev/null", "/sys/kernel/notes",
     "/proc/../proc/self/environ", "//proc/self/environ"],
)  # fmt: skip
def test_s1_process_relative_paths_are_refused_even_under_a_root_that_holds_them(path: str) -> None:
    with pytest.raises(PermissionDenied) as info:
        resolve_local_path(path, [Path("/")])
    assert info.value.reason == "PATH_NOT_ALLOWED"


async def test_s1_the_crawler_refuses_proc_paths_and_links_to_them(tmp_path: Path, shared_data: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "environ.csv").symlink_to("/proc/self/environ")
    (root / "fd.csv").symlink_to("/dev/fd/0")
    crawler = await start_crawler(crawler_settings(tmp_path, shared_data, local_roots=[Path("/")]))
    try:
        for path in (
            "/proc/self/environ",
            "/proc/self/cmdline",
            str(root / "environ.csv"),
            str(root / "fd.csv"),
        ):
            code, reason, _ = await _refusal(crawler, path)
            assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PATH_NOT_ALLOWED"), path
    finally:
        await stop_crawler(crawler)
