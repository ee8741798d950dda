"""Processes and ports on Linux, read from ``/proc``: liveness that survives pid reuse, process groups,
who holds a port, and which processes carry a marker in their environment."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

#: Environment variable zx sets on every process it starts: the absolute ZX_HOME of that suite.
#: ``zx down`` sweeps every process that carries it, so nothing the suite started outlives it.
SUITE_MARKER = "ZX_SUITE_HOME"


def start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks since boot (None when it does not exist)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def state_of(pid: int) -> str | None:
    """The one-letter state (R, S, Z, ...) of ``pid``, None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return stat[stat.rindex(")") + 2]


def is_alive(pid: int, started: int | None = None) -> bool:
    """True when ``pid`` runs (zombies are dead) and, if given, is the process that started at ``started``."""
    state = state_of(pid)
    if state is None or state in ("Z", "X"):
        return False
    return started is None or start_time(pid) == started


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid``."""
    members = []
    for pid in all_pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(pid)
    return members


def all_pids() -> Iterator[int]:
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            yield int(entry.name)


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    found = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            found[key.decode(errors="replace")] = value.decode(errors="replace")
    return found


def cmdline_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""


def marked(home: Path) -> list[int]:
    """Live processes (other than this one) started by the suite whose ZX_HOME is ``home``."""
    me = os.getpid()
    wanted = str(home)
    return [
        pid
        for pid in all_pids()
        if pid != me and environ_of(pid).get(SUITE_MARKER) == wanted and is_alive(pid)
    ]


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``pgid``; False when the group is gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_pid(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pids: Iterable[int], timeout: float, *, poll: float = 0.05) -> list[int]:
    """Wait until none of ``pids`` is alive; return those still alive after ``timeout``."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while True:
        pending = [pid for pid in pending if is_alive(pid)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(poll)


@dataclass(frozen=True)
class PortHolder:
    pid: int | None
    command: str


def port_free(host: str, port: int) -> bool:
    """Whether a server could bind ``host:port`` now (as gRPC and PostgreSQL do, with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_holder(port: int) -> PortHolder | None:
    """The process listening on TCP ``port`` (any address), as far as /proc tells this user."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                    inodes.add(inode)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in all_pids():
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(fd.path) in targets:
                        return PortHolder(pid, cmdline_of(pid)[:120])
    return PortHolder(None, "a process this user cannot see")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now (for tests and for picking non-default ports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def signal_name(sig: int) -> str:
    return signal.Signals(sig).name
