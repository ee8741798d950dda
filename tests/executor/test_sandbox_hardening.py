"""Security round 2, the sandbox: the seccomp filter (M3), the sandbox uid range (L4), a CPU quota and a
memory budget per executor (M7), and a kill that leaves nothing behind.

Programs that probe the kernel run only inside the sandbox, after the isolation probe has shown it
isolated (``require_isolation``), as in test_attacks.py.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import platform
import socket
import struct
from pathlib import Path

import pydantic
import pytest
from sandbox_helpers import TREE, assert_still_serving, limits, require_isolation, run, spec
from zehanx_executor.domain import ExitReason, Finished, Output
from zehanx_executor.sandbox.local import LocalSandbox
from zehanx_executor.sandbox.seccomp import NEWEST_REVIEWED, build_filter_bpf
from zehanx_executor.service import EnvPolicy, ExecuteInput, Executor, LimitPolicy, LimitRequest, SlotPool
from zehanx_executor.settings import ExecutorSettings
from zehanx_runtime.errors import FailedPrecondition, ResourceExhausted

MiB = 1024 * 1024

# Raw syscalls through ctypes: the numbers are the generic ones (>= 424) or x86-64's socket (41).
SYSCALL_PROGRAM = r"""
import ctypes, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def call(nr, *args):
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return [rc, ctypes.get_errno() if rc < 0 else 0]

params = ctypes.create_string_buffer(120)  # struct io_uring_params
out = {
    'io_uring_setup': call(425, 8, ctypes.addressof(params)),
    'io_uring_enter': call(426, 0, 0, 0, 0, 0, 0),
    'io_uring_register': call(427, 0, 0, 0, 0),
    'open_tree_attr': call(467, -100, 0, 0, 0, 0),
    'getpid': call(39),
}
if os.uname().machine == 'x86_64':
    # socket(AF_VSOCK | 1 << 32, SOCK_STREAM, 0): junk in the upper half of the family must not help.
    out['socket_vsock_high_bits'] = call(41, (1 << 32) | socket.AF_VSOCK, socket.SOCK_STREAM, 0)
families = {'AF_VSOCK': (socket.AF_VSOCK, socket.SOCK_STREAM), 'AF_NETLINK': (socket.AF_NETLINK, socket.SOCK_RAW),
            'AF_PACKET': (socket.AF_PACKET, socket.SOCK_RAW), 'AF_KEY': (15, socket.SOCK_RAW),
            'AF_ALG': (socket.AF_ALG, socket.SOCK_SEQPACKET), 'AF_UNIX': (socket.AF_UNIX, socket.SOCK_STREAM),
            'AF_INET': (socket.AF_INET, socket.SOCK_STREAM), 'AF_INET6': (socket.AF_INET6, socket.SOCK_DGRAM)}
for name, (family, kind) in families.items():
    try:
        socket.socket(family, kind).close()
        out[name] = 'ok'
    except OSError as e:
        out[name] = e.errno
try:
    a, b = socket.socketpair(socket.AF_UNIX)
    a.sendall(b'ping'); out['socketpair_unix'] = b.recv(4).decode()
except OSError as e:
    out['socketpair_unix'] = e.errno
try:
    socket.socketpair(socket.AF_VSOCK); out['socketpair_vsock'] = 'ok'
except OSError as e:
    out['socketpair_vsock'] = e.errno
try:
    out['getaddrinfo'] = sorted({ai[4][0] for ai in socket.getaddrinfo('localhost', 80, flags=socket.AI_ADDRCONFIG)})
except OSError as e:
    out['getaddrinfo'] = 'failed %s' % e
