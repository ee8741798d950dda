"""Building the executor from its settings: pick the backend, probe the host, self-test the sandbox.

A host that cannot sandbox makes :func:`build_executor` raise :class:`SandboxUnavailableError` with a
message that names what is missing; the service then refuses to start. The unsafe development runner
is used only when ``ZX_EXECUTOR_UNSAFE_DEV_NO_SANDBOX=1`` says so.
"""

from __future__ import annotations

import asyncio
import contextlib

from zehanx_runtime.errors import DomainError
from zehanx_runtime.logging import get_logger

from zehanx_executor.domain import Limits
from zehanx_executor.sandbox.e2b import (
    E2BConfig,
    E2BFactory,
    E2BSandbox,
    TemplateUnusable,
    check_template,
)
from zehanx_executor.sandbox.local import LocalSandbox, LocalSandboxConfig
from zehanx_executor.sandbox.probe import probe
from zehanx_executor.sandbox.self_test import SandboxUnavailableError, self_test
from zehanx_executor.sandbox.unsafe import WARNING, UnsafeDevRunner
from zehanx_executor.service import EnvPolicy, Executor, LimitPolicy, SessionPolicy, SessionPool, SlotPool
from zehanx_executor.settings import ExecutorSettings

log = get_logger("zehanx.executor")


def limit_policy(s: ExecutorSettings) -> LimitPolicy:
    defaults = Limits(
        wall_time_s=s.default_wall_s,
        cpu_time_s=s.max_cpu_s,
        memory_bytes=s.default_memory_bytes,
        max_processes=s.default_processes,
        disk_bytes=s.default_disk_bytes,
        output_bytes=s.default_output_bytes,
        file_size_bytes=s.default_file_size_bytes,
        open_files=s.open_files,
        tmp_bytes=s.tmp_bytes,
        cpus=s.resolved_default_cpus(),
    )
    ceilings = Limits(
        wall_time_s=s.max_wall_s,
        cpu_time_s=s.max_cpu_s,
        memory_bytes=s.max_memory_bytes,
        max_processes=s.max_processes,
        disk_bytes=s.max_disk_bytes,
        output_bytes=s.max_output_bytes,
        file_size_bytes=s.max_file_size_bytes,
        open_files=s.open_files,
        tmp_bytes=s.tmp_bytes,
        cpus=s.resolved_max_cpus(),
    )
    return LimitPolicy(defaults, ceilings, s.default_collect_bytes, s.max_collect_bytes)


def local_config(s: ExecutorSettings) -> LocalSandboxConfig:
    return LocalSandboxConfig(
        work_dir=s.work_dir,
        uid_base=s.uid_base,
        python_roots=tuple(s.resolved_python_roots()),
        path_dirs=(s.python_bin_dir(),),
        runtime_dir=s.runtime_dir,
        extra_ro_binds=tuple(s.extra_ro_binds),
    )


async def _ray_executor(
    s: ExecutorSettings, slots: SlotPool, policy: LimitPolicy, env: EnvPolicy
) -> Executor:
    """backend=ray: join the cluster (token auth) and run each execution as a task on one of its nodes.
    The slots still number the sandbox uids (distinct across the cluster); memory is Ray's to place."""
    from zehanx_executor.sandbox.raycluster import RayConfig, RaySandbox, cluster_nodes, describe
    from zehanx_executor.sandbox.raynode import NodeConfig

    if not s.ray_address:
        raise SandboxUnavailableError("backend=ray needs ZX_EXECUTOR_RAY_ADDRESS (host:port of the Ray head)")
    try:
        import ray  # noqa: F401
    except ImportError as exc:
        raise SandboxUnavailableError(
            f"backend=ray needs the ray package ({exc}); make setup installs the pinned ray==2.60.0"
        ) from exc
    try:
        token = s.resolved_ray_token()
    except OSError as exc:
        raise SandboxUnavailableError(f"cannot read ZX_EXECUTOR_RAY_AUTH_TOKEN_FILE: {exc}") from exc
    config = RayConfig(
        address=s.ray_address,
        auth_token=token,
        namespace=s.ray_namespace,
        node_resource=s.ray_node_resource,
        first_event_timeout_s=s.ray_first_event_timeout_s,
        cancel_grace_s=s.ray_cancel_grace_s,
    )
    node = NodeConfig(
        work_dir=s.work_dir,
        uid_base=s.uid_base,
        probe_slot=s.max_concurrent,
        python_roots=tuple(s.python_roots),
        runtime_dir=s.runtime_dir,
        extra_ro_binds=tuple(s.extra_ro_binds),
        cpu_quota_required=s.cpu_quota_required,
    )
    try:
        box = await asyncio.to_thread(RaySandbox, config, node)
    except DomainError as exc:
        raise SandboxUnavailableError(str(exc)) from exc
    nodes = await asyncio.to_thread(cluster_nodes)
    usable = [n for n in nodes if not s.ray_node_resource or n["resources"].get(s.ray_node_resource, 0) > 0]
    if not usable:
        log.warning("no Ray node declares the sandbox resource yet", resource=s.ray_node_resource)
    log.info(
        "executor backend",
        backend="ray",
        address=s.ray_address,
        nodes=[f"{n['ip']}: {describe(n['resources'])}" for n in usable],
    )
    return Executor(box, slots=slots, limits=policy, env=env)


