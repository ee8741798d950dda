"""``zx``: run the Zehanx suite on this machine (``zx up`` / ``zx status`` / ``zx down``) and talk to it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text
from zehanx_gateway.edge.settings import EdgeSettings

from zehanx_cli import account, channel, doctor, e2b, health, jobs, keys, ray_local, sandbox, web_account
from zehanx_cli.errors import LaunchError
from zehanx_cli.settings import LauncherSettings
from zehanx_cli.suite import POSTGRES, Health, State, Suite

app = typer.Typer(
    help="Zehanx turns a prompt into a trained PyTorch model. zx runs its services on this machine.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, soft_wrap=True)

# Sub-apps: `zx sandbox …` (the executor's isolation probe) and `zx keys …` (the gateway's API keys).
app.add_typer(sandbox.app, name="sandbox")
app.add_typer(keys.app, name="keys")
app.add_typer(web_account.app, name="account")
# `zx e2b build-template`: the E2B template the executor's E2B backend needs (CPU torch, safetensors).
app.add_typer(e2b.app, name="e2b")
# The public API from a shell: zx train / jobs / job / cancel / models / download / predict.
jobs.register(app)


def _settings() -> LauncherSettings:
    try:
        return LauncherSettings()
    except ValidationError as exc:
        lines = []
        for problem in exc.errors():
            where = "_".join(str(p) for p in problem["loc"]).upper()
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"  ZX_{where}: {message}" if where else f"  {message}")
        _fail("invalid settings:\n" + "\n".join(lines))


def _fail(message: str) -> None:
    # Messages quote logs and settings: printed as text, never parsed as rich markup.
    err_console.print(Text.assemble(("error:", "bold red"), f" {message}"))
    raise typer.Exit(1)


def _table(rows: list[Health], suite: Suite) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("SERVICE")
    table.add_column("ADDRESS")
    table.add_column("HEALTH")
    table.add_column("PID", justify="right")
    for row in rows:
        colour = "green" if row.health == health.SERVING else "red"
        address = row.address
        if row.name == POSTGRES and row.pid is not None:  # the embedded one: show how to connect
            address = suite.postgres.url(redact=True)
        table.add_row(Text(row.name), Text(address), Text(row.health, style=colour), str(row.pid or "-"))
    return table


def _run(action: Callable[[], int]) -> None:
    try:
        code = action()
    except LaunchError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        err_console.print("interrupted; everything zx started was stopped")
        raise typer.Exit(130) from None
    raise typer.Exit(code)


@app.command()
def up(
    detach: bool = typer.Option(
        False, "--detach", "-d", help="Return once every service is SERVING and leave the suite running."
    ),
    ray: bool = typer.Option(
        False,
        "--ray",
        help="Also start a single-node Ray head here (token auth, every port set: ZX_RAY_PORT and the ten "
        "after it, ZX_RAY_WORKER_PORTS; --memory from ZX_RAY_MEMORY_BYTES) and run the executor's runs on it.",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        metavar="HOST:PORT",
        help="Run the executor's runs on the existing Ray cluster whose head's GCS is HOST:PORT (its token: "
        "ZX_EXECUTOR_RAY_AUTH_TOKEN_FILE); a node with no resources joins it here for the executor.",
    ),
) -> None:
    """Start PostgreSQL and every service as local processes and wait until all are SERVING."""
    settings = _settings()
    try:
        suite = Suite(
            settings,
            say=lambda text: console.print(text, highlight=False, soft_wrap=True, markup=False),
            ray=ray,
            ray_address=ray_address,
        )
    except LaunchError as exc:
        _fail(str(exc))

    def ready(rows: list[Health]) -> None:
        # The local user and its API key (ZX_HOME/api-key, 0600), so zx train works with no extra step.
        external = settings.gateway_database_url
        url = external.get_secret_value() if external is not None else suite.postgres.url()
        if account.ensure_local_key(settings, url):
            console.print(
                f"Made an API key for the local user: {account.key_file(settings)}", highlight=False
            )
        console.print(_table(rows, suite))
        edge = EdgeSettings()
        if edge.edge_enabled:
            port = edge.port_for(settings.gateway_port)
            scheme = "https" if channel.local_gateway_cert() else "http"
            where = (
                f"{scheme}://{settings.connect_host}:{port}" if port else "a free port (see logs/gateway.log)"
            )
            console.print(
                f"Dashboard (sign up in a browser; the API over Connect/HTTP on the same port): {where}",
                highlight=False,
            )
        state = suite.read_state()
        if state is not None and state.ray_address:
            how = (
                "a Ray head started here" if state.ray_mode == "head" else "the Ray cluster this node joined"
            )
            console.print(
                f"Runs go to {how}: {state.ray_address} (token: {state.ray_token_file}); zx status shows its nodes",
                highlight=False,
            )
        console.print(f"Logs: {settings.logs_dir}", highlight=False)
        if detach:
            console.print(f"Stop it with: {jobs.zx_command()} down", highlight=False)
        else:
            console.print("Press Ctrl-C to stop everything.")

    _run(lambda: suite.up(detach=detach, on_ready=ready, watch=_watch))


def _watch(suite: Suite, should_stop: Callable[[], bool]) -> str:
    """Foreground: refresh the status table until a signal, a process exiting, or zx down elsewhere."""
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    last_refresh = 0.0
    try:
        if live is not None:
            live.start()
        while not should_stop():
            try:
                state = suite.read_state()
            except LaunchError:
                state = None
            if state is None:
                return "gone"
            dead = [r for r in state.records if not r.alive()]
            if dead:
                for record in dead:
                    tail = "\n".join(Path(record.log).read_text(errors="replace").splitlines()[-20:])
                    err_console.print(
                        Text.assemble(
                            (f"{record.name} exited", "bold red"), f"; last lines of {record.log}:\n{tail}"
                        )
                    )
                return "exited: " + ", ".join(r.name for r in dead)
            if live is not None and time.monotonic() - last_refresh > 2.0:
                live.update(_table(suite.health(state), suite), refresh=True)
                last_refresh = time.monotonic()
            time.sleep(0.2)
        return "signal"
    finally:
        if live is not None:
            live.stop()


@app.command()
def status(
    as_json: bool = typer.Option(
        False, "--json", help="Machine-readable: name, address, health of each part."
    ),
) -> None:
    """Show the health of every service and of PostgreSQL. Exit status 0 only when all are SERVING."""
    settings = _settings()
    suite = Suite(settings)

    def show() -> int:
        state = suite.read_state()
        rows = suite.health(state)
        all_serving = bool(rows) and all(r.health == health.SERVING for r in rows)
        cluster = _ray_cluster(state) if rows else None
        if as_json:
            print(
                json.dumps(
                    {
                        "home": str(settings.home),
                        "running": bool(rows),
                        "services": [r.as_json() for r in rows],
                        **({"ray": cluster} if cluster is not None else {}),
                    },
                    indent=2,
                )
            )
        elif not rows:
            console.print(f"Zehanx is not running (ZX_HOME={settings.home}). Start it with: zx up")
        else:
            console.print(_table(rows, suite))
            if cluster is not None:
                _print_cluster(cluster)
        return 0 if all_serving and not (cluster or {}).get("error") else 1

    _run(show)


def _ray_cluster(state: State | None) -> dict[str, object] | None:
    """The Ray cluster the suite's executor runs on (its nodes and free resources), None without Ray."""
    if state is None or not state.ray_address or not state.ray_token_file:
        return None
    found = ray_local.cluster_status(state.ray_address, Path(state.ray_token_file))
    return {"address": state.ray_address, "mode": state.ray_mode, **found}