print(json.dumps(out), flush=True)
"""


# -- M3: seccomp -----------------------------------------------------------------------------------


async def test_m3_io_uring_vsock_netlink_packet_alg_are_denied_while_unix_and_inet_work(
    box: LocalSandbox,
) -> None:
    await require_isolation(box)
    r = await run(box, SYSCALL_PROGRAM)
    assert r.finished.reason is ExitReason.COMPLETED, r.stderr[-1500:]
    out = json.loads(r.stdout)
    # io_uring: refused before the kernel sees it (on the old filter io_uring_setup returned an fd).
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert out[name] == [-1, errno.ENOSYS], (name, out[name])
    assert out["open_tree_attr"] == [-1, errno.EPERM]  # unknown to libseccomp: denied by number
    assert out["getpid"][0] == 2  # ordinary syscalls still work (pid 2: under bwrap's init)
    for family in ("AF_VSOCK", "AF_NETLINK", "AF_PACKET", "AF_KEY", "AF_ALG"):
        assert out[family] == errno.EAFNOSUPPORT, (family, out[family])
    if "socket_vsock_high_bits" in out:
        assert out["socket_vsock_high_bits"] == [-1, errno.EAFNOSUPPORT]
    assert out["socketpair_vsock"] == errno.EAFNOSUPPORT
    assert out["AF_UNIX"] == out["AF_INET"] == out["AF_INET6"] == "ok"
    assert out["socketpair_unix"] == "ping"
    # glibc's AI_ADDRCONFIG probe uses netlink; refused, it falls back instead of failing the lookup.
    assert "127.0.0.1" in out["getaddrinfo"], out["getaddrinfo"]
    await assert_still_serving(box)


@pytest.mark.slow
async def test_m3_python_multiprocessing_and_torch_still_work_under_the_filter(box: LocalSandbox) -> None:
    code = """
import multiprocessing as mp, socket, torch
with mp.get_context('fork').Pool(2) as pool:
    squares = pool.map(abs, [-1, -2, -3])
q = mp.get_context('spawn').Queue(); q.put('spawned'); got = q.get(timeout=10)
print(squares, got, float(torch.ones(3).sum()), socket.gethostname())
"""
    r = await run(box, code, wall_time_s=90, memory_bytes=1 << 30, max_processes=64)
    assert r.finished.reason is ExitReason.COMPLETED, r.stderr[-2000:]
    assert r.stdout.strip() == "[1, 2, 3] spawned 3.0 zx-sandbox"


def _run_bpf(program: bytes, nr: int, arch: int, args: tuple[int, ...] = ()) -> int:
    """Evaluate a classic-BPF seccomp program on one ``seccomp_data`` (the opcodes libseccomp emits)."""
    words = [nr & 0xFFFFFFFF, arch, 0, 0]  # nr, arch, instruction pointer (2 words)
    for a in (*args, *([0] * (6 - len(args)))):
        words += [a & 0xFFFFFFFF, (a >> 32) & 0xFFFFFFFF]
    insns = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    acc, pc = 0, 0
    while True:
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            acc = words[k // 4]
        elif code == 0x06:  # ret k
            return k
        elif code == 0x05:  # ja k
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset with k
            taken = {0x15: acc == k, 0x25: acc > k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += jt if taken else jf
        elif code == 0x54:  # and k
            acc &= k
        else:
            raise AssertionError(f"opcode {code:#x} not modelled")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers of x86-64")
def test_m3_filter_denies_syscalls_newer_than_its_review_with_enosys() -> None:
    bpf = build_filter_bpf()
    x86_64 = 0xC000003E
    allow, enosys = 0x7FFF0000, 0x00050000 | errno.ENOSYS
    assert _run_bpf(bpf, 39, x86_64) == allow  # getpid
    assert _run_bpf(bpf, NEWEST_REVIEWED, x86_64) == allow  # file_setattr (kernel 6.17)
    for future in (NEWEST_REVIEWED + 1, 500, 1023):  # whatever a later kernel adds
        assert _run_bpf(bpf, future, x86_64) == enosys, future
    assert _run_bpf(bpf, 425, x86_64) == enosys  # io_uring_setup
    assert _run_bpf(bpf, 41, x86_64, (socket.AF_VSOCK, 1, 0)) == 0x00050000 | errno.EAFNOSUPPORT
    assert _run_bpf(bpf, 41, x86_64, (socket.AF_INET6, 1, 0)) == allow
    assert _run_bpf(bpf, 0x40000000 + 39, x86_64) in (0, 0x80000000)  # x32: killed
    assert _run_bpf(bpf, 20, 0x40000003) in (0, 0x80000000)  # i386: killed


# -- L4: the sandbox uid range ------------------------------------------------------------------------


def test_l4_uid_base_in_systemds_dynamic_user_range_or_the_system_range_is_refused() -> None:
    for uid_base, slots in ((62000, 8), (61180, 8), (65530, 1), (61000, 200), (999, 1)):
        with pytest.raises(pydantic.ValidationError, match="uid_base"):
            ExecutorSettings(uid_base=uid_base, max_concurrent=slots)
    default = ExecutorSettings()
    assert default.uid_base + default.max_concurrent < 61184 and default.uid_base >= 1000
    assert ExecutorSettings(uid_base=60600, max_concurrent=256).uid_base == 60600  # up to 60856
    assert ExecutorSettings(uid_base=100_000).uid_base == 100_000
    # The warm sessions' uids follow the runs' and the probe's: they too stay clear of the ranges.
    assert ExecutorSettings(uid_base=61100, max_concurrent=8, session_slots=75).session_slots == 75  # 61183
    with pytest.raises(pydantic.ValidationError, match="uid_base"):
        ExecutorSettings(uid_base=61100, max_concurrent=8, session_slots=76)  # 61184


# -- M7: CPU quota -------------------------------------------------------------------------------------


def _cpu_quota_on_host(run_: object) -> str:
    """The job's CPU quota as the kernel holds it, read from the host: '<quota> <period>' in µs."""
    cg = run_.cgroup  # type: ignore[attr-defined]
    assert cg.cpu is not None, "this host's layout has no cpu controller"
    if cg.layout.version == 1:
        quota = Path(cg.cpu, "cpu.cfs_quota_us").read_text().strip()
        return f"{quota} {Path(cg.cpu, 'cpu.cfs_period_us').read_text().strip()}"
    return Path(cg.cpu, "cpu.max").read_text().strip()


