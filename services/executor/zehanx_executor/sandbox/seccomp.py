"""The seccomp filter, built with libseccomp (pyseccomp) and exported as BPF for ``bwrap --seccomp``.

Default ALLOW with a deny list, plus two guards that make it age better (finding M3):

* ``socket(2)`` and ``socketpair(2)`` only for AF_UNIX, AF_INET and AF_INET6. Every other family
  (AF_VSOCK, which ``--unshare-net`` does not confine and which reaches the hypervisor on a VM host;
  AF_NETLINK, AF_PACKET, AF_KEY, AF_ALG, ...) gets EAFNOSUPPORT, what a kernel without that family
  answers, so libraries degrade instead of dying: glibc's ``getaddrinfo``/``AI_ADDRCONFIG`` probe of
  netlink falls back to "both IPv4 and IPv6 present", ``getifaddrs`` fails with an error.
* Syscalls newer than the newest this list was reviewed against (``NEWEST_REVIEWED``) get ENOSYS, as
  on an older kernel, so a syscall added to a future kernel is denied until someone reviews it rather
  than allowed by default (runc and Docker answer unknown syscalls the same way). It is a few
  hand-written BPF instructions put in front of libseccomp's program.

Why not a full allow-list: the programs are arbitrary PyTorch/numpy training code, with CUDA's driver
on GPU hosts, and a missing entry fails a user's job in ways that are hard to diagnose; the GPU path
cannot be exercised on every host the list would be checked on. The deny list plus the ENOSYS guard for
unknown syscalls keeps the default-allow part to the syscalls that existed and were reviewed in
kernel 6.17.

io_uring gets ENOSYS (what a kernel built without it answers; every io_uring user has that fallback).
``clone3`` gets ENOSYS so glibc falls back to ``clone``, whose flags a filter can inspect
(``CLONE_NEWUSER`` is denied there). ``ioctl(TIOCSTI)`` is denied (terminal injection). The rest of the
list gets EPERM. Syscalls of other architectures (x32/i386 on x86-64) kill the process: libseccomp's
bad-arch action.
"""

from __future__ import annotations

import errno
import os
import platform
import socket
import struct
import tempfile

import pyseccomp as sc

# EPERM for these (measured on the dev VM: ptrace → EPERM, unshare(NEWUSER) → EPERM, while
# subprocess.run and multiprocessing.Pool kept working).
DENIED = (
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",  # acts on another process's memory (ptrace access mode)
    "pidfd_getfd",  # takes a descriptor out of another process (ptrace access mode)
    "kcmp",  # compares other processes' kernel objects (ptrace access mode)
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
    "fanotify_init",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "acct",
    "quotactl",
    "quotactl_fd",
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
# Syscalls newer than this libseccomp knows by name, by number. From 424 on, the numbers are the same on
# every architecture but alpha and mips ("generic" numbering), so they hold on x86-64 and aarch64.
DENIED_BY_NUMBER = {
    "open_tree_attr": 467,  # kernel 6.15: open_tree with mount attributes
}
# ENOSYS: a kernel without io_uring answers this, and every io_uring user falls back on it.
DENIED_ENOSYS = ("io_uring_setup", "io_uring_enter", "io_uring_register")
# The newest syscall this list was reviewed against: file_setattr (469, kernel 6.17). Anything newer gets
# ENOSYS until reviewed.
NEWEST_REVIEWED = 469
SOCKET_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6)
# Families are small integers (AF_MAX is 46 in kernel 6.x); every value from here up is refused by one
# 64-bit comparison, which also catches junk in the argument's upper bits.
AF_LIMIT = 64
CLONE_NEWUSER = 0x10000000
TIOCSTI = 0x5412

# AUDIT_ARCH_* of the architectures whose syscall numbers past 424 are the generic ones.
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_SYSCALL_BIT = 0x40000000
_SECCOMP_RET_ERRNO = 0x00050000
# Classic BPF opcodes (linux/bpf_common.h).
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JGT_K = 0x25
_RET_K = 0x06


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def _newer_syscalls_prefix(machine: str) -> bytes:
    """BPF run before libseccomp's program: ENOSYS for native syscalls numbered above
    ``NEWEST_REVIEWED``; everything else falls through to libseccomp's program (which does its own
    architecture check). Jumps in classic BPF are relative, so prepending does not disturb it."""
    arch = _AUDIT_ARCH.get(machine)
    if arch is None:
        return b""
    # seccomp_data: int nr at offset 0, u32 arch at offset 4.
    prog = [
        _insn(_LD_W_ABS, 0, 0, 4),
        _insn(_JEQ_K, 0, 4, arch),  # another architecture: to libseccomp (bad-arch action)
        _insn(_LD_W_ABS, 0, 0, 0),
        _insn(_JGE_K, 2, 0, _X32_SYSCALL_BIT),  # x32 on x86-64: to libseccomp (bad-arch action)
        _insn(_JGT_K, 0, 1, NEWEST_REVIEWED),
        _insn(_RET_K, 0, 0, _SECCOMP_RET_ERRNO | errno.ENOSYS),
    ]
    return b"".join(prog)


def build_filter_bpf() -> bytes:
    """The BPF program, as bytes (build once; write to a fresh fd per job)."""
    f = sc.SyscallFilter(sc.ALLOW)
    for name in DENIED:
        try:
            f.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a syscall on this architecture
    for name in DENIED_ENOSYS:
        f.add_rule(sc.ERRNO(errno.ENOSYS), name)
    if platform.machine() in _AUDIT_ARCH:
        for number in DENIED_BY_NUMBER.values():
            f.add_rule(sc.ERRNO(errno.EPERM), number)
    for call in ("socket", "socketpair"):
        for family in range(AF_LIMIT):
            if family not in SOCKET_FAMILIES:
                f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), call, sc.Arg(0, sc.EQ, family))
        f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), call, sc.Arg(0, sc.GE, AF_LIMIT))
    f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    f.add_rule(sc.ERRNO(errno.EPERM), "ioctl", sc.Arg(1, sc.MASKED_EQ, 0xFFFFFFFF, TIOCSTI))
    with tempfile.TemporaryFile() as tmp:
        f.export_bpf(tmp)
        tmp.seek(0)
        data = tmp.read()
    if not data or len(data) % 8:
        raise RuntimeError("libseccomp exported an empty or malformed BPF program")
    return _newer_syscalls_prefix(platform.machine()) + data


def filter_fd(bpf: bytes) -> int:
    """A readable fd holding ``bpf`` at offset 0 (a memfd), for ``bwrap --seccomp FD``."""
    fd = os.memfd_create("zx-seccomp", os.MFD_CLOEXEC)
    os.write(fd, bpf)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
