"""What this host can do for the local sandbox, measured rather than assumed.

``probe()`` checks each ingredient of the recipe and returns a :class:`Capabilities` whose ``missing``
list names, in words, what stops the host from sandboxing. The executor refuses to start when it is not
empty. ``ISOLATION_PROBE`` is a program run INSIDE the sandbox; ``isolation_problems`` reads its output
and says what is wrong (it must run in its own pid namespace as an unprivileged uid) before any
destructive test program runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from zehanx_executor.sandbox.cgroups import CgroupError, CgroupLayout

TOOLS = ("bwrap", "setpriv", "prlimit", "unshare", "mount", "sh")
INSTALL_HINT = "run `make setup` (scripts/install_sandbox_deps.sh) as root"


@dataclass
class Capabilities:
    """The outcome of :func:`probe`. ``ok`` is true when ``missing`` is empty."""

    tools: dict[str, str] = field(default_factory=dict)
    root: bool = False
    user_namespaces: bool = False
    unprivileged_bwrap: bool = False
    cgroups: CgroupLayout | None = None
    nosymfollow_tmpfs: bool = False
    seccomp: bool = False
    gpu_devices: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing

    def summary(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "missing": self.missing,
            "cgroup_version": self.cgroups.version if self.cgroups else None,
            "cgroup_kill": self.cgroups.has_kill if self.cgroups else False,
            "cgroup_cpu_quota": self.cgroups.has_cpu if self.cgroups else False,
            "gpu_devices": self.gpu_devices,
            "notes": self.notes,
        }


def world_traversable(path: Path) -> bool:
    """Can any uid reach ``path`` (every directory from / to it has o+x)?"""
    p = path.resolve()
    for d in [p, *p.parents]:
        try:
            if not os.stat(d).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
    return True


def gpu_device_nodes() -> list[str]:
    """The host's NVIDIA device nodes (character devices under /dev named nvidia*)."""
    out = []
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir("/dev")):
            if not name.startswith("nvidia"):
                continue
            path = f"/dev/{name}"
            with contextlib.suppress(OSError):
                mode = os.stat(path).st_mode
                if stat.S_ISCHR(mode) or (stat.S_ISDIR(mode) and name == "nvidia-caps"):
                    out.append(path)
    return out


def probe(*, work_dir: Path, probe_uid: int, prepare_cgroups: bool = True) -> Capabilities:
    caps = Capabilities()
    for tool in TOOLS:
        found = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
        if found:
            caps.tools[tool] = found
        else:
            pkg = {"bwrap": "bubblewrap", "sh": "dash"}.get(tool, "util-linux")
            caps.missing.append(f"{tool} is not installed (package {pkg}; {INSTALL_HINT})")

    caps.root = os.geteuid() == 0
    if not caps.root:
        caps.missing.append(
            "the executor must start as root: it mounts each job's size-capped tmpfs, creates cgroups and "
            "then drops the program to an unprivileged uid (the program itself never runs as root)"
        )

    try:
        max_ns = int(Path("/proc/sys/user/max_user_namespaces").read_text())
    except (OSError, ValueError):
        max_ns = 0
    caps.user_namespaces = max_ns > 0
    if not caps.user_namespaces:
        caps.missing.append("user namespaces are disabled (sysctl user.max_user_namespaces = 0)")

    if caps.root and "bwrap" in caps.tools and "setpriv" in caps.tools and caps.user_namespaces:
        cmd = [
            caps.tools["setpriv"],
            f"--reuid={probe_uid}",
            f"--regid={probe_uid}",
            "--clear-groups",
            "--",
            caps.tools["bwrap"],
            "--unshare-user",
            "--unshare-pid",
            "--unshare-net",
            "--disable-userns",
            "--die-with-parent",
            "--ro-bind",
            "/usr",
            "/usr",
            *_lib_links(),
            "--proc",
            "/proc",
            "--",
            "/usr/bin/id",
            "-u",
        ]
        try:
            r = subprocess.run(
                cmd, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=10, check=False
            )
            caps.unprivileged_bwrap = r.returncode == 0 and r.stdout.strip() == str(probe_uid)
            if not caps.unprivileged_bwrap:
                caps.missing.append(
                    f"bwrap cannot create namespaces as the unprivileged uid {probe_uid}: "
                    f"rc={r.returncode} {r.stderr.strip()[:200]}"
                )
        except (OSError, subprocess.TimeoutExpired) as exc:
            caps.missing.append(f"bwrap probe failed: {exc}")

    if caps.root:
        try:
            caps.cgroups = CgroupLayout.detect(prepare=prepare_cgroups)
            caps.notes += caps.cgroups.notes
            for base in {caps.cgroups.memory_base, caps.cgroups.pids_base}:
                if not os.access(base, os.W_OK):
                    caps.missing.append(f"cannot create cgroups under {base} (read-only cgroupfs?)")
        except (CgroupError, OSError) as exc:
            caps.missing.append(f"cgroups: {exc}")

    if caps.root:
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            from zehanx_executor.sandbox.jobdir import mount_tmpfs, unmount

            with tempfile.TemporaryDirectory(dir=work_dir, prefix=".probe-") as tmp:
                mount_tmpfs(Path(tmp), size_bytes=1 << 20, uid=0, gid=0)
                try:
                    os.symlink("/etc/hostname", os.path.join(tmp, "link"))
                    try:
                        open(os.path.join(tmp, "link")).close()
                        caps.missing.append("tmpfs ignores nosymfollow (kernel < 5.10?)")
                    except OSError:
                        caps.nosymfollow_tmpfs = True
                finally:
                    unmount(Path(tmp))
        except OSError as exc:
            caps.missing.append(f"cannot mount a nosymfollow tmpfs in {work_dir}: {exc}")
        if not world_traversable(work_dir):
            caps.missing.append(
                f"work_dir {work_dir} is not reachable by the sandbox uids (a parent lacks o+x); "
                "set ZX_EXECUTOR_WORK_DIR to a path like /var/lib/zehanx/executor"
            )

    try:
        from zehanx_executor.sandbox.seccomp import build_filter_bpf

        build_filter_bpf()
        caps.seccomp = True
    except Exception as exc:
        caps.missing.append(f"seccomp: cannot build the filter with libseccomp ({exc}); install libseccomp2")

    caps.gpu_devices = gpu_device_nodes()
    return caps


