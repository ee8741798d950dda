"""The attack classes of test_attacks.py, run inside a warm session through the Session RPC.

A session's process is launched like a run but lives on and reads calls from a stdin pipe, so the attacks
come as calls: the process execs each call's code and answers with what it printed. Many attacks run
one after the other in ONE process (it keeps its state between calls: what one call set up, the next
could use). As in test_attacks.py, the destructive ones (fork bomb, kill(-1)) run only in a session whose
first call, the isolation probe, has just shown it is isolated; otherwise the test fails without running
them.
"""
# Test set-up on the host (a listener, a planted file, a victim process) blocks briefly; fine here.
# ruff: noqa: ASYNC220, ASYNC240

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from session_helpers import Client, Server, open_session, serving, session_pids, start
from zehanx.executor.v1 import executor_service_pb2 as pb
from zehanx_executor.sandbox.probe import ISOLATION_PROBE, Capabilities, isolation_problems

pytestmark = pytest.mark.asyncio(loop_scope="module")

WORK_DIR = "/var/tmp/zx-executor-session-attack-tests"
SECRET = "zx-session-secret-5d21"

# Runs each call's code (JSON {"code": ...}) and answers {"out": what it printed}.
ATTACKER = r"""
import contextlib, io, json, sys
for line in sys.stdin:
    code = json.loads(line)['code']
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(code, {})
    except BaseException as e:
        buf.write(f'RAISED {e!r}')
    sys.__stdout__.write(json.dumps({'out': buf.getvalue()}) + '\n')
    sys.__stdout__.flush()
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(caps: Capabilities) -> AsyncIterator[Server]:
    async with serving(WORK_DIR) as s:
        yield s


class Attacker:
    def __init__(self, client: Client) -> None:
        self.client, self.calls = client, 0

    async def run(self, code: str) -> str:
        self.calls += 1
        self.client.send(self.calls, json.dumps({"code": code}).encode())
        reply = await self.client.reply()
        assert reply.call_id == self.calls
        return str(json.loads(reply.payload)["out"])


async def isolated_session(server: Server, **kw: object) -> Attacker:
    """A session whose first call, the isolation probe, shows an own pid namespace, an unprivileged uid,
    seccomp and no capabilities; fails (does not skip) otherwise."""
    client = open_session(server, start(ATTACKER, **kw))  # type: ignore[arg-type]
    await client.ready()
    attacker = Attacker(client)
    out = await attacker.run(ISOLATION_PROBE)
    problems = isolation_problems(out)
    if problems:
        client.call.cancel()
        pytest.fail(f"isolation probe failed in the session, attacks NOT run: {problems} {out[:300]}")
    return attacker


async def test_one_warm_process_stays_contained_call_after_call(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZX_SERVICE_TOKEN", SECRET)  # in the executor's environment, never the sandbox's
    secret_file = Path("/root/.zx-session-test-secret")
    secret_file.write_text(SECRET)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    fd = os.open("/etc/hostname", os.O_RDONLY)
    os.set_inheritable(fd, True)  # a descriptor the executor forgot to mark close-on-exec
    try:
        a = await isolated_session(server)
        out = await a.run("import os; print(dict(os.environ))")  # 1: secrets in the environment
        assert SECRET not in out and "SERVICE_TOKEN" not in out
        # 3, 5: loopback to the host's services, egress, DNS
        out = await a.run(f"""
import socket
for host, port in (('127.0.0.1', {port}), ('1.1.1.1', 53)):
    try:
        socket.create_connection((host, port), 2); print('CONNECTED')
    except OSError as e:
        print('refused', e.errno)
try:
    socket.getaddrinfo('example.com', 443); print('RESOLVED')
except OSError as e:
    print('no dns')
""")
        assert "CONNECTED" not in out and "RESOLVED" not in out
        assert "refused 111" in out and "refused 101" in out  # its own loopback; no route out
        with pytest.raises(BlockingIOError):
            listener.accept()
        # 17, 18: host files neither readable nor writable; the job folder is
        out = await a.run("""