async def test_m7_a_run_gets_a_cpu_quota_and_two_busy_processes_stay_under_it(box: LocalSandbox) -> None:
    if not box.layout.has_cpu:
        pytest.skip("this host's cgroups have no cpu controller: " + "; ".join(box.layout.notes))
    code = """
import os, time
print('ready', flush=True)
pid = os.fork()
end = time.monotonic() + 2.0
while time.monotonic() < end:
    pass
if pid:
    os.waitpid(pid, 0)
"""
    run_ = box.start(spec(code, cpus=0.25), 4)
    events = run_.events()
    quota_seen, finished = "", None
    try:
        async for event in events:
            if isinstance(event, Output) and b"ready" in event.data and not quota_seen:
                quota_seen = _cpu_quota_on_host(run_)
            if isinstance(event, Finished):
                finished = event
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert quota_seen == "25000 100000"
    assert finished is not None and finished.reason is ExitReason.COMPLETED, finished
    # Two processes busy for 2 s would use about 4 s of CPU on an idle 2-core host, and over 1 s on a
    # loaded one; a quarter of a core allows about 0.6 s. The bound is generous.
    used, wall = finished.usage.cpu_time_s, finished.usage.wall_time_s
    assert wall >= 2.0
    assert used <= 0.4 * wall, f"{used:.2f} s of CPU in {wall:.2f} s with a 0.25-core quota"