def _amount(name: str, value: float) -> str:
    if name in ("memory", "object_store_memory"):
        return f"{value / 2**30:.1f} GiB"
    return f"{value:g}"


def _print_cluster(cluster: dict[str, object]) -> None:
    console.print(Text(f"Ray cluster at {cluster['address']} ({cluster['mode']}):"))
    if "error" in cluster:
        console.print(Text(f"  {cluster['error']}", style="red"))
        return
    table = Table(box=None, pad_edge=False)
    for column in ("NODE", "ADDRESS", "ALIVE", "RESOURCES"):
        table.add_column(column)
    for node in cluster["nodes"]:  # type: ignore[attr-defined]
        resources = ", ".join(f"{k} {_amount(k, v)}" for k, v in sorted(node["resources"].items()))
        table.add_row(
            node["node_id"][:12], node["address"], Text("yes" if node["alive"] else "no"), Text(resources)
        )
    console.print(table)
    free, total = cluster["free"], cluster["total"]
    text = ", ".join(
        f"{k} {_amount(k, free.get(k, 0.0))} of {_amount(k, v)}"  # type: ignore[attr-defined]
        for k, v in sorted(total.items())  # type: ignore[attr-defined]
    )
    console.print(Text(f"Free: {text}"))


@app.command("doctor")
def doctor_command(
    online: bool = typer.Option(
        False, "--online", help="Also call each configured cloud backend once (5 s timeouts)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable: each part, its backend, problems."),
) -> None:
    """Name each part's backend (embedded or cloud) and check its settings. Exit status 0 when nothing is wrong.

    Offline by default: it reads the environment zx up would hand each service and this machine.
    """
    checks = doctor.run(online, _settings())
    if as_json:
        print(json.dumps(doctor.as_json(checks, online), indent=2))
    else:
        console.print(Text(doctor.as_text(checks, online)), soft_wrap=True)
    raise typer.Exit(0 if not any(c.problems for c in checks) else 1)


@app.command()
def down(
    purge: bool = typer.Option(
        False, "--purge", help="Also delete the embedded PostgreSQL's data and password (logs stay)."
    ),
) -> None:
    """Stop every service and PostgreSQL and check that no process is left behind."""
    settings = _settings()
    suite = Suite(
        settings, say=lambda text: console.print(text, highlight=False, soft_wrap=True, markup=False)
    )

    def stop() -> int:
        had_state = settings.state_file.exists()
        stopped = suite.down(purge=purge)
        if not had_state and not stopped:
            console.print(f"Zehanx was not running (ZX_HOME={settings.home}).")
        for item in stopped:
            console.print(f"{item.name:<9} {item.how} ({item.seconds:.1f}s)", highlight=False)
        if stopped:
            console.print("Stopped; no process left.")
        if purge:
            console.print("Deleted the embedded PostgreSQL data.")
        return 0

    _run(stop)


if __name__ == "__main__":
    app()