for p in ('/etc/shadow', '/root/.zx-session-test-secret', '/work/main/.git/config'):
    try:
        print(p, open(p).read()[:100])
    except OSError as e:
        print(p, 'ERR', e.errno)
for t in ('/usr/pwned', '/etc/pwned', '/zx/runtime/pwned'):
    try:
        open(t, 'w').write('x'); print('WROTE', t)
    except OSError as e:
        print('refused', t)
open('/job/state', 'w').write('kept between calls')
""")
        assert SECRET not in out and "root:" not in out and "WROTE" not in out
        assert out.count("ERR 2") == 3 and out.count("refused") == 3
        # 26: only the stdin pipe and the two output pipes, no descriptor of the executor
        out = await a.run("import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))")
        fds = json.loads(out)
        assert fds[:3] == [0, 1, 2] and len(fds) == 4, fds  # the 4th is listdir's own
        # 23: no nested user namespace; 16: no ptrace of anything
        out = await a.run("""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
print('unshare', libc.unshare(0x10000000), ctypes.get_errno())
print('ptrace', libc.ptrace(16, 1, 0, 0), ctypes.get_errno())
""")
        assert "unshare -1" in out and "ptrace -1" in out
        # the process is the same one all along: what the earlier call wrote is still there
        assert "kept between calls" in await a.run("print(open('/job/state').read())")
        a.client.close()
        ended = await a.client.ended()
        assert ended.reason == pb.EXIT_REASON_COMPLETED, ended
    finally:
        os.close(fd)
        listener.close()
        secret_file.unlink()
    assert session_pids() == []


async def test_kill_minus_one_in_a_session_reaches_no_host_process(server: Server) -> None:
    victim = subprocess.Popen(["sleep", "60"])
    try:
        a = await isolated_session(server)
        out = await a.run(f"""
import os, signal
try:
    os.kill({victim.pid}, signal.SIGKILL); print('KILLED HOST')
except OSError as e:
    print('host pid', e.errno)
try:
    os.kill(-1, signal.SIGKILL)  # every process it may signal: none outside its own pid namespace
except OSError as e:
    print('kill(-1)', e.errno)  # ESRCH: nothing else is there to signal
print('survived kill(-1)')
""")
        assert "KILLED HOST" not in out and "host pid 3" in out and "survived kill(-1)" in out
        assert victim.poll() is None  # the host process is alive
        assert await a.run("print('still serving')") == "still serving\n"
        a.client.close()
        await a.client.ended()
    finally:
        victim.kill()
        victim.wait()


async def test_a_fork_bomb_in_a_session_is_capped_and_killed_at_its_wall_limit(server: Server) -> None:
    a = await isolated_session(server, wall_s=3, max_processes=32)
    t0 = time.monotonic()
    a.client.send(
        99,
        json.dumps({"code": "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass"}).encode(),
    )
    ended = await a.client.ended()
    assert ended.reason == pb.EXIT_REASON_TIMEOUT and "wall-clock" in ended.message, ended
    assert "call_id 99" in ended.message  # the call never got its reply
    assert time.monotonic() - t0 < 6.0
    assert session_pids() == []


async def test_a_daemon_started_in_a_session_dies_with_it(server: Server) -> None:
    a = await isolated_session(server)
    out = await a.run("""
import os, time
r, w = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.close(0); os.close(1); os.close(2)
        os.write(w, b'x')
        time.sleep(1e9)
    os._exit(0)
os.read(r, 1)
print('daemon started')
""")
    assert out == "daemon started\n"
    assert len(session_pids()) >= 2  # the session's process and the daemon
    a.client.close()
    ended = await a.client.ended()
    assert ended.reason == pb.EXIT_REASON_COMPLETED
    assert session_pids() == []  # the daemon went with the session