def session_pool(s: ExecutorSettings) -> tuple[SessionPool, SessionPolicy]:
    return (
        SessionPool(s.session_slots, s.session_memory_bytes),
        SessionPolicy(s.session_idle_s, max(s.session_idle_s, s.session_max_idle_s)),
    )


async def build_executor(s: ExecutorSettings, *, e2b_factory: E2BFactory | None = None) -> Executor:
    slots = SlotPool(s.max_concurrent, max_waiting=s.max_queue, wait_timeout_s=s.queue_timeout_s)
    policy = limit_policy(s)
    env = EnvPolicy(tuple(s.env_allowlist))
    if s.unsafe_dev_no_sandbox:
        log.warning(WARNING)
        return Executor(
            UnsafeDevRunner(python_bin_dir=s.python_bin_dir()), slots=slots, limits=policy, env=env
        )
    if s.backend == "ray":
        return await _ray_executor(s, slots, policy, env)
    if s.use_e2b:
        if s.e2b_api_key is None or not s.e2b_api_key.get_secret_value():
            raise SandboxUnavailableError("backend=e2b needs an E2B API key (E2B_API_KEY)")
        config = E2BConfig(
            api_key=s.e2b_api_key.get_secret_value(),
            template=s.e2b_template,
            domain=s.e2b_domain,
            request_timeout_s=s.e2b_request_timeout_s,
            lifetime_margin_s=s.e2b_lifetime_margin_s,
            allow_internet=s.e2b_allow_internet,
        )
        box = E2BSandbox(config, e2b_factory)
        try:
            found = await check_template(box)
        except TemplateUnusable as exc:
            raise SandboxUnavailableError(str(exc)) from exc
        log.info("executor backend", backend="e2b", template=box.template, template_check=found)
        return Executor(box, slots=slots, limits=policy, env=env)
    caps = probe(work_dir=s.work_dir, probe_uid=s.uid_base + s.max_concurrent)
    if not caps.ok:
        raise SandboxUnavailableError(
            "this host cannot run the local sandbox, so the executor will not start:\n  - "
            + "\n  - ".join(caps.missing)
            + "\n(for development only, ZX_EXECUTOR_UNSAFE_DEV_NO_SANDBOX=1 runs programs WITHOUT isolation)"
        )
    layout = caps.cgroups
    if layout is not None and not layout.has_cpu:
        why = "; ".join(n for n in layout.notes if "cpu" in n) or "no cpu controller"
        if s.cpu_quota_required:
            raise SandboxUnavailableError(
                f"this host's cgroups cannot give runs a CPU quota ({why}), so one job could take every "
                "core; the executor will not start. Enable the cpu controller for the executor's cgroup, "
                "or set ZX_EXECUTOR_CPU_QUOTA_REQUIRED=false to run without CPU quotas."
            )
        log.warning("runs get NO CPU quota: one job can take every core", reason=why)
    budget = s.resolved_memory_budget()
    if budget:
        slots = SlotPool(
            s.max_concurrent, max_waiting=s.max_queue, wait_timeout_s=s.queue_timeout_s, memory_budget=budget
        )
    else:
        log.warning("no memory budget: the host's MemTotal is unreadable and none is set")
    box = LocalSandbox(local_config(s), caps)
    try:
        await self_test(box)
    except BaseException:
        with contextlib.suppress(Exception):
            await box.close()
        raise
    log.info(
        "executor backend",
        backend="local",
        memory_budget_bytes=budget,
        default_cpus=policy.defaults.cpus,
        max_cpus=policy.ceilings.cpus,
        **caps.summary(),
    )
    sessions, session_policy = session_pool(s)
    return Executor(
        box, slots=slots, limits=policy, env=env, sessions=sessions, session_policy=session_policy
    )
