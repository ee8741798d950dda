"""Per-job cgroups on either layout: cgroup v1 (plus the controller-less v2 "unified" mount for
``cgroup.kill``) as on the development VM, or pure cgroup v2 as on the GPU hosts.

Job cgroups are created under the process's OWN cgroup, read from ``/proc/self/cgroup`` (on the VM the
memory cgroup is nested at ``/process_api/...``, not ``/``):

    <own>/zehanx/<instance>/<job>

v1: ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes`` (so swap cannot extend it),
``pids.max`` and, where the ``cpu`` hierarchy is mounted, a CFS quota (``cpu.cfs_quota_us``); a v2
leaf (when the unified mount exists) gives ``cgroup.kill``, ``cgroup.events`` and ``cpu.stat``. v2:
``memory.max``, ``memory.swap.max = 0``, ``pids.max``, ``cpu.max``, ``cgroup.kill``. On pure v2 the
controllers must be enabled in the parent's ``cgroup.subtree_control``, which the kernel refuses while
the parent holds processes; the executor then moves itself into a ``<own>/supervisor`` leaf first.

A CPU quota is lifted before a kill: a job throttled for the rest of its CFS period could not run its
exit path until the period ends (up to ``CPU_PERIOD_US``), which would stretch the kill by as much.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CPU_PERIOD_US = 100_000
"""The CFS period of a job's CPU quota (the kernel's default): ``cpus`` cores are ``cpus * period`` of
CPU time per period."""


class CgroupError(RuntimeError):
    """The host's cgroups cannot give a job the limits it needs."""


@dataclass(frozen=True)
class _Mount:
    root: str  # the hierarchy path mounted here (mountinfo field 4)
    point: Path  # where it is mounted
    fstype: str
    options: frozenset[str]


def _mounts(mountinfo: str) -> list[_Mount]:
    out = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3:
            continue
        fstype = rest[0]
        if fstype not in ("cgroup", "cgroup2"):
            continue
        point = fields[4].replace("\\040", " ")
        out.append(_Mount(fields[3], Path(point), fstype, frozenset(rest[2].split(","))))
    return out


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """``{"memory": "/process_api/…", "pids": "/", "": "/" (the v2 path)}``."""
    out: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def _dir_for(mount: _Mount, own: str) -> Path:
    """The directory of our own cgroup inside a mounted hierarchy."""
    root = mount.root.rstrip("/")
    rel = own
    if root and root != "/" and own.startswith(root):
        rel = own[len(root) :]
    return mount.point / rel.lstrip("/")


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str:
    with open(path) as f:
        return f.read()


