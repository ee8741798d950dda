"""One test per attack class of reliability_anchors.md §1.3 (#1-#29), run against the real sandbox.

Each test asserts that the program was contained AND that the sandbox keeps serving afterwards. The
destructive ones (fork bomb, kill(-1), memory bomb, fd exhaustion) first run the isolation probe IN the
sandbox and fail without running the attack when it does not show an own pid namespace, an
unprivileged uid, seccomp and no capabilities.
"""
# Test set-up on the host (plant a file, start a victim process) blocks briefly; that is fine here.
# ruff: noqa: ASYNC220, ASYNC240

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from sandbox_helpers import assert_still_serving, require_isolation, run, sandbox_uid_pids
from zehanx_executor.domain import ExitReason, Metric, Output
from zehanx_executor.sandbox.local import LocalSandbox

SECRET = "zx-test-secret-7f3a9c"


def box_open_files(box: LocalSandbox) -> int:
    from sandbox_helpers import limits

    return limits().open_files


# 1 ----------------------------------------------------------------------------------------------
async def test_01_secrets_in_the_executors_environment_do_not_reach_the_program(
    box: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", SECRET)
    monkeypatch.setenv("ZX_SERVICE_TOKEN", SECRET)
    r = await run(box, "import os; print(dict(os.environ))")
    assert r.finished.reason is ExitReason.COMPLETED
    assert SECRET not in r.stdout and "SUPABASE" not in r.stdout
    await assert_still_serving(box)


# 2 ----------------------------------------------------------------------------------------------
async def test_02_secrets_through_proc_of_other_processes_are_not_visible(
    box: LocalSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUPABASE_SERVICE_KEY", SECRET)
    code = """
import glob
for p in glob.glob('/proc/[0-9]*/environ') + glob.glob('/proc/[0-9]*/cmdline'):
    try:
        print(p, open(p, 'rb').read())
    except OSError as e:
        print(p, 'ERR', e.errno)
"""
    r = await run(box, code)
    assert r.finished.reason is ExitReason.COMPLETED
    assert "/proc/1/environ" in r.stdout  # it did look: only the sandbox's own processes are there
    assert SECRET not in r.stdout
    pids = {line.split("/")[2] for line in r.stdout.splitlines() if line.startswith("/proc/")}
    assert pids <= {"1", "2"}
    await assert_still_serving(box)


# 3 ----------------------------------------------------------------------------------------------
async def test_03_loopback_tcp_to_our_own_services_is_refused(box: LocalSandbox) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        code = f"""
import socket
try:
    socket.create_connection(('127.0.0.1', {port}), 2); print('CONNECTED')
except OSError as e:
    print('refused', e.errno)
"""
        r = await run(box, code)
        assert "CONNECTED" not in r.stdout and "refused 111" in r.stdout  # ECONNREFUSED: its own loopback
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached the host's listener
    finally:
        listener.close()
    await assert_still_serving(box)


# 4 ----------------------------------------------------------------------------------------------
async def test_04_unix_sockets_of_the_host_are_unreachable(box: LocalSandbox) -> None:
    folder = Path(tempfile.mkdtemp(dir="/var/tmp"))
    folder.chmod(0o755)
    path = folder / "s.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    os.chmod(path, 0o777)
    server.listen()
    server.setblocking(False)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind(b"\0zx-test-abstract")
    abstract.listen()
    abstract.setblocking(False)
    try:
        code = f"""
import socket
for target in ({str(path)!r}, b'\\0zx-test-abstract', '/var/run/postgresql/.s.PGSQL.5432'):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(target); print('CONNECTED', target)
    except OSError as e:
        print('failed', e.errno)
"""
        r = await run(box, code)
        assert "CONNECTED" not in r.stdout
        assert r.stdout.count("failed") == 3
        for sock in (server, abstract):
            with pytest.raises(BlockingIOError):
                sock.accept()
    finally:
        server.close()
        abstract.close()
        path.unlink()
        folder.rmdir()
    await assert_still_serving(box)


# 5 ----------------------------------------------------------------------------------------------
async def test_05_egress_and_dns_fail(box: LocalSandbox) -> None:
    code = """
import socket
for host, port in (('1.1.1.1', 53), ('10.0.0.1', 80)):
    try:
        socket.create_connection((host, port), 2); print('CONNECTED')
    except OSError as e:
        print('unreachable', e.errno)
try:
    print(socket.getaddrinfo('example.com', 443)); print('RESOLVED')
except OSError as e:
    print('no dns', e.errno)
# if_nameindex() asks netlink, which the seccomp filter refuses (M3); /proc/net/dev lists the same.
print(sorted(line.split(':')[0].strip() for line in open('/proc/net/dev').readlines()[2:]))
"""
    r = await run(box, code)
    assert "CONNECTED" not in r.stdout and "RESOLVED" not in r.stdout
    assert r.stdout.count("unreachable 101") == 2  # ENETUNREACH
    assert r.stdout.strip().endswith("['lo']")  # no host interfaces
    await assert_still_serving(box)


# 6 ----------------------------------------------------------------------------------------------
async def test_06_fork_bomb_is_capped_by_the_pids_cgroup_and_killed(box: LocalSandbox) -> None:
    await require_isolation(box)
    code = """
import os
print('bomb', flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
    t0 = time.monotonic()
    r = await run(box, code, wall_time_s=3.0, max_processes=32)
    assert r.finished.reason is ExitReason.TIMEOUT
    assert r.finished.usage.pids_limit_hits > 0  # the cgroup refused forks: capped, not run away
    assert time.monotonic() - t0 < 6.0
    assert sandbox_uid_pids() == []
    await assert_still_serving(box)


# 7 ----------------------------------------------------------------------------------------------
async def test_07_memory_bomb_is_oom_killed_at_the_limit(box: LocalSandbox) -> None:
    await require_isolation(box)
    r = await run(box, "b = [b'x' * (1 << 20) for _ in range(10 ** 5)]", memory_bytes=128 << 20)
    assert r.finished.reason is ExitReason.MEMORY
    assert r.finished.usage.max_rss_bytes <= 128 << 20
    await assert_still_serving(box)


# 8 ----------------------------------------------------------------------------------------------
async def test_08_dev_shm_cannot_hold_more_than_the_limits(box: LocalSandbox) -> None:
    code = """
try:
    open('/dev/shm/f', 'wb').write(b'x' * (300 << 20)); print('WROTE')
except OSError as e:
    print('refused', e.errno)
"""
    r = await run(box, code, memory_bytes=512 << 20, file_size_bytes=8 << 20)
    assert "WROTE" not in r.stdout and "refused 27" in r.stdout  # EFBIG at the file-size limit
    assert not os.path.exists("/dev/shm/f")  # it was the sandbox's own /dev/shm
    r = await run(box, "open('/dev/shm/f', 'wb').write(b'x' * (300 << 20))", memory_bytes=64 << 20)
    assert r.finished.reason in (ExitReason.MEMORY, ExitReason.DISK_LIMIT)  # charged to the job's memcg
    await assert_still_serving(box)


# 9 ----------------------------------------------------------------------------------------------
async def test_09_many_files_stop_at_the_job_folder_size(box: LocalSandbox) -> None:
    code = """
import os
written = 0
try:
    for i in range(40):
        with open(f'f{i}', 'wb') as f:
            f.write(b'x' * (2 << 20)); written += 2 << 20
except OSError as e:
    print('stopped', e.errno)
print('written', written)
st = os.statvfs('.')
print('size', st.f_blocks * st.f_frsize)
"""
    r = await run(box, code, disk_bytes=16 << 20)
    assert "stopped 28" in r.stdout  # ENOSPC
    written = int(r.stdout.split("written ")[1].split()[0])
    assert written <= 16 << 20
    assert r.finished.usage.disk_bytes <= 16 << 20
    await assert_still_serving(box)


# 10 ---------------------------------------------------------------------------------------------
async def test_10_one_huge_file_stops_at_the_file_size_limit(box: LocalSandbox) -> None:
    code = """
import os
try:
    with open('big', 'wb') as f:
        for _ in range(64):
            f.write(b'x' * (1 << 20))
except OSError as e:
    print('stopped', e.errno)
print('size', os.path.getsize('big'))
"""
    r = await run(box, code, disk_bytes=64 << 20, file_size_bytes=4 << 20)
    assert "stopped 27" in r.stdout  # EFBIG
    assert int(r.stdout.split("size ")[1]) == 4 << 20
    await assert_still_serving(box)


# 11 ---------------------------------------------------------------------------------------------
async def test_11_infinite_loop_is_killed_at_the_deadline(box: LocalSandbox) -> None:
    t0 = time.monotonic()
    r = await run(box, "while True: pass", wall_time_s=1.5)
    elapsed = time.monotonic() - t0
    assert r.finished.reason is ExitReason.TIMEOUT and r.finished.signal == 9
    assert 1.5 <= elapsed < 4.0
    assert sandbox_uid_pids() == []
    await assert_still_serving(box)


# 12 ---------------------------------------------------------------------------------------------
async def test_12_a_program_ignoring_sigterm_is_still_killed(box: LocalSandbox) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True); time.sleep(1e9)"
    r = await run(box, code, wall_time_s=1.0)
    assert r.finished.reason is ExitReason.TIMEOUT
    assert sandbox_uid_pids() == []
    await assert_still_serving(box)


# 13 ---------------------------------------------------------------------------------------------
async def test_13_a_daemon_does_not_outlive_its_job(box: LocalSandbox) -> None:
    code = """
import os, time
if os.fork():
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
time.sleep(1e9)
"""
    t0 = time.monotonic()
    r = await run(box, code, wall_time_s=30)
    assert time.monotonic() - t0 < 5.0  # the run ended when the main process did: no 30 s hang
    assert r.finished.reason is ExitReason.COMPLETED
    assert sandbox_uid_pids() == []  # the daemon is gone
    await assert_still_serving(box)


# 14 ---------------------------------------------------------------------------------------------
async def test_14_an_output_flood_is_cut_at_the_cap(box: LocalSandbox) -> None:
    r = await run(
        box, "import sys\n[sys.stdout.write('A' * (1 << 20)) for _ in range(50)]", output_bytes=256 << 10
    )
    assert r.finished.reason is ExitReason.OUTPUT_LIMIT
    assert sum(len(e.data) for e in r.events if isinstance(e, Output)) <= 256 << 10
    await assert_still_serving(box)


# 15 ---------------------------------------------------------------------------------------------
async def test_15_signals_cannot_reach_host_processes_even_kill_minus_one(box: LocalSandbox) -> None:
    await require_isolation(box)
    victim = subprocess.Popen(["sleep", "60"])
    try:
        code = f"""
import os, signal
try:
    os.kill({victim.pid}, signal.SIGKILL); print('KILLED HOST')
except OSError as e:
    print('host pid', e.errno)
os.kill(-1, signal.SIGKILL)
print('survived kill(-1)')
"""
        r = await run(box, code)
        assert "KILLED HOST" not in r.stdout and "host pid 3" in r.stdout  # ESRCH: not visible
        assert victim.poll() is None  # the host process is alive
        assert os.getpid() > 0 and sandbox_uid_pids() == []
    finally:
        victim.kill()
        victim.wait()
    await assert_still_serving(box)


# 16 ---------------------------------------------------------------------------------------------
async def test_16_ptrace_and_process_vm_are_denied(box: LocalSandbox) -> None:
    host = subprocess.Popen(["sleep", "60"])
    try:
        code = f"""
import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
print('host', libc.ptrace(0x4206, {host.pid}, 0, 0), ctypes.get_errno())
child = os.fork()
if child == 0:
    time.sleep(30); os._exit(0)
print('sibling', libc.ptrace(16, child, 0, 0), ctypes.get_errno())
print('vm', libc.process_vm_readv(child, None, 0, None, 0, 0), ctypes.get_errno())
os.kill(child, 9)
"""
        r = await run(box, code)
        lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
        assert lines["host"] == "-1 1"  # EPERM (seccomp)
        assert lines["sibling"] == "-1 1"  # even inside its own sandbox
        assert lines["vm"] == "-1 1"
        assert host.poll() is None
    finally:
        host.kill()
        host.wait()
    await assert_still_serving(box)


# 17 ---------------------------------------------------------------------------------------------
async def test_17_writes_outside_the_job_folder_fail_including_the_shared_runtime(box: LocalSandbox) -> None:
    site = next(p for p in sys.path if p.endswith("site-packages"))
    targets = [
        "/usr/pwned",
        "/etc/pwned",
        "/pwned",
        "/zx/runtime/pwned.py",
        f"{site}/sitecustomize.py",
        f"{sys.base_prefix}/lib/python3.11/pwned.py",
        "/work/main/.venv/pwned",
    ]
    code = f"""
for t in {targets!r}:
    try:
        open(t, 'w').write('x'); print('WROTE', t)
    except OSError as e:
        print('refused', e.errno, t)
open('/tmp/ok', 'w').write('private tmp is fine'); print('tmp ok')
open('/job/ok', 'w').write('job folder is fine'); print('job ok')
"""
    r = await run(box, code)
    assert "WROTE" not in r.stdout
    assert r.stdout.count("refused") == len(targets)
    assert "tmp ok" in r.stdout and "job ok" in r.stdout
    for t in targets[:-1]:
        assert not os.path.exists(t.replace("/zx/runtime", str(box.config.runtime_dir)))
    await assert_still_serving(box)


# 18 ---------------------------------------------------------------------------------------------
async def test_18_host_secrets_are_not_readable(box: LocalSandbox) -> None:
    secret_file = Path("/root/.zx-test-secret")
    secret_file.write_text(SECRET)
    try:
        code = """
for p in ('/etc/shadow', '/root/.zx-test-secret', '/root/.npmrc', '/root/.zehanx/service-token',
          '/work/main/.git/config', '/proc/1/environ'):
    try:
        print(p, open(p).read()[:200])
    except OSError as e:
        print(p, 'ERR', e.errno)
"""
        r = await run(box, code)
        assert SECRET not in r.stdout
        assert "/etc/shadow ERR 2" in r.stdout and "/root/.zx-test-secret ERR 2" in r.stdout
        assert "/work/main/.git/config ERR 2" in r.stdout
        assert "root:" not in r.stdout
    finally:
        secret_file.unlink()
    await assert_still_serving(box)


# 19 ---------------------------------------------------------------------------------------------
async def test_19_other_jobs_folders_are_invisible(box: LocalSandbox) -> None:
    holder_code = (
        f"open('secret.txt', 'w').write({SECRET!r}); print('ready', flush=True); import time; time.sleep(30)"
    )
    from sandbox_helpers import spec

    holder = box.start(spec(holder_code), 5).events()
    try:
        async for event in holder:
            if isinstance(event, Output) and b"ready" in event.data:
                break
        jobs_root = str(box.jobs_root)
        code = f"""
import glob, os
found = []
for root, dirs, files in os.walk('/'):  # every folder the sandbox can see, but the kernel's and the libraries'
    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys', '/dev', '/usr')
               and d != 'site-packages']
    found += [os.path.join(root, f) for f in files if f == 'secret.txt']
print(found)
print([p for p in glob.glob({jobs_root!r} + '/**', recursive=True) if os.path.exists(p)])  # glob invents 'X/' for a missing X
print(os.path.exists({str(box.config.work_dir)!r}))
"""
        r = await run(box, code, slot=6)
        assert SECRET not in r.stdout, r.stderr
        assert r.finished.reason.value == "completed", (r.finished, r.stderr[-2000:])
        assert r.stdout.splitlines() == ["[]", "[]", "False"]
    finally:
        await holder.aclose()  # type: ignore[attr-defined]
    await assert_still_serving(box)


# 20 ---------------------------------------------------------------------------------------------
async def test_20_symlinks_planted_for_the_collector_are_not_followed(box: LocalSandbox) -> None:
    code = """
import os
os.symlink('/etc/shadow', 'metrics.json')
os.symlink('/etc', 'out')
os.symlink('/root/.zx-test-secret', 'model.safetensors')
open('real.json', 'w').write('{}')
"""
    Path("/root/.zx-test-secret").write_text(SECRET)
    try:
        r = await run(box, code, collect=("*.json", "out/**", "*.safetensors"))
    finally:
        Path("/root/.zx-test-secret").unlink()
    assert set(r.files) == {"real.json"}
    assert r.finished.usage.files_rejected >= 2
    assert all(SECRET.encode() not in e.data and b"root:" not in e.data for e in r.file_events)
    await assert_still_serving(box)


# 21 ---------------------------------------------------------------------------------------------
async def test_21_hardlinks_planted_for_the_collector_are_refused(box: LocalSandbox) -> None:
    code = """
import os
try:
    os.link('/etc/shadow', 'stolen'); print('LINKED')
except OSError as e:
    print('link refused', e.errno)
open('a.bin', 'w').write('mine')
os.link('a.bin', 'b.bin')
"""
    r = await run(box, code, collect=("*",))
    assert "LINKED" not in r.stdout and "link refused 2" in r.stdout  # /etc/shadow is not even there
    assert "a.bin" not in r.files and "b.bin" not in r.files  # st_nlink == 2: refused
    assert r.finished.usage.files_rejected >= 2
    await assert_still_serving(box)


# 22 ---------------------------------------------------------------------------------------------
async def test_22_read_only_binds_cannot_be_remounted(box: LocalSandbox) -> None:
    code = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print(libc.mount(None, b'/usr', None, 0x20 | 0x1000, None), ctypes.get_errno())
print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())
try:
    open('/usr/pwned', 'w'); print('WROTE')
except OSError as e:
    print('refused', e.errno)
"""
    r = await run(box, code)
    assert r.stdout.splitlines()[:2] == ["-1 1", "-1 1"]  # EPERM
    assert "WROTE" not in r.stdout
    await assert_still_serving(box)


# 23 ---------------------------------------------------------------------------------------------
async def test_23_nested_user_namespaces_are_refused(box: LocalSandbox) -> None:
    code = """
import ctypes, subprocess
libc = ctypes.CDLL(None, use_errno=True)
print(libc.unshare(0x10000000), ctypes.get_errno())
print(libc.unshare(0x20000), ctypes.get_errno())
r = subprocess.run(['unshare', '-U', 'true'], capture_output=True)
print('unshare-cmd', r.returncode)
"""
    r = await run(box, code)
    lines = r.stdout.splitlines()
    assert lines[0] == "-1 1" and lines[1] == "-1 1"
    assert lines[2] != "unshare-cmd 0"
    await assert_still_serving(box)


# 24 ---------------------------------------------------------------------------------------------
async def test_24_the_program_cannot_leave_its_cgroup(box: LocalSandbox) -> None:
    code = """
import os
for p in ('/sys/fs/cgroup/pids/cgroup.procs', '/sys/fs/cgroup/cgroup.procs', '/sys/fs/cgroup/unified/cgroup.procs'):
    try:
        open(p, 'w').write(str(os.getpid())); print('MOVED', p)
    except OSError as e:
        print('refused', e.errno)
print(open('/proc/self/cgroup').read().strip().splitlines()[-1])
print(os.path.exists('/sys'))
"""
    r = await run(box, code)
    assert "MOVED" not in r.stdout and r.stdout.count("refused 2") == 3
    assert r.stdout.splitlines()[-1] == "False"
    await assert_still_serving(box)


# 25 ---------------------------------------------------------------------------------------------
async def test_25_setuid_binaries_give_no_privilege(box: LocalSandbox) -> None:
    code = """
import os, subprocess
setuid = [p for p in ('/usr/bin/su', '/usr/bin/mount', '/usr/bin/passwd', '/usr/bin/newgrp')
          if os.path.exists(p) and os.stat(p).st_mode & 0o4000]
print('setuid binaries', setuid)
for b in setuid:
    r = subprocess.run([b, '--help'] if b.endswith('mount') else [b, 'root', '-c', 'id'], capture_output=True, text=True, timeout=10)
    print(b, r.returncode, 'uid=0' in r.stdout)
print('nnp', [l for l in open('/proc/self/status') if l.startswith('NoNewPrivs')][0].split()[1])
r = subprocess.run(['mount', '-t', 'tmpfs', 'x', '/tmp'], capture_output=True, text=True)
print('mount', r.returncode)
"""
    r = await run(box, code)
    assert "setuid binaries ['/" in r.stdout  # there were setuid-root binaries to try
    assert "True" not in r.stdout  # none of them ran anything as uid 0
    assert "nnp 1" in r.stdout
    assert "\nmount 0\n" not in r.stdout  # mounting a tmpfs over /tmp is refused
    await assert_still_serving(box)


# 26 ---------------------------------------------------------------------------------------------
async def test_26_no_descriptor_of_the_executor_is_inherited(box: LocalSandbox) -> None:
    fd = os.open("/etc/hostname", os.O_RDONLY)
    os.set_inheritable(fd, True)  # even one the executor forgot to mark close-on-exec
    try:
        code = "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))"
        r = await run(box, code)
        fds = json.loads(r.stdout)
        assert fds[:3] == [0, 1, 2] and len(fds) == 4  # the 4th is listdir's own
    finally:
        os.close(fd)
    await assert_still_serving(box)


# 27 ---------------------------------------------------------------------------------------------
async def test_27_fd_exhaustion_stops_at_rlimit_nofile(box: LocalSandbox) -> None:
    await require_isolation(box)
    before = len(os.listdir("/proc/self/fd"))
    code = """
l = []
try:
    while True:
        l.append(open('/dev/null'))
except OSError as e:
    print('stopped', e.errno, len(l))
"""
    r = await run(box, code)
    errno_, count = r.stdout.split()[1:]
    assert errno_ == "24"  # EMFILE
    assert int(count) <= box_open_files(box)
    assert len(os.listdir("/proc/self/fd")) <= before + 2  # the executor itself is untouched
    await assert_still_serving(box)


# 28 ---------------------------------------------------------------------------------------------
async def test_28_tiocsti_terminal_injection_is_denied(box: LocalSandbox) -> None:
    code = """
import fcntl, os, termios
master, slave = os.openpty()
try:
    fcntl.ioctl(slave, termios.TIOCSTI, b'x'); print('INJECTED')
except OSError as e:
    print('refused', e.errno)
"""
    r = await run(box, code)
    assert "INJECTED" not in r.stdout and "refused 1" in r.stdout  # EPERM from seccomp
    await assert_still_serving(box)


# 29 ---------------------------------------------------------------------------------------------
async def test_29_forged_and_oversized_metric_lines_are_dropped(box: LocalSandbox) -> None:
    code = r"""
import sys
print('@@zx:' + '{' * 100000)                       # nesting bomb, over 64 KiB
print('@@zx:{"a": "' + 'x' * 70000 + '"}')          # oversized
print('@@zx:[1, 2, 3]')                             # not an object
print('@@zx:{"loss": NaN}')                         # not finite
print('@@zx:{"deep": {"a": {"b": {"c": {"d": 1}}}}}')  # nested too deep
print('@@zx:not json')
print('@@zx:{"ok": 1}', file=sys.stderr)            # stderr is not the metric channel
for i in range(1000):                               # a flood: over the 200/s rate
    print('@@zx:{"step": %d}' % i)
print('@@zx:{"v": 1, "kind": "metric", "acc": 0.5}')
"""
    r = await run(box, code)
    assert r.finished.reason is ExitReason.COMPLETED
    metrics = [e.payload for e in r.events if isinstance(e, Metric)]
    assert all(set(m) <= {"step", "v", "kind", "acc"} for m in metrics)  # nothing malformed got through
    assert 150 <= len(metrics) <= 400  # the rate cap held (burst of 200, refilled at 200/s)
    assert r.finished.usage.metric_lines_dropped >= 600 + 6
    assert "@@zx:" not in r.stdout  # metric lines never leak into the output stream
    assert '@@zx:{"ok": 1}' in r.stderr
    await assert_still_serving(box)


async def test_no_sandbox_process_or_job_folder_is_left_behind(box: LocalSandbox) -> None:
    await asyncio.sleep(0)
    assert sandbox_uid_pids() == []
    with contextlib.suppress(FileNotFoundError):
        assert list(box.jobs_root.iterdir()) == []