def test_m7_the_cpu_quota_defaults_to_half_the_cores_and_a_request_is_capped_at_the_ceiling() -> None:
    s = ExecutorSettings()
    cores = os.cpu_count() or 1
    assert s.resolved_default_cpus() == max(1.0, cores / 2)
    assert s.resolved_max_cpus() == max(1, cores - 1)
    from zehanx_executor.app import limit_policy

    policy = limit_policy(ExecutorSettings(default_cpus=1.5, max_cpus=3))
    assert policy.effective(LimitRequest()).cpus == 1.5
    assert policy.effective(LimitRequest(cpus=0.5)).cpus == 0.5
    assert policy.effective(LimitRequest(cpus=64)).cpus == 3


# -- M7: memory budget ---------------------------------------------------------------------------------


def _executor(box: LocalSandbox, slots: SlotPool) -> Executor:
    policy = LimitPolicy(defaults=limits(), ceilings=limits(memory_bytes=4 << 30))
    return Executor(box, slots=slots, limits=policy, env=EnvPolicy())


def _input(code: str, memory_bytes: int) -> ExecuteInput:
    from zehanx_executor.domain import JobFile

    return ExecuteInput(
        execution_id=f"mem{memory_bytes >> 20}",
        argv=("python", "main.py"),
        files=(JobFile("main.py", code.encode()),),
        limits=LimitRequest(memory_bytes=memory_bytes, wall_time_s=20),
    )


async def test_m7_admission_refuses_memory_over_the_budget_with_a_clear_error(box: LocalSandbox) -> None:
    executor = _executor(box, SlotPool(4, max_waiting=0, wait_timeout_s=5, memory_budget=512 * MiB))
    # More than the whole budget: never admitted, whatever runs.
    with pytest.raises(FailedPrecondition, match="memory budget of 536870912 bytes") as never:
        async with executor.open(_input("print(1)", 1 << 30)):
            pass
    assert never.value.reason == "MEMORY_BUDGET"
    async with executor.open(
        _input("import time; print('ready', flush=True); time.sleep(30)", 384 * MiB)
    ) as a:
        async for event in a.events():
            if isinstance(event, Output):
                break
        assert executor.slots.memory_reserved == 384 * MiB and executor.slots.busy == 1
        # A slot is free, but 384 + 256 MiB do not fit 512 MiB, and nobody may queue here.
        with pytest.raises(ResourceExhausted, match="memory budget") as busy:
            async with executor.open(_input("print(1)", 256 * MiB)):
                pass
        assert busy.value.metadata["memory_reserved_bytes"] == str(384 * MiB)
        a.abort()
    assert executor.slots.memory_reserved == 0 and executor.slots.busy == 0
    async with executor.open(_input("print('fits now')", 256 * MiB)) as b:
        out = [e async for e in b.events()]
    assert isinstance(out[-1], Finished) and out[-1].reason is ExitReason.COMPLETED


async def test_m7_a_run_waiting_for_memory_is_admitted_in_order_when_memory_frees() -> None:
    pool = SlotPool(8, max_waiting=4, wait_timeout_s=10, memory_budget=1000)
    order: list[str] = []

    async def hold(name: str, memory: int, release: asyncio.Event) -> None:
        async with pool.slot(memory):
            order.append(name)
            await release.wait()

    first, big, small = asyncio.Event(), asyncio.Event(), asyncio.Event()
    t1 = asyncio.create_task(hold("first", 700, first))
    await asyncio.sleep(0)
    t2 = asyncio.create_task(hold("big", 600, big))  # waits: 700 + 600 > 1000
    await asyncio.sleep(0)
    t3 = asyncio.create_task(hold("small", 100, small))  # would fit, but is behind "big"
    await asyncio.sleep(0.05)
    assert order == ["first"] and pool.waiting == 2 and pool.memory_reserved == 700
    first.set()
    await asyncio.sleep(0.05)
    assert order == ["first", "big", "small"] and pool.memory_reserved == 700
    big.set()
    small.set()
    await asyncio.gather(t1, t2, t3)
    assert pool.memory_reserved == 0 and pool.busy == 0


