"""deploy/observability: the Prometheus scrape configuration scrapes the ports zx up assigns, and every
metric the alerting rules and the Grafana dashboard query is one the services really export (a renamed
metric would otherwise leave an alert that can never fire)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY
from zehanx_cli.settings import LauncherSettings

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "observability"
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