def _lib_links() -> list[str]:
    """bwrap arguments recreating /bin, /lib, ... as on the host (symlinks into /usr, or directories)."""
    out: list[str] = []
    for name in ("bin", "sbin", "lib", "lib64", "lib32", "libx32"):
        path = f"/{name}"
        if os.path.islink(path):
            out += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            out += ["--ro-bind", path, path]
    return out


lib_links = _lib_links

# Run inside the sandbox before destructive tests: prints one JSON line describing where it runs.
ISOLATION_PROBE = r"""
import json, os
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
try:
    init = open('/proc/1/cmdline', 'rb').read().split(b'\0')[0].decode(errors='replace')
except OSError as e:
    init = 'unreadable: %s' % e
status = dict(l.split(':', 1) for l in open('/proc/self/status').read().splitlines() if ':' in l)
print(json.dumps({
    'uid': os.getuid(), 'euid': os.geteuid(), 'gid': os.getgid(), 'pid': os.getpid(),
    'visible_pids': pids, 'init': init, 'capeff': status.get('CapEff', '').strip(),
    'no_new_privs': status.get('NoNewPrivs', '').strip(), 'seccomp': status.get('Seccomp', '').strip(),
    'hostname': os.uname().nodename,
}), flush=True)
"""


def isolation_problems(probe_stdout: str, *, host_pid_max_seen: int | None = None) -> list[str]:
    """What is wrong with the sandbox according to ``ISOLATION_PROBE``'s output (empty: isolated)."""
    try:
        line = next(ln for ln in probe_stdout.splitlines() if ln.startswith("{"))
        info = json.loads(line)
    except (StopIteration, ValueError):
        return [f"the probe printed no JSON: {probe_stdout[:200]!r}"]
    problems = []
    if info["uid"] == 0 or info["euid"] == 0:
        problems.append("the program runs as uid 0")
    if info["pid"] > 100 or len(info["visible_pids"]) > 20:
        problems.append(f"not in its own pid namespace (pid {info['pid']}, {len(info['visible_pids'])} pids)")
    if "bwrap" not in info["init"] and info["pid"] != 1:
        problems.append(f"pid 1 is {info['init']!r}, not the sandbox's init")
    if int(info["capeff"] or "0", 16) != 0:
        problems.append(f"the program holds capabilities (CapEff {info['capeff']})")
    if info["no_new_privs"] != "1":
        problems.append("no_new_privs is not set")
    if info["seccomp"] != "2":
        problems.append("no seccomp filter is loaded")
    return problems


def python_info() -> dict[str, str]:
    return {"executable": sys.executable, "prefix": sys.prefix, "base_prefix": sys.base_prefix}