async def test_the_slot_gauges_read_the_pool_at_scrape_time() -> None:
    """zx_executor_slots, _slots_busy and _queue_length are the pool's own counts, not kept by hand."""
    from prometheus_client import REGISTRY

    pool = SlotPool(1, max_waiting=2, wait_timeout_s=10)
    Executor(object(), slots=pool, limits=None, env=EnvPolicy())  # type: ignore[arg-type]  # only the pool is read
    gauge = REGISTRY.get_sample_value
    release = asyncio.Event()

    async def hold() -> None:
        async with pool.slot():
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert (
        gauge("zx_executor_slots"),
        gauge("zx_executor_slots_busy"),
        gauge("zx_executor_queue_length"),
    ) == (
        1,
        1,
        2,
    )
    release.set()
    await asyncio.gather(*tasks)
    assert (gauge("zx_executor_slots_busy"), gauge("zx_executor_queue_length")) == (0, 0)


# -- kill ---------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def test_abort_of_a_throttled_4_process_tree_leaves_the_cgroup_empty(box: LocalSandbox) -> None:
    run_ = box.start(spec(TREE, cpus=0.1), 5)  # a tenth of a core: throttled most of each period
    events = run_.events()
    pids: list[int] = []
    emptied = False
    lifted = ""
    finished = None
    try:
        async for event in events:
            if isinstance(event, Output) and b"ready" in event.data and not pids:
                pids = run_.cgroup.pids_now()
                run_.abort()
                if box.layout.has_cpu:
                    lifted = run_.cgroup.limits_applied()["cpu"]
                emptied = await run_.cgroup.wait_empty(10.0)
            if isinstance(event, Finished):
                finished = event
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert len(pids) >= 5  # bwrap's monitor and init, python and its three children
    assert emptied, "processes survived the abort"
    assert [p for p in pids if _alive(p)] == []
    if box.layout.has_cpu:
        assert lifted.startswith("max"), lifted  # the quota went before the kill
    assert finished is not None and finished.reason is ExitReason.CANCELLED
    await assert_still_serving(box, slot=5)


def test_m7_on_pure_cgroup_v2_the_quota_is_cpu_max_and_a_kill_lifts_it_first(tmp_path: Path) -> None:
    """The v2 layout (GPU hosts) on a stand-in cgroupfs: this machine runs cgroup v1."""
    from zehanx_executor.sandbox.cgroups import CgroupLayout

    layout = CgroupLayout(2, tmp_path, tmp_path, tmp_path, True, [], cpu_base=tmp_path)
    cg = layout.job("inst", "run1")
    files = ("memory.max", "memory.swap.max", "pids.max", "cpu.max", "cgroup.kill", "cgroup.procs")
    cg.memory.mkdir(parents=True)
    for name in files:
        (cg.memory / name).write_text("")
    cg.create(256 * MiB, 40, cpus=1.5)
    assert (cg.memory / "cpu.max").read_text() == "150000 100000"
    assert (cg.memory / "memory.max").read_text() == str(256 * MiB)
    assert cg.procs_files == [cg.memory / "cgroup.procs"]
    (cg.memory / "cpu.max").write_text("")  # a plain file, unlike cgroupfs, keeps a longer value's tail
    cg.kill()
    assert (cg.memory / "cpu.max").read_text() == "max 100000"
    assert (cg.memory / "cgroup.kill").read_text() == "1"


async def test_m7_torch_threads_follow_the_runs_cpu_quota_unless_the_request_sets_them(
    box: LocalSandbox,
) -> None:
    # torch starts one thread per host core; under a smaller quota they are throttled in turn.
    code = "import os, torch; print(os.environ.get('OMP_NUM_THREADS'), torch.get_num_threads())"
    quota = await run(box, code, cpus=1.0)
    assert quota.stdout.split() == ["1", "1"], quota.stdout
    own = await run(box, code, cpus=1.0, env={"OMP_NUM_THREADS": "3"})
    assert own.stdout.split()[0] == "3", own.stdout  # torch itself caps its threads at the host's cores
