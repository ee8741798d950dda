"""The seccomp deny list, built with libseccomp (pyseccomp) and exported as BPF for ``bwrap --seccomp``.

Default ALLOW with a deny list (an allow list would break PyTorch and numpy in ways that are hard to
foresee): the syscalls that attack the kernel or other processes get EPERM. ``clone3`` gets ENOSYS so
glibc falls back to ``clone``, whose flags a filter can inspect (``CLONE_NEWUSER`` is denied there).
``ioctl(TIOCSTI)`` is denied (terminal injection). Syscalls of other architectures (x32/i386 on x86-64)
kill the process: libseccomp's bad-arch action.
"""

from __future__ import annotations

import errno
import os
import tempfile

import pyseccomp as sc

# EPERM for these (measured on the dev VM: ptrace → EPERM, unshare(NEWUSER) → EPERM, while
# subprocess.run and multiprocessing.Pool kept working).
DENIED = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "acct",
    "quotactl",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "iopl",
    "ioperm",
    "personality",
    "lookup_dcookie",
    "vhangup",
    "nfsservctl",
    "uselib",
    "_sysctl",
)
CLONE_NEWUSER = 0x10000000
TIOCSTI = 0x5412


def build_filter_bpf() -> bytes:
    """The BPF program, as bytes (build once; write to a fresh fd per job)."""
    f = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a syscall on this architecture
    f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    f.add_rule(sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    with tempfile.TemporaryFile() as tmp:
        f.export_bpf(tmp)
        tmp.seek(0)
        data = tmp.read()
    if not data or len(data) % 8:
        raise RuntimeError("libseccomp exported an empty or malformed BPF program")
    return data


def filter_fd(bpf: bytes) -> int:
    """A readable fd holding ``bpf`` at offset 0 (a memfd), for ``bwrap --seccomp FD``."""
    fd = os.memfd_create("zx-seccomp", os.MFD_CLOEXEC)
    os.write(fd, bpf)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
