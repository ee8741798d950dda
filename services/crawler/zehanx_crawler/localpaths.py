"""Which ``local_path`` sources the crawler may read.

The allowed folders (``ZX_CRAWLER_LOCAL_ROOTS``) are checked on the path as written, normalised without
touching the file system, before anything is looked up; then the path is resolved (symlinks followed)
and checked again. A path outside the folders gets the same error whether or not it exists, and no error
names the folders, so a caller learns nothing about the host's files. Process-relative pseudo files
(``/proc/...``, ``/dev/fd/N``, ``/dev/stdin``) are refused wherever they appear: they name whatever the
reading process has open, which the gateway, in another process, cannot judge.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from zehanx_runtime.errors import InvalidArgument, NotFound, PermissionDenied

#: Pseudo file systems whose paths depend on the process that opens them (or are devices).
_PSEUDO = (Path("/proc"), Path("/dev"), Path("/sys"))


def _lexical(path: str | Path) -> Path:
    """``path`` with ``.``, ``..`` and repeated slashes folded, as text (no file system access)."""
    return Path("/" + os.path.normpath(str(path)).lstrip("/"))


def is_allowed(path: Path, roots: Sequence[Path]) -> bool:
    """True when ``path`` lies under one of ``roots`` and is no pseudo file."""
    if any(path.is_relative_to(p) for p in _PSEUDO):
        return False
    return any(path.is_relative_to(root) for root in roots)


def resolve_local_path(value: str, roots: Sequence[Path]) -> tuple[Path, list[Path]]:
    """The resolved path of ``value`` and the resolved roots, or PATH_NOT_ALLOWED / PATH_NOT_FOUND.

    PATH_NOT_FOUND only comes for a path inside the roots; outside them every path is PATH_NOT_ALLOWED.
    """
    if not Path(value).is_absolute():
        raise InvalidArgument(f"local_path must be absolute: {value!r}", reason="RELATIVE_PATH")
    refused = PermissionDenied(
        f"{value} is not readable by this crawler: local paths must lie under the folders it may read "
        "(ZX_CRAWLER_LOCAL_ROOTS)",
        reason="PATH_NOT_ALLOWED",
    )
    if "\x00" in value:
        raise refused
    resolved_roots = [Path(r).expanduser().resolve() for r in roots]
    written_roots = [_lexical(Path(r).expanduser()) for r in roots] + resolved_roots
    if not is_allowed(_lexical(value), written_roots):
        raise refused  # before the file system is touched
    try:
        resolved = Path(value).resolve()
    except (OSError, RuntimeError, ValueError):
        raise refused from None
    if not is_allowed(resolved, resolved_roots):
        raise refused  # a symlink or `..` out of the roots, whether or not its target exists
    if not resolved.exists():
        raise NotFound(f"{value} does not exist", reason="PATH_NOT_FOUND")
    return resolved, resolved_roots
