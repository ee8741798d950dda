"""The local suite: start every service as its own process (plus PostgreSQL), watch it, stop it.

Every child is started with exec in a session of its own, its output appended to
``$ZX_HOME/logs/<name>.log``, and its environment marked with ``ZX_SUITE_HOME=<ZX_HOME>``. Pids, start
times and addresses go to ``$ZX_HOME/run/state.json``. ``down`` sends SIGTERM to each process group,
waits, SIGKILLs what is left, stops PostgreSQL, sweeps any process that still carries the marker and
removes the state file.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg

from zehanx_cli import channel, health, procs, ray_local
from zehanx_cli.errors import LaunchError
from zehanx_cli.postgres import EmbeddedPostgres, _port_taken_message
from zehanx_cli.settings import SERVICES, LauncherSettings

STATE_VERSION = 1
POSTGRES = "postgres"
RAY = ray_local.RAY

#: Cloud credentials in zx's environment and the only services that get them (first match wins; a
#: trailing "_" matches a prefix). The crawler, which parses untrusted pages, files and archives, sees
#: only Firecrawl's; the executor only E2B's. Names of this family that no service reads go to none.
CLOUD_VARIABLES: tuple[tuple[str, frozenset[str]], ...] = (
    ("GROQ_", frozenset({"codegen"})),
    ("FIRECRAWL_", frozenset({"crawler"})),
    ("E2B_", frozenset({"executor"})),
    ("SUPABASE_JWT_SECRET", frozenset({"gateway"})),
    ("SUPABASE_URL", frozenset({"trainer"})),
    ("SUPABASE_SERVICE_ROLE_KEY", frozenset({"trainer"})),
    ("SUPABASE_SECRET_KEY", frozenset({"trainer"})),  # the trainer reads it as its service key
    ("SUPABASE_", frozenset()),
    # zx's own: the CLI's API key and a database URL only the gateway reads.
    ("ZX_API_KEY", frozenset()),
    ("ZX_DATABASE_URL", frozenset({"gateway"})),
)


def _cloud_variable_allowed(variable: str, service: str) -> bool:
    """Whether ``service`` may see ``variable`` (True for anything not in CLOUD_VARIABLES)."""
    for pattern, services in CLOUD_VARIABLES:
        if variable == pattern or (pattern.endswith("_") and variable.startswith(pattern)):
            return service in services
    return True


def passed_environment(name: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The part of zx's environment ``zx up`` hands to service ``name`` (before its own additions).

    Each child sees its own ZX_<NAME>_* variables, not another service's (the database URL stays with
    the gateway), and only its own cloud keys (CLOUD_VARIABLES); the rest passes through.
    """
    others = tuple(f"ZX_{other.upper()}_" for other in SERVICES if other != name)
    return {k: v for k, v in environ.items() if not k.startswith(others) and _cloud_variable_allowed(k, name)}


@dataclass
class Record:
    """One process of the suite, as written to the state file."""

    name: str
    pid: int
    started: int | None  # kernel start time: a reused pid is never mistaken for ours
    address: str
    log: str
    metrics_address: str = ""  # the service's Prometheus /metrics endpoint (host:port)

    def alive(self) -> bool:
        return procs.is_alive(self.pid, self.started)


@dataclass
class State:
    home: str
    launched_at: str
    launcher_pid: int | None  # set while a foreground ``zx up`` watches the suite
    launcher_started: int | None
    external_database: bool
    records: list[Record] = field(default_factory=list)
    #: With zx up --ray / --ray-address: the Ray cluster's GCS address, how the node was started
    #: ("head" or "join") and the token file the node and the executor read.
    ray_address: str | None = None
    ray_mode: str | None = None
    ray_token_file: str | None = None

    def record(self, name: str) -> Record | None:
        return next((r for r in self.records if r.name == name), None)


@dataclass
class Health:
    name: str
    address: str
    health: str
    pid: int | None
    metrics_address: str = ""

    def as_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "address": self.address,
            "health": self.health,
            "pid": self.pid,
            "metrics_address": self.metrics_address or None,
        }


