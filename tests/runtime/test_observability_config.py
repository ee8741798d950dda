"""deploy/observability: the Prometheus scrape configuration scrapes the ports zx up assigns, and every
metric the alerting rules and the Grafana dashboard query is one the services really export (a renamed
metric would otherwise leave an alert that can never fire). With promtool (``make setup`` takes it out
of Debian's prometheus package into .venv/bin when apt is there: scripts/install_promtool.sh), Prometheus'
own checker validates the configuration and the rules, and runs the rules' unit tests
(alerts_test.yml: a service down, a job queued too long)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY
from zehanx_cli.settings import LauncherSettings

REPO = Path(__file__).resolve().parents[2]
ROOT = REPO / "deploy" / "observability"
_NAME = re.compile(r"\b((?:zx|grpc_server)_[a-z_]+)")


def _exported() -> set[str]:
    """Every sample name the services' metrics can produce, with each type's suffixes."""
    import zehanx_crawler.fetcher  # noqa: F401  (each module registers its metrics on import)
    import zehanx_executor.service  # noqa: F401
    import zehanx_gateway.metrics  # noqa: F401
    import zehanx_runtime.metrics  # noqa: F401
    import zehanx_trainer.prediction  # noqa: F401

    names: set[str] = set()
    for family in REGISTRY.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names.update(family.name + s for s in suffixes)
    return names


def test_the_scrape_configuration_scrapes_the_ports_zx_up_assigns() -> None:
    config = yaml.safe_load((ROOT / "prometheus.yml").read_text())
    targets = {
        group["labels"]["service"]: group["targets"][0]
        for job in config["scrape_configs"]
        for group in job["static_configs"]
    }
    defaults = LauncherSettings.model_fields
    assert targets == {
        name: f"127.0.0.1:{defaults[f'{name}_metrics_port'].default}"
        for name in ("gateway", "crawler", "codegen", "executor", "trainer")
    }
    assert config["rule_files"] == ["alerts.yml"] and (ROOT / "alerts.yml").is_file()


def test_every_metric_the_alerts_and_the_dashboard_query_is_exported() -> None:
    exported = _exported()
    rules = yaml.safe_load((ROOT / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} >= {
        "ZehanxServiceDown",
        "ZehanxJobsQueuedTooLong",
        "ZehanxExecutorSaturated",
        "ZehanxHighErrorRate",
    }
    dashboard = json.loads((ROOT / "grafana-dashboard.json").read_text())
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in _NAME.findall(expr)}
    assert used and used <= exported, sorted(used - exported)


#: Labels a series gets from Prometheus (job, instance) and the scrape configuration (service), and le.
_TARGET_LABELS = {"job", "instance", "service", "le"}
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"[{,]\s*([a-z_]+)\s*(?:=~|!~|!=|=)")


def test_every_label_the_alerts_and_the_dashboard_use_is_one_their_metrics_carry() -> None:
    """A label renamed in a service (Predict's model= became start=) would leave a panel grouping by
    nothing and an alert matching no series; the names check alone does not see it."""
    _exported()
    labels_of = {
        name: set(getattr(collector, "_labelnames", ()))
        for name, collector in REGISTRY._names_to_collectors.items()  # type: ignore[attr-defined]
    }
    rules = yaml.safe_load((ROOT / "alerts.yml").read_text())
    dashboard = json.loads((ROOT / "grafana-dashboard.json").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    exprs += [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    checked = 0
    for expr in exprs:
        carried = set().union(*(labels_of[name] for name in _NAME.findall(expr))) | _TARGET_LABELS
        used = {
            label.strip() for group in _GROUPING.findall(expr) for label in group.split(",") if label.strip()
        } | set(_MATCHER.findall(expr))
        assert used <= carried, (expr, sorted(used - carried))
        checked += len(used - _TARGET_LABELS)
    assert checked > 10  # the check saw the labels (state, stage, grpc_code, reason, start, ...)


def _promtool() -> str:
    found = shutil.which("promtool") or (
        str(REPO / ".venv/bin/promtool") if (REPO / ".venv/bin/promtool").is_file() else None
    )
    if found is None:
        pytest.skip(
            "promtool is not installed (scripts/install_promtool.sh takes it from Debian's prometheus "
            "package; it found no apt here): the rules were checked by the parse-and-names test only"
        )
    return found


def test_promtool_accepts_the_configuration_and_the_rules_and_their_unit_tests_pass() -> None:
    promtool = _promtool()
    for args in (
        ["check", "config", "prometheus.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ):
        done = subprocess.run([promtool, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    # The unit tests cover the two alerts an operator needs first.
    tests = yaml.safe_load((ROOT / "alerts_test.yml").read_text())
    tested = {case["alertname"] for group in tests["tests"] for case in group["alert_rule_test"]}
    assert tested >= {"ZehanxServiceDown", "ZehanxJobsQueuedTooLong"}


def test_promtool_refuses_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail: an expression Prometheus cannot parse is refused."""
    promtool = _promtool()
    rules = yaml.safe_load((ROOT / "alerts.yml").read_text())
    rules["groups"][0]["rules"][0]["expr"] = 'up{job="zehanx" == 0'
    broken = REPO / ".venv" / "zx-broken-alerts.yml"
    broken.write_text(yaml.safe_dump(rules))
    try:
        done = subprocess.run(
            [promtool, "check", "rules", str(broken)], capture_output=True, text=True, timeout=60
        )
    finally:
        broken.unlink()
    assert done.returncode != 0 and "ZehanxServiceDown" in done.stdout + done.stderr