def _kv(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[k] = int(v)
    return out


@dataclass
class CgroupLayout:
    """Where job cgroups go on this host. Build with :meth:`detect`."""

    version: int  # 1 (v1 controllers, maybe a unified v2 mount) or 2 (pure v2)
    memory_base: Path  # v1: our memory cgroup; v2: our cgroup
    pids_base: Path
    unified_base: Path | None  # v2 directory used for cgroup.kill / events / cpu.stat
    has_kill: bool
    notes: list[str] = field(default_factory=list)
    cpu_base: Path | None = None  # v1: our cpu cgroup; v2: our cgroup; None: no CPU quota possible

    @property
    def has_cpu(self) -> bool:
        """Whether job cgroups can carry a CPU quota (v1 ``cpu`` hierarchy with CFS bandwidth, or the
        v2 ``cpu`` controller delegated to our subtree)."""
        return self.cpu_base is not None

    @classmethod
    def detect(
        cls, mountinfo: str | None = None, proc_cgroup: str | None = None, *, prepare: bool = True
    ) -> CgroupLayout:
        mountinfo = mountinfo if mountinfo is not None else _read(Path("/proc/self/mountinfo"))
        proc_cgroup = proc_cgroup if proc_cgroup is not None else _read(Path("/proc/self/cgroup"))
        mounts = _mounts(mountinfo)
        own = _own_paths(proc_cgroup)
        v1 = {
            c: m for m in mounts if m.fstype == "cgroup" for c in m.options if c in ("memory", "pids", "cpu")
        }
        v2 = next((m for m in mounts if m.fstype == "cgroup2"), None)
        if "memory" in v1 and "pids" in v1:
            mem = _dir_for(v1["memory"], own.get("memory", "/"))
            pids = _dir_for(v1["pids"], own.get("pids", "/"))
            unified = _dir_for(v2, own.get("", "/")) if v2 is not None else None
            has_kill = unified is not None and _probe_kill(unified)
            notes = (
                [] if has_kill else ["no cgroup v2 cgroup.kill: whole-tree kill falls back to a kill loop"]
            )
            cpu = _dir_for(v1["cpu"], own.get("cpu", "/")) if "cpu" in v1 else None
            if cpu is not None and not (cpu / "cpu.cfs_quota_us").exists():
                notes.append(f"the cpu hierarchy at {cpu} has no CFS bandwidth control (cpu.cfs_quota_us)")
                cpu = None
            elif cpu is None:
                notes.append("no cgroup v1 cpu hierarchy is mounted: runs get no CPU quota")
            return cls(1, mem, pids, unified if has_kill else None, has_kill, notes, cpu)
        if v2 is not None and not v1:
            base = _dir_for(v2, own.get("", "/"))
            controllers = set(_read(v2.point / "cgroup.controllers").split())
            missing = {"memory", "pids"} - controllers
            if missing:
                raise CgroupError(f"cgroup v2 lacks the controllers {sorted(missing)} at {v2.point}")
            layout = cls(2, base, base, base, False, [])
            if prepare:
                layout._prepare_v2()
                layout.has_kill = _probe_kill(base)
                layout._prepare_v2_cpu(controllers)
            if not layout.has_kill:
                layout.notes.append(
                    "no cgroup.kill (kernel < 5.14?): whole-tree kill falls back to a kill loop"
                )
            return layout
        raise CgroupError(
            "no usable cgroups: need cgroup v1 'memory' and 'pids' hierarchies or cgroup v2 with the memory "
            "and pids controllers mounted (found: "
            + (", ".join(f"{m.fstype}:{m.point}" for m in mounts) or "none")
            + ")"
        )

    def _prepare_v2(self) -> None:
        """Make ``<own>/zehanx`` able to hold memory+pids-limited children (no-internal-process rule)."""
        base = self.memory_base
        try:
            _write(base / "cgroup.subtree_control", "+memory +pids")
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise CgroupError(f"cannot enable memory and pids controllers in {base}: {exc}") from exc
            # Our cgroup holds processes: move this process into a leaf, then enable the controllers.
            leaf = base / "supervisor"
            leaf.mkdir(exist_ok=True)
            _write(leaf / "cgroup.procs", str(os.getpid()))
            try:
                _write(base / "cgroup.subtree_control", "+memory +pids")
            except OSError as exc2:
                others = _read(base / "cgroup.procs").split()
                raise CgroupError(
                    f"cannot enable memory and pids controllers in {base} (other processes in it: "
                    f"{' '.join(others[:10])}): {exc2}"
                ) from exc2
            self.notes.append(f"moved the executor into {leaf} to delegate memory and pids controllers")

    def _prepare_v2_cpu(self, controllers: set[str]) -> None:
        """Delegate the v2 ``cpu`` controller to our subtree (separately from memory and pids: a host
        may hold it back, and the executor then runs without CPU quotas, saying so)."""
        base = self.memory_base
        if "cpu" not in controllers:
            self.notes.append("cgroup v2 has no cpu controller here: runs get no CPU quota")
            return
        try:
            _write(base / "cgroup.subtree_control", "+cpu")
        except OSError as exc:
            self.notes.append(f"cannot enable the cpu controller in {base} ({exc}): runs get no CPU quota")
            return
        self.cpu_base = base

    def job(self, instance: str, name: str) -> JobCgroup:
        return JobCgroup(self, instance, name)


def _probe_kill(unified: Path) -> bool:
    probe = unified / "zehanx" / f"probe-{os.getpid()}"
    try:
        probe.mkdir(parents=True, exist_ok=True)
        return (probe / "cgroup.kill").exists()
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


class JobCgroup:
    """The cgroups of one job. ``create`` → launcher joins ``procs_files`` → ``kill``/``wait_empty`` →
    read ``usage`` and ``oom_kills`` → ``remove``."""

    def __init__(self, layout: CgroupLayout, instance: str, name: str) -> None:
        self.layout = layout
        rel = Path("zehanx") / instance / name
        if layout.version == 1:
            self.memory = layout.memory_base / rel
            self.pids = layout.pids_base / rel
            self.unified = layout.unified_base / rel if layout.unified_base else None
            self.cpu = layout.cpu_base / rel if layout.cpu_base else None
        else:
            self.memory = self.pids = layout.memory_base / rel
            self.unified = self.memory
            self.cpu = self.memory if layout.cpu_base else None
        self._dirs = list(dict.fromkeys(d for d in (self.memory, self.pids, self.unified, self.cpu) if d))
        self.cpu_quota_us = 0  # 0: none set

    def create(self, memory_bytes: int, pids_max: int, cpus: float = 0.0) -> None:
        """Make the job's cgroups with their limits. ``cpus`` > 0 sets a CPU quota of that many cores
        where the layout has a cpu controller (:attr:`CgroupLayout.has_cpu`); the caller decides what a
        host without one means."""
        controllers = ["+memory +pids", *(["+cpu"] if self.layout.has_cpu else [])]
        for d in self._dirs:
            if self.layout.version == 2:
                # Each level down to the job needs the controllers in its parent's subtree_control.
                for parent in reversed(d.relative_to(self.layout.memory_base).parents):
                    p = self.layout.memory_base / parent
                    if p != self.layout.memory_base:
                        p.mkdir(exist_ok=True)
                        for wanted in controllers:  # apart: cpu refused must not cost memory+pids
                            with contextlib.suppress(OSError):
                                _write(p / "cgroup.subtree_control", wanted)
            d.mkdir(parents=True, exist_ok=True)
        if self.layout.version == 1:
            _write(self.memory / "memory.limit_in_bytes", str(memory_bytes))
            with contextlib.suppress(FileNotFoundError):  # absent without swap accounting
                _write(self.memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
            _write(self.pids / "pids.max", str(pids_max))
        else:
            _write(self.memory / "memory.max", str(memory_bytes))
            with contextlib.suppress(FileNotFoundError):
                _write(self.memory / "memory.swap.max", "0")
            _write(self.memory / "pids.max", str(pids_max))
        if cpus > 0 and self.cpu is not None:
            # The kernel's floor is 1 ms per period.
            quota = max(1000, round(cpus * CPU_PERIOD_US))
            if self.layout.version == 1:
                _write(self.cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(self.cpu / "cpu.cfs_quota_us", str(quota))
            else:
                _write(self.cpu / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            self.cpu_quota_us = quota

    def lift_cpu_quota(self) -> None:
        """Remove the CPU quota, which unthrottles the job at once (before a kill). Also for a job
        this object did not create (a dead executor's, in :func:`remove_stale`)."""
        if self.cpu is None:
            return
        with contextlib.suppress(OSError):
            if self.layout.version == 1:
                _write(self.cpu / "cpu.cfs_quota_us", "-1")
            else:
                _write(self.cpu / "cpu.max", f"max {CPU_PERIOD_US}")

    @property
    def procs_files(self) -> list[Path]:
        """The ``cgroup.procs`` files the launcher writes its pid into, before anything else runs."""
        return [d / "cgroup.procs" for d in self._dirs]

    def pids_now(self) -> list[int]:
        try:
            return [int(p) for p in _read(self.pids / "cgroup.procs").split()]
        except FileNotFoundError:
            return []

    def populated(self) -> bool:
        if self.unified is not None:
            try:
                return _kv(_read(self.unified / "cgroup.events")).get("populated", 0) == 1
            except FileNotFoundError:
                return False
        return bool(self.pids_now())

    def kill(self) -> None:
        """SIGKILL every process of the job at once (cgroup.kill), or in a loop where that is missing.
        The CPU quota goes first, so a throttled job runs its exit path now, not at its next period."""
        self.lift_cpu_quota()
        if self.layout.has_kill and self.unified is not None:
            with contextlib.suppress(FileNotFoundError):
                _write(self.unified / "cgroup.kill", "1")
            return
        for pid in self.pids_now():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def wait_empty_sync(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.populated():
            if time.monotonic() > deadline:
                return False
            if not self.layout.has_kill:
                self.kill()
            time.sleep(0.001)
        return True

    async def wait_empty(self, limit_s: float) -> bool:
        """Until no process is left in the job (True), or ``limit_s`` seconds (False). Sleeps on
        inotify for ``cgroup.events`` (the kernel notifies every change of ``populated``) where the job
        has a v2 leaf; polls every millisecond otherwise, re-killing when there is no cgroup.kill."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        watch = _EventsWatch.open(self.unified / "cgroup.events") if self.unified is not None else None
        try:
            while self.populated():
                left = deadline - loop.time()
                if left <= 0:
                    return False
                if not self.layout.has_kill:
                    self.kill()
                if watch is None:
                    await asyncio.sleep(0.001)
                else:
                    await watch.changed(min(left, 0.05))
            return True
        finally:
            if watch is not None:
                watch.close()

    def usage(self) -> dict[str, int]:
        """``cpu_user_us``, ``cpu_system_us``, ``peak_memory``, ``pids_limit_hits`` (0 when unknown)."""
        out = {"cpu_user_us": 0, "cpu_system_us": 0, "peak_memory": 0, "pids_limit_hits": 0}
        with contextlib.suppress(OSError):
            if self.unified is not None:
                cpu = _kv(_read(self.unified / "cpu.stat"))
                out["cpu_user_us"], out["cpu_system_us"] = cpu.get("user_usec", 0), cpu.get("system_usec", 0)
        with contextlib.suppress(OSError, ValueError):
            name = "memory.max_usage_in_bytes" if self.layout.version == 1 else "memory.peak"
            out["peak_memory"] = int(_read(self.memory / name).strip())
        with contextlib.suppress(OSError):
            out["pids_limit_hits"] = _kv(_read(self.pids / "pids.events")).get("max", 0)
        return out

    def oom_kills(self) -> int:
        with contextlib.suppress(OSError):
            if self.layout.version == 1:
                return _kv(_read(self.memory / "memory.oom_control")).get("oom_kill", 0)
            return _kv(_read(self.memory / "memory.events")).get("oom_kill", 0)
        return 0

    def limits_applied(self) -> dict[str, str]:
        """What the kernel reports back for the limits (used by the isolation probe). ``cpu`` is
        ``"<quota> <period>"`` in microseconds (``"max <period>"``: none), or empty without a cpu
        controller."""
        cpu = ""
        if self.cpu is not None:
            if self.layout.version == 1:
                quota = _read(self.cpu / "cpu.cfs_quota_us").strip()
                period = _read(self.cpu / "cpu.cfs_period_us").strip()
                cpu = f"{'max' if quota == '-1' else quota} {period}"
            else:
                cpu = _read(self.cpu / "cpu.max").strip()
        if self.layout.version == 1:
            return {
                "memory": _read(self.memory / "memory.limit_in_bytes").strip(),
                "pids": _read(self.pids / "pids.max").strip(),
                "cpu": cpu,
            }
        return {
            "memory": _read(self.memory / "memory.max").strip(),
            "pids": _read(self.memory / "pids.max").strip(),
            "cpu": cpu,
        }

    def remove(self) -> None:
        for d in self._dirs:
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:  # EBUSY right after the last process exits
                    if exc.errno != errno.EBUSY:
                        break
                    time.sleep(0.002)


def remove_stale(layout: CgroupLayout, instance: str) -> None:
    """Kill and remove every job cgroup an executor instance (a dead one) left behind."""
    bases = {layout.memory_base, layout.pids_base}
    bases |= {b for b in (layout.unified_base, layout.cpu_base) if b is not None}
    for base in bases:
        root = base / "zehanx" / instance
        if not root.is_dir():
            continue
        for job in root.iterdir():
            if job.is_dir():
                cg = JobCgroup(layout, instance, job.name)
                cg.kill()
                cg.wait_empty_sync(2.0)
                cg.remove()
        with contextlib.suppress(OSError):
            root.rmdir()


_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


class _EventsWatch:
    """inotify on one ``cgroup.events`` file, awaited on the event loop (no thread, no sleep-polling)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, path: Path) -> _EventsWatch | None:
        """A watch, or None where inotify is unavailable (the caller polls instead)."""
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
            if fd < 0:
                return None
            if int(libc.inotify_add_watch(fd, os.fsencode(path), _IN_MODIFY)) < 0:
                os.close(fd)
                return None
        except (OSError, AttributeError):
            return None
        return cls(fd)

    async def changed(self, limit_s: float) -> None:
        """Return when the file changed (or after ``limit_s`` seconds), draining pending events."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        loop.add_reader(self.fd, lambda: ready.done() or ready.set_result(None))
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready, limit_s)
        finally:
            loop.remove_reader(self.fd)
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self.fd, 4096):
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