@dataclass
class Stopped:
    name: str
    how: str  # "SIGTERM", "SIGKILL", "not running"
    seconds: float


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Suite:
    """The suite that belongs to one ZX_HOME."""

    def __init__(
        self,
        settings: LauncherSettings,
        *,
        say: Callable[[str], None] = print,
        ray: bool = False,
        ray_address: str | None = None,
    ) -> None:
        if ray and ray_address:
            raise LaunchError("--ray starts a Ray head, --ray-address joins a cluster: give one of them")
        self.settings = settings
        #: None (the executor's own backend), "head" (zx up --ray) or "join" (zx up --ray-address).
        self.ray_mode = "head" if ray else "join" if ray_address else None
        self.ray_join = ray_address
        self.home = settings.home
        self.say = say
        self.postgres = EmbeddedPostgres(
            self.home,
            host=settings.host,
            port=settings.postgres_port,
            os_user=settings.postgres_user,
        )

    # -- state file ------------------------------------------------------------------------------

    def read_state(self) -> State | None:
        try:
            raw = json.loads(self.settings.state_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise LaunchError(
                f"cannot read {self.settings.state_file} ({exc}); zx down cleans up and removes it"
            ) from None
        if raw.get("version") != STATE_VERSION:
            raise LaunchError(f"{self.settings.state_file} has an unknown format; zx down removes it")
        records = [Record(**r) for r in raw.pop("records")]
        raw.pop("version")
        return State(**raw, records=records)

    def _write_state(self, state: State) -> None:
        path = self.settings.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": STATE_VERSION, **asdict(state)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
        tmp.replace(path)

    def _remove_state(self) -> None:
        self.settings.state_file.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One zx up / zx down at a time per ZX_HOME."""
        self.settings.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.settings.run_dir / "lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LaunchError(
                    f"another zx up or zx down is working on {self.home} right now; try again when it ends"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- health ----------------------------------------------------------------------------------

    def health(self, state: State | None = None) -> list[Health]:
        """Health of every part of a running suite (empty when it is not running)."""
        state = state if state is not None else self.read_state()
        if state is None:
            return []
        found = []
        for record in state.records:
            if not record.alive():
                value = health.EXITED
            elif record.name == POSTGRES:
                value = health.SERVING if self.postgres.ready() else health.UNREACHABLE
            elif record.name == RAY:  # the cluster's GCS answers (zx status --json shows its nodes)
                value = health.SERVING if ray_local.reachable(record.address) else health.UNREACHABLE
            else:
                value = health.check(record.address, credentials=self._credentials(record.name))
            found.append(Health(record.name, record.address, value, record.pid, record.metrics_address))
        if state.external_database:
            found.append(Health(POSTGRES, self._external_database_address(), self._external_health(), None))
        return found

    def _credentials(self, name: str) -> grpc.ChannelCredentials | None:
        """TLS for the gateway when it serves TLS (ZX_GATEWAY_TLS_CERT_FILE); the others are plaintext."""
        return channel.local_gateway_credentials(self.settings) if name == "gateway" else None

    def _external_database_address(self) -> str:
        url = self.settings.gateway_database_url
        if url is None:
            return "(unset)"
        info = psycopg.conninfo.conninfo_to_dict(url.get_secret_value())
        return f"{info.get('host', '?')}:{info.get('port', 5432)}"

    def _external_health(self) -> str:
        url = self.settings.gateway_database_url
        if url is None:
            return health.UNREACHABLE
        try:
            with psycopg.connect(url.get_secret_value(), connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return health.UNREACHABLE
        return health.SERVING

    # -- up --------------------------------------------------------------------------------------

    def _check_ports(self, names: list[str]) -> None:
        problems = [
            _port_taken_message(name, self.settings.host, self.settings.ports()[name])
            for name in names
            if not procs.port_free(self.settings.host, self.settings.ports()[name])
        ]
        problems += [
            _port_taken_message(f"{name}_metrics", self.settings.host, port)
            for name, port in self.settings.metrics_ports().items()
            if name in names and port and not procs.port_free(self.settings.host, port)
        ]
        if problems:
            raise LaunchError("\n".join(problems))

    def _token(self, path: Path | None = None) -> str:
        """The service token (or another secret kept in ``path``), generated once (mode 0600). Never printed."""
        path = path or self.settings.token_file
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            token = ""
        if token:
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            return token
        token = secrets.token_urlsafe(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
        return token

    def _child_env(
        self,
        name: str,
        token: str,
        database_url: str | None,
        *,
        metrics_port: int | None = None,
        ray: tuple[str, str] | None = None,
    ) -> dict[str, str]:
        env = passed_environment(name, os.environ)
        prefix = f"ZX_{name.upper()}_"
        env.update(
            {
                "ZX_HOME": str(self.home),
                procs.SUITE_MARKER: str(self.home),
                "PYTHONUNBUFFERED": "1",
                f"{prefix}HOST": self.settings.host,
                f"{prefix}PORT": str(self.settings.ports()[name]),
                f"{prefix}SERVICE_TOKEN": token,
            }
        )
        if metrics_port is not None:
            env[f"{prefix}METRICS_HOST"] = self.settings.host
            env[f"{prefix}METRICS_PORT"] = str(metrics_port)
        if name == "gateway":
            if database_url:
                env["ZX_GATEWAY_DATABASE_URL"] = database_url
            for other in ("crawler", "codegen", "executor", "trainer"):
                env[f"ZX_GATEWAY_{other.upper()}_ADDRESS"] = self.settings.address(other)
            if not (env.get("ZX_GATEWAY_JWT_SECRET") or env.get("SUPABASE_JWT_SECRET")):
                # Signs the sessions of the web edge's email and password accounts (ZX_HOME/jwt-secret).
                env["ZX_GATEWAY_JWT_SECRET"] = self._token(self.home / "jwt-secret")
            if not env.get("ZX_GATEWAY_SECRETS_KEY"):
                # Seals the users' own provider keys (ZX_HOME/secrets-key, mode 0600 like jwt-secret).
                env["ZX_GATEWAY_SECRETS_KEY"] = self._token(self.home / "secrets-key")
        if name == "executor" and ray is not None:
            # The executor drives the Ray cluster; the token goes by file, only to it (never to a sandbox).
            address, token_file = ray
            env.pop("ZX_EXECUTOR_RAY_AUTH_TOKEN", None)
            env.update(
                {
                    "ZX_EXECUTOR_BACKEND": "ray",
                    "ZX_EXECUTOR_RAY_ADDRESS": address,
                    "ZX_EXECUTOR_RAY_AUTH_TOKEN_FILE": token_file,
                    "RAY_USAGE_STATS_ENABLED": "0",
                }
            )
        if name == "trainer":
            env["ZX_TRAINER_EXECUTOR_ADDRESS"] = self.settings.address("executor")
            # The trainer reads the crawler's datasets from the crawler (ReadDatasetFile), not its folder.
            env["ZX_TRAINER_CRAWLER_ADDRESS"] = self.settings.address("crawler")
        return env

    def _spawn(self, name: str, env: dict[str, str]) -> subprocess.Popen:
        module = f"zehanx_{name}"
        if importlib.util.find_spec(module) is None or importlib.util.find_spec(f"{module}.__main__") is None:
            raise LaunchError(
                f"the {name} service is not installed (no module {module}.__main__): run make setup"
            )
        log_path = self.settings.logs_dir / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            log.write(f"\n--- zx up {datetime.now(UTC).isoformat()} ---\n".encode())
            log.flush()
            return subprocess.Popen(
                [sys.executable, "-m", module],
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: zx down signals the whole group
                close_fds=True,
            )

    def up(
        self,
        *,
        detach: bool,
        on_ready: Callable[[list[Health]], None],
        watch: Callable[[Suite, Callable[[], bool]], str] | None = None,
    ) -> int:
        """Start the suite and wait until every part is SERVING.

        ``detach``: return once healthy, leaving it running. Otherwise ``watch(suite, should_stop)``
        runs until Ctrl-C / SIGTERM / a process exiting, and everything is stopped before returning.
        """
        stop_requested = _StopFlag()
        # Ctrl-C / SIGTERM while starting stops what was started, in both modes.
        with stop_requested.installed():
            with self._locked():
                state = self.read_state()
                if state is not None:
                    if all(r.alive() for r in state.records) and state.records:
                        if self.ray_mode is not None and state.ray_mode != self.ray_mode:
                            raise LaunchError(
                                f"Zehanx is already up in {self.home} "
                                f"{'with Ray (' + str(state.ray_mode) + ')' if state.ray_mode else 'without Ray'}"
                                "; run zx down first to start it with the Ray option you gave"
                            )
                        self.say(f"Zehanx is already up (ZX_HOME={self.home}).")
                        on_ready(self.health(state))
                        return 0
                    if self._revivable(state):
                        self._revive(state, stop_requested)
                        on_ready(self.health(state))
                        return 0
                    if any(r.alive() for r in state.records):
                        gone = ", ".join(r.name for r in state.records if not r.alive())
                        raise LaunchError(
                            f"the suite in {self.home} is partly running ({gone} exited; logs in "
                            f"{self.settings.logs_dir}): run zx down, then zx up"
                        )
                    self.say("Cleaning up a stale state file (its processes are gone).")
                    self._sweep()
                    self._remove_state()
                leftovers = procs.marked(self.home)
                if leftovers:
                    raise LaunchError(
                        f"processes of an earlier suite in {self.home} still run (pids "
                        f"{', '.join(map(str, leftovers))}): run zx down first"
                    )
                state = self._start(stop_requested, foreground=not detach)
            if detach:
                on_ready(self.health(state))
                return 0
            on_ready(self.health(state))
            assert watch is not None
            reason = watch(self, stop_requested.is_set)
            if reason == "gone":  # zx down ran from elsewhere and already stopped everything
                return 0
            self.say("Stopping the suite...")
            self._stop_state(state)
            self._sweep()
            self._remove_state()
            return 1 if reason.startswith("exited") else 0

    def _start(self, stop_requested: _StopFlag, *, foreground: bool) -> State:
        """Start every part; a ``foreground`` launcher is in the state from its first write, so
        ``zx status`` never sees the suite up without the process that watches it."""
        settings = self.settings
        external = settings.gateway_database_url is not None
        names = [*SERVICES] if external else [POSTGRES, *SERVICES]
        self._check_ports(names)
        ray_token: Path | None = None
        if self.ray_mode is not None:
            # Everything about Ray is checked before anything starts.
            problems = settings.ray_port_clashes() + ray_local.taken_ports(settings)
            if problems:
                raise LaunchError("\n".join(problems))
            ray_token = self._ray_token_file()
            if self.ray_join is not None and not ray_local.reachable(self.ray_join):
                raise LaunchError(
                    f"nothing answers at --ray-address {self.ray_join} (the Ray head's GCS host:port)"
                )
        token = self._token()
        state = State(
            home=str(self.home),
            launched_at=datetime.now(UTC).isoformat(),
            launcher_pid=os.getpid() if foreground else None,
            launcher_started=procs.start_time(os.getpid()) if foreground else None,
            external_database=external,
        )
        children: list[subprocess.Popen] = []
        try:
            if external:
                database_url = settings.gateway_database_url.get_secret_value()  # type: ignore[union-attr]
            else:
                proc = self.postgres.start(
                    log_path=settings.logs_dir / "postgres.log",
                    env={procs.SUITE_MARKER: str(self.home)},
                    timeout=min(60.0, settings.startup_timeout),
                )
                children.append(proc)
                state.records.append(
                    Record(
                        POSTGRES,
                        proc.pid,
                        procs.start_time(proc.pid),
                        settings.address(POSTGRES),
                        str(settings.logs_dir / "postgres.log"),
                    )
                )
                self._write_state(state)
                database_url = self.postgres.url()
            if ray_token is not None:
                children.append(self._start_ray(state, ray_token))
            ray = (
                (state.ray_address, state.ray_token_file)
                if state.ray_address and state.ray_token_file
                else None
            )
            for name in SERVICES:
                metrics_port = settings.metrics_ports()[name] or procs.free_port(settings.host)
                proc = self._spawn(
                    name, self._child_env(name, token, database_url, metrics_port=metrics_port, ray=ray)
                )
                children.append(proc)
                state.records.append(
                    Record(
                        name,
                        proc.pid,
                        procs.start_time(proc.pid),
                        settings.address(name),
                        str(settings.logs_dir / f"{name}.log"),
                        f"{settings.connect_host}:{metrics_port}",
                    )
                )
                self._write_state(state)
            self._wait_serving(state, stop_requested)
        except BaseException:
            self.say("Start-up failed; stopping what was started.")
            self._stop_state(state)
            for child in children:
                with contextlib.suppress(Exception):
                    child.wait(timeout=1)
            raise
        return state

    def _ray_token_file(self) -> Path:
        """The token file the Ray node and the executor read (0600): made for a head of our own; for a
        cluster we join, the one ZX_EXECUTOR_RAY_AUTH_TOKEN_FILE names (or the token in
        ZX_EXECUTOR_RAY_AUTH_TOKEN, written to ZX_HOME/ray-token)."""
        path = self.home / "ray-token"
        if self.ray_mode == "join":
            named = os.environ.get("ZX_EXECUTOR_RAY_AUTH_TOKEN_FILE", "")
            given = os.environ.get("ZX_EXECUTOR_RAY_AUTH_TOKEN", "").strip()
            if named:
                if not Path(named).is_file() or not Path(named).read_text().strip():
                    raise LaunchError(f"ZX_EXECUTOR_RAY_AUTH_TOKEN_FILE={named} is not a non-empty file")
                return Path(named).absolute()
            if not given:
                raise LaunchError(
                    f"--ray-address {self.ray_join} needs the cluster's token (every node runs with "
                    "RAY_AUTH_MODE=token): set ZX_EXECUTOR_RAY_AUTH_TOKEN_FILE to a file holding it"
                )
            self._write_secret(path, given)
            return path
        if not path.exists() or not path.read_text().strip():
            self._write_secret(path, secrets.token_hex(32))
        return path

    @staticmethod
    def _write_secret(path: Path, value: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(value + "\n")
        os.chmod(path, 0o600)

    def _start_ray(self, state: State, token_file: Path) -> subprocess.Popen:
        """Start the Ray node (a head, or a node joining --ray-address) and wait until it runs."""
        settings = self.settings
        join = self.ray_join if self.ray_mode == "join" else None
        address = join or f"{settings.connect_host}:{settings.ray_port}"
        env = passed_environment(RAY, os.environ)  # no service's settings, no cloud key
        for variable in [k for k in env if k.startswith("RAY_")]:
            del env[variable]  # RAY_AUTH_TOKEN would win over the token file
        env.update(ray_local.node_env(settings, token_file))
        env.update({procs.SUITE_MARKER: str(self.home), "PYTHONUNBUFFERED": "1"})
        log_path = settings.logs_dir / "ray.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = ray_local.node_command(settings, join=join)
        with open(log_path, "ab") as log:
            log.write(f"\n--- zx up {datetime.now(UTC).isoformat()}: {' '.join(command[1:])} ---\n".encode())
            log.flush()
            offset = log.tell()
            proc = subprocess.Popen(
                command,
                env=env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        state.records.append(Record(RAY, proc.pid, procs.start_time(proc.pid), address, str(log_path)))
        state.ray_address, state.ray_mode, state.ray_token_file = address, self.ray_mode, str(token_file)
        self._write_state(state)
        what = f"joining the Ray cluster at {join}" if join else f"a Ray head at {address}"
        self.say(f"Starting {what} (token auth on; log {log_path})...")
        ray_local.wait_started(proc, log_path, offset, min(120.0, settings.startup_timeout))
        return proc

    def _revivable(self, state: State) -> bool:
        """A detached suite whose database still runs but some services exited (killed, crashed)."""
        launcher = state.launcher_pid is not None and procs.is_alive(
            state.launcher_pid, state.launcher_started
        )
        pg = state.record(POSTGRES)
        database_up = state.external_database or (pg is not None and pg.alive())
        dead = [r for r in state.records if r.name != POSTGRES and not r.alive()]
        ray_lost = any(r.name == RAY for r in dead)  # the services' Ray node is not restarted alone
        return not launcher and database_up and bool(dead) and not ray_lost

    def _revive(self, state: State, stop_requested: _StopFlag) -> None:
        """Start again the services of ``state`` that exited; the others reconnect to them by themselves."""
        settings = self.settings
        if state.external_database:
            database_url = settings.gateway_database_url.get_secret_value()  # type: ignore[union-attr]
        else:
            database_url = self.postgres.url()
        token = self._token()
        revived = []
        ray = (
            (state.ray_address, state.ray_token_file) if state.ray_address and state.ray_token_file else None
        )
        for index, record in enumerate(state.records):
            if record.name in (POSTGRES, RAY) or record.alive():
                continue
            self.say(f"{record.name} (pid {record.pid}) is gone; starting it again.")
            metrics_port = int(record.metrics_address.rsplit(":", 1)[1]) if record.metrics_address else None
            proc = self._spawn(
                record.name,
                self._child_env(record.name, token, database_url, metrics_port=metrics_port, ray=ray),
            )
            state.records[index] = Record(
                record.name,
                proc.pid,
                procs.start_time(proc.pid),
                record.address,
                record.log,
                record.metrics_address,
            )
            revived.append(record.name)
            self._write_state(state)
        self._wait_serving(state, stop_requested, only=set(revived))

    def _wait_serving(self, state: State, stop_requested: _StopFlag, *, only: set[str] | None = None) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout
        pending = {
            r.name
            for r in state.records
            if r.name not in (POSTGRES, RAY) and (only is None or r.name in only)
        }
        while pending:
            if stop_requested.is_set():
                raise KeyboardInterrupt
            for record in state.records:
                if record.name not in pending:
                    continue
                if not record.alive():
                    raise LaunchError(
                        f"{record.name} exited while starting; last lines of {record.log}:\n"
                        f"{_tail(Path(record.log))}"
                    )
                dial = self._credentials(record.name)
                if health.check(record.address, timeout=0.5, credentials=dial) == health.SERVING:
                    pending.discard(record.name)
            if pending and time.monotonic() > deadline:
                raise LaunchError(
                    f"not SERVING after {self.settings.startup_timeout:.0f}s: {', '.join(sorted(pending))} "
                    f"(logs in {self.settings.logs_dir}; ZX_STARTUP_TIMEOUT sets the wait)"
                )
            if pending:
                time.sleep(0.2)

    # -- down ------------------------------------------------------------------------------------

    def down(self, *, purge: bool = False) -> list[Stopped]:
        """Stop everything of this ZX_HOME; raise if any process survives."""
        with self._locked():
            try:
                state = self.read_state()
            except LaunchError:
                state = None  # unreadable: the marker sweep below still finds every process
            stopped: list[Stopped] = []
            if state is not None:
                self._stop_launcher(state)
                stopped = self._stop_state(state)
            self._sweep()
            survivors = procs.marked(self.home)
            if state is not None:
                survivors += [r.pid for r in state.records if r.alive() and r.pid not in survivors]
            if survivors:
                raise LaunchError(
                    f"these processes survived SIGKILL: {', '.join(map(str, survivors))} "
                    "(state file kept; run zx down again)"
                )
            self._remove_state()
            if purge:
                stale = self.postgres.running_pid()
                if stale is not None:
                    self.postgres.stop(stale, timeout=self.settings.stop_timeout)
                self.postgres.purge()
            return stopped

    def _stop_launcher(self, state: State) -> None:
        """A foreground zx up watching this suite: ask it to stop the suite itself, and wait."""
        pid = state.launcher_pid
        if pid is None or pid == os.getpid() or not procs.is_alive(pid, state.launcher_started):
            return
        self.say(f"Asking the foreground zx up (pid {pid}) to stop the suite...")
        procs.signal_pid(pid, signal.SIGTERM)
        procs.wait_gone([pid], self.settings.stop_timeout + 20)

    def _stop_state(self, state: State) -> list[Stopped]:
        """SIGTERM every service group at once, SIGKILL after the timeout, then stop PostgreSQL."""
        results: list[Stopped] = []
        services = [r for r in reversed(state.records) if r.name != POSTGRES]
        started = time.monotonic()
        signalled = []
        for record in services:
            if record.alive():
                procs.signal_group(record.pid, signal.SIGTERM)
                signalled.append(record)
            else:
                results.append(Stopped(record.name, "not running", 0.0))
        groups = {r.pid: r for r in signalled}
        deadline = started + self.settings.stop_timeout
        ended_at: dict[str, float] = {}
        while groups and time.monotonic() < deadline:
            for pgid, record in list(groups.items()):
                if not procs.group_members(pgid):
                    ended_at[record.name] = time.monotonic() - started
                    del groups[pgid]
            if groups:
                time.sleep(0.05)
        for record in signalled:
            if record.pid in groups:
                procs.signal_group(record.pid, signal.SIGKILL)
                procs.wait_gone(procs.group_members(record.pid), 5.0)
                results.append(Stopped(record.name, "SIGKILL", time.monotonic() - started))
            else:
                results.append(Stopped(record.name, "SIGTERM", ended_at.get(record.name, 0.0)))
        pg = state.record(POSTGRES)
        if pg is not None:
            t0 = time.monotonic()
            if pg.alive():
                self.postgres.stop(pg.pid, timeout=self.settings.stop_timeout)
                results.append(Stopped(POSTGRES, "SIGINT (fast shutdown)", time.monotonic() - t0))
            else:
                results.append(Stopped(POSTGRES, "not running", 0.0))
        return results

    def _sweep(self) -> None:
        """SIGKILL any process still carrying this suite's marker (its services' own children included)."""
        pids = procs.marked(self.home)
        for pid in pids:
            procs.signal_pid(pid, signal.SIGKILL)
        procs.wait_gone(pids, 5.0)


class _StopFlag:
    """Set by SIGINT / SIGTERM while a foreground zx up runs."""

    def __init__(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    def _handler(self, signum: int, frame: object) -> None:
        self._set = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
