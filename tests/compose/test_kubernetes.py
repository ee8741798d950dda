"""deploy/k8s: the kustomize base (five services + PostgreSQL) and the Ray overlay.

There is no Kubernetes cluster on the development machine, but there is kubectl (part of the machine's
image): both are rendered with ``kubectl kustomize`` exactly as ``kubectl apply -k`` would build them,
every rendered object is validated offline against the Kubernetes 1.32 OpenAPI schemas (the
``kubernetes-validate`` package, strict: an unknown field is an error) and the RayCluster against KubeRay's
own CRD schema (vendored in schemas/, its pod templates against Kubernetes' PodTemplateSpec). Then the
rendered objects are checked against the code they deploy: each service's port is the launcher's default
and a real setting, its probes are native gRPC probes on that port, it has requests and limits, a volume
where it keeps data, secrets only by reference, and only the callers it needs may reach it. And
deploy/observability/prometheus-kubernetes.yml scrapes each service's metrics port, labelled as the
alerts expect (its relabelling run over the rendered pods; promtool checks the file).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import schema_contents
from referencing import Registry, Resource
from zehanx_cli.settings import LauncherSettings
from zehanx_cli.settings_doc import env_names, service_settings_class

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
#: The Kubernetes version the manifests are validated against (kubectl here is 1.32).
KUBERNETES_VERSION = "1.32.0"
SERVICES = ("gateway", "crawler", "codegen", "executor", "trainer")
DEFAULT_PORTS = {name: LauncherSettings.model_fields[f"{name}_port"].default for name in SERVICES}
METRICS_PORTS = {name: LauncherSettings.model_fields[f"{name}_metrics_port"].default for name in SERVICES}
#: Where Prometheus runs, as the NetworkPolicies let it scrape.
MONITORING = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
KEEPS_DATA = ("gateway", "crawler", "trainer")
SECRETISH = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|DATABASE_URL")
#: Who calls whom (the gateway calls everyone; the trainer calls the executor and the crawler).
CALLERS = {"crawler": {"gateway", "trainer"}, "codegen": {"gateway"}, "executor": {"gateway", "trainer"}}
CALLERS["trainer"] = {"gateway"}


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomize(folder: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k folder`` would send, rendered by kubectl's own kustomize."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        # kubectl comes with this machine's image, not from a registry make setup can reach (Debian has
        # no kubectl package, PyPI no kustomize binary): where it is absent, say so instead of failing.
        pytest.skip("kubectl is not installed here: deploy/k8s is rendered with `kubectl kustomize`")
    done = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {folder} failed: {done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def by_key(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    keyed: dict[tuple[str, str], dict[str, Any]] = {}
    for doc in docs:
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in keyed, f"{key} defined twice"
        keyed[key] = doc
    return keyed


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {"base": kustomize(K8S), "ray": kustomize(K8S / "ray")}


@pytest.fixture(scope="module")
def base(rendered: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], dict[str, Any]]:
    return by_key(rendered["base"])


def _strict(schema: Any) -> Any:
    """A CRD schema as ``kubectl apply --validate=strict`` reads it: an object with declared properties
    takes no other field (unless it says it keeps unknown ones)."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _pod_template_validator() -> jsonschema.protocols.Validator:
    folder = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict"
    schema = schema_contents(f"{folder}/podtemplatespec-v1.json", KUBERNETES_VERSION)
    definitions = schema_contents(f"{folder}/_definitions.json", KUBERNETES_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """Why ``doc`` does not validate (empty when it does): Kubernetes' own schemas, or KubeRay's for a
    RayCluster (whose pod templates are Kubernetes PodTemplateSpecs)."""
    name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    if doc.get("apiVersion") == "ray.io/v1" and doc.get("kind") == "RayCluster":
        schema = _strict(json.loads((SCHEMAS / "kuberay-raycluster-v1.schema.json").read_text()))
        found = [
            f"{name}: {'.'.join(map(str, e.path))}: {e.message[:300]}"
            for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
        ]
        spec = doc.get("spec", {})
        templates = [("headGroupSpec", spec.get("headGroupSpec", {}).get("template"))]
        templates += [
            (f"workerGroupSpecs[{i}]", g.get("template"))
            for i, g in enumerate(spec.get("workerGroupSpecs", []))
        ]
        pods = _pod_template_validator()
        for where, template in templates:
            found += [
                f"{name}: {where}.template.{'.'.join(map(str, e.path))}: {e.message[:300]}"
                for e in pods.iter_errors(template or {})
            ]
        return found
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return [f"{name}: {'.'.join(map(str, e.path))}: {e.message[:300]}"]
    return []


def container(doc: dict[str, Any]) -> dict[str, Any]:
    """The one container of a workload (or of a RayCluster group, whose template is at its top)."""
    template = doc["template"] if "template" in doc else doc["spec"]["template"]
    containers = template["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


@pytest.mark.parametrize("variant", ["base", "ray"])
def test_every_rendered_object_validates_against_the_kubernetes_and_kuberay_schemas(
    rendered: dict[str, list[dict[str, Any]]], variant: str
) -> None:
    docs = rendered[variant]
    assert len(docs) >= 20
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"zehanx"}
    problems = [problem for doc in docs for problem in schema_errors(doc)]
    assert problems == []
    if variant == "ray":
        assert [d["kind"] for d in docs].count("RayCluster") == 1


def test_the_validation_refuses_a_misspelt_field_a_wrong_type_and_a_bad_raycluster(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The schemas are not vacuous: the same checks fail on small mistakes in the real objects."""
    docs = by_key(rendered["ray"])
    deployment = copy.deepcopy(docs["Deployment", "zehanx-gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    assert any("imagePullPolice" in p for p in schema_errors(deployment))
    deployment = copy.deepcopy(docs["Deployment", "zehanx-gateway"])
    deployment["spec"]["replicas"] = "two"
    assert schema_errors(deployment)
    cluster = copy.deepcopy(docs["RayCluster", "zehanx-ray"])
    cluster["spec"]["workerGroupSpecs"][0]["replica"] = 1
    assert any("replica" in p for p in schema_errors(cluster))
    cluster = copy.deepcopy(docs["RayCluster", "zehanx-ray"])
    cluster["spec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]["securityContext"][
        "privilegd"
    ] = True
    assert any("privilegd" in p for p in schema_errors(cluster))


def test_the_base_lists_every_file_and_one_deployment_and_service_per_service(base: dict[Any, Any]) -> None:
    listed = set(load(BASE / "kustomization.yaml")[0]["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    for name in SERVICES:
        assert ("Deployment", f"zehanx-{name}") in base
        assert ("Service", f"zehanx-{name}") in base
    assert ("StatefulSet", "zehanx-postgres") in base
    images = {i["name"] for i in load(BASE / "kustomization.yaml")[0]["images"]}
    assert images == {f"zehanx-{name}" for name in SERVICES}


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_listens_on_the_launchers_port_with_grpc_probes(base: dict[Any, Any], name: str) -> None:
    port = DEFAULT_PORTS[name]
    c = container(base["Deployment", f"zehanx-{name}"])
    assert c["image"] == f"zehanx-{name}:latest"
    metrics_port = METRICS_PORTS[name]
    assert c["ports"] == [
        {"name": "grpc", "containerPort": port},
        {"name": "metrics", "containerPort": metrics_port},
    ]
    env = env_of(c)
    assert env[f"ZX_{name.upper()}_PORT"]["value"] == str(port)
    assert env[f"ZX_{name.upper()}_HOST"]["value"] == "0.0.0.0"
    # /metrics on the port zx up assigns, reachable from outside the pod (its default host is loopback).
    assert env[f"ZX_{name.upper()}_METRICS_PORT"]["value"] == str(metrics_port)
    assert env[f"ZX_{name.upper()}_METRICS_HOST"]["value"] == "0.0.0.0"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": port}, probe  # grpc.health.v1 on the whole server
    service = base["Service", f"zehanx-{name}"]
    assert service["spec"]["ports"] == [{"name": "grpc", "port": port, "targetPort": "grpc"}]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": f"zehanx-{name}"}
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    # Internal services are headless (one DNS record per pod) so that dns:/// round_robin callers
    # spread over every replica; the gateway's Service is the public door's virtual IP.
    assert service["spec"].get("clusterIP") == (None if name == "gateway" else "None")


@pytest.mark.parametrize("name", SERVICES)
def test_each_service_has_requests_and_limits_and_reads_every_variable_it_is_given(
    base: dict[Any, Any], name: str
) -> None:
    c = container(base["Deployment", f"zehanx-{name}"])
    for kind in ("requests", "limits"):
        assert set(c["resources"][kind]) == {"cpu", "memory"}, kind
    cls = service_settings_class(name)
    read = {n for field in cls.model_fields for n in env_names(cls, field)} | {"PYTHONUNBUFFERED", "ZX_HOME"}
    for key in env_of(c):
        assert key in read, f"{key} is not a setting of {name}"


def test_secrets_are_only_referenced_never_written(base: dict[Any, Any]) -> None:
    assert not [key for key in base if key[0] == "Secret"]
    seen = 0
    for (kind, _), doc in base.items():
        if kind not in ("Deployment", "StatefulSet"):
            continue
        for name, entry in env_of(container(doc)).items():
            if SECRETISH.search(name):
                assert "value" not in entry, f"{name} is written in the manifest"
                assert entry["valueFrom"]["secretKeyRef"]["name"] == "zehanx-secrets"
                seen += 1
    assert seen >= 8
    for name in SERVICES:
        token = env_of(container(base["Deployment", f"zehanx-{name}"]))[f"ZX_{name.upper()}_SERVICE_TOKEN"]
        assert token["valueFrom"]["secretKeyRef"] == {"name": "zehanx-secrets", "key": "service-token"}


def test_each_service_that_keeps_data_has_its_own_volume_and_none_is_shared_between_services(
    base: dict[Any, Any],
) -> None:
    claims: dict[str, str] = {}
    for name in SERVICES:
        spec = base["Deployment", f"zehanx-{name}"]["spec"]["template"]["spec"]
        for volume in spec.get("volumes", []):
            claim = volume.get("persistentVolumeClaim", {}).get("claimName")
            if claim:
                assert claim not in claims, f"{name} and {claims[claim]} share {claim}"
                claims[claim] = name
                assert ("PersistentVolumeClaim", claim) in base
                mounts = {
                    m["name"]: m["mountPath"]
                    for m in container({"spec": {"template": {"spec": spec}}})["volumeMounts"]
                }
                assert mounts[volume["name"]] == "/var/lib/zehanx"
    assert sorted(claims.values()) == sorted(KEEPS_DATA)
    for name in ("crawler", "trainer"):  # a ReadWriteOnce volume: never two pods of one service at once
        assert base["Deployment", f"zehanx-{name}"]["spec"]["strategy"]["type"] == "Recreate"
        assert base["Deployment", f"zehanx-{name}"]["spec"]["replicas"] == 1
        assert base["PersistentVolumeClaim", f"zehanx-{name}-data"]["spec"]["accessModes"] == [
            "ReadWriteOnce"
        ]
    postgres = base["StatefulSet", "zehanx-postgres"]
    assert postgres["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"


def test_the_gateway_reaches_postgres_and_every_internal_service_by_its_service_name(
    base: dict[Any, Any],
) -> None:
    env = env_of(container(base["Deployment", "zehanx-gateway"]))
    for name in SERVICES[1:]:  # dns:/// targets: the channels' round_robin sees every replica
        assert (
            env[f"ZX_GATEWAY_{name.upper()}_ADDRESS"]["value"]
            == f"dns:///zehanx-{name}:{DEFAULT_PORTS[name]}"
        )
    trainer = env_of(container(base["Deployment", "zehanx-trainer"]))
    assert (
        trainer["ZX_TRAINER_EXECUTOR_ADDRESS"]["value"]
        == f"dns:///zehanx-executor:{DEFAULT_PORTS['executor']}"
    )
    assert (
        trainer["ZX_TRAINER_CRAWLER_ADDRESS"]["value"] == f"dns:///zehanx-crawler:{DEFAULT_PORTS['crawler']}"
    )
    assert env["ZX_GATEWAY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "database-url"
    assert base["Service", "zehanx-postgres"]["spec"]["ports"][0]["port"] == 5432


def test_the_gateway_runs_two_replicas_that_share_one_read_write_many_volume(base: dict[Any, Any]) -> None:
    gateway = base["Deployment", "zehanx-gateway"]["spec"]
    assert gateway["replicas"] >= 2
    assert gateway["strategy"]["type"] == "RollingUpdate"
    (claim,) = [
        v["persistentVolumeClaim"]["claimName"]
        for v in gateway["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    ]
    # Uploads and model archives: written through one replica, read through the other.
    assert base["PersistentVolumeClaim", claim]["spec"]["accessModes"] == ["ReadWriteMany"]
    env = env_of(container(base["Deployment", "zehanx-gateway"]))
    assert env["ZX_HOME"]["value"] == "/var/lib/zehanx"  # artifact and upload folders default under it
    assert "ZX_GATEWAY_ARTIFACT_DIR" not in env and "ZX_GATEWAY_UPLOAD_DIR" not in env
    budget = base["PodDisruptionBudget", "zehanx-gateway"]["spec"]
    assert budget["minAvailable"] == 1
    assert budget["selector"]["matchLabels"] == {"app.kubernetes.io/name": "zehanx-gateway"}
    assert base["Service", "zehanx-gateway"]["spec"]["selector"] == {
        "app.kubernetes.io/name": "zehanx-gateway"
    }


def test_only_the_executor_gets_a_capability_and_only_sys_admin(base: dict[Any, Any]) -> None:
    for name in SERVICES:
        sec = container(base["Deployment", f"zehanx-{name}"])["securityContext"]
        assert sec.get("privileged", False) is False
        if name == "executor":
            assert sec["capabilities"] == {"add": ["SYS_ADMIN"]}
            assert sec["appArmorProfile"] == {"type": "Unconfined"}
            assert sec["seccompProfile"] == {"type": "RuntimeDefault"}
        else:
            assert sec["runAsNonRoot"] is True and sec["runAsUser"] == 10001
            assert sec["capabilities"] == {"drop": ["ALL"]}
            assert sec["allowPrivilegeEscalation"] is False


def test_internal_services_take_calls_only_from_their_callers(base: dict[Any, Any]) -> None:
    for name, callers in CALLERS.items():
        policy = base["NetworkPolicy", f"zehanx-{name}"]["spec"]
        assert policy["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": f"zehanx-{name}"}}
        rule, scrape = policy["ingress"]
        allowed = {p["podSelector"]["matchLabels"]["app.kubernetes.io/name"] for p in rule["from"]}
        assert allowed == {f"zehanx-{c}" for c in callers}
        assert rule["ports"] == [{"port": DEFAULT_PORTS[name]}]
        # Prometheus' namespace reaches the metrics port, and only it.
        assert scrape == {"from": [MONITORING], "ports": [{"port": METRICS_PORTS[name]}]}
    # The public door: every caller on its gRPC port; its metrics port as the others'.
    door = base["NetworkPolicy", "zehanx-gateway"]["spec"]
    assert door["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "zehanx-gateway"}}
    assert door["ingress"] == [
        {"ports": [{"port": DEFAULT_PORTS["gateway"]}]},
        {"from": [MONITORING], "ports": [{"port": METRICS_PORTS["gateway"]}]},
    ]


def test_the_ray_overlay_runs_the_executor_as_a_token_authenticated_driver_of_a_raycluster(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    ray_dir = K8S / "ray"
    ray = by_key(rendered["ray"])
    # The overlay is the whole base plus its own objects, with the executor patched.
    assert set(by_key(rendered["base"])) < set(ray)
    c = container(ray["Deployment", "zehanx-executor"])
    env = env_of(c)
    assert env["ZX_EXECUTOR_BACKEND"]["value"] == "ray"
    assert env["ZX_EXECUTOR_RAY_ADDRESS"]["value"] == "zehanx-ray-head-svc:6380"
    assert env["ZX_EXECUTOR_RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["key"] == "ray-auth-token"
    settings = service_settings_class("executor")
    assert "ray" in settings.model_fields["backend"].annotation.__args__
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]  # the driver runs no sandbox
    assert "--num-cpus=0" in c["args"][0] and "--resources='{}'" in c["args"][0]

    cluster = ray["RayCluster", "zehanx-ray"]
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    assert cluster["metadata"]["name"] == "zehanx-ray"
    head = cluster["spec"]["headGroupSpec"]
    groups = {g["groupName"]: g for g in cluster["spec"]["workerGroupSpecs"]}
    assert set(groups) == {"cpu", "gpu"}
    assert head["rayStartParams"]["num-cpus"] == "0" and head["rayStartParams"]["port"] == "6380"
    ports = ("node-manager-port", "object-manager-port", "metrics-export-port", "runtime-env-agent-port")
    for params in (head["rayStartParams"], *(g["rayStartParams"] for g in groups.values())):
        for port in (*ports, "min-worker-port", "max-worker-port", "dashboard-agent-grpc-port"):
            assert params[port].isdigit(), port  # every Ray port explicit
        assert params["memory"].isdigit()
    for group in groups.values():
        assert group["rayStartParams"]["resources"] == '"{\\"zx_sandbox\\": 1}"'
        c = container(group)
        assert c["securityContext"]["capabilities"] == {"add": ["SYS_ADMIN"]}
        assert c["resources"]["limits"]["memory"] == c["resources"]["requests"]["memory"]
    assert groups["gpu"]["rayStartParams"]["num-gpus"] == "1"
    assert container(groups["gpu"])["resources"]["limits"]["nvidia.com/gpu"] == 1
    for c in (container(head), *(container(g) for g in groups.values())):
        env = env_of(c)
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "zehanx-secrets",
            "key": "ray-auth-token",
        }
    policies = {d["metadata"]["name"]: d for d in load(ray_dir / "networkpolicy-ray.yaml")}
    assert policies["zehanx-ray"]["spec"]["podSelector"] == {"matchLabels": {"ray.io/cluster": "zehanx-ray"}}


def _relabel(rules: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, str] | None:
    """Prometheus' relabelling (the keep and replace actions, with their defaults): the target's labels,
    or None where a rule drops it."""
    labels = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(n, "") for n in rule["source_labels"])
        match = re.fullmatch(rule.get("regex", "(.*)"), value)  # Prometheus anchors the regex
        action = rule.get("action", "replace")
        if action == "keep":
            if match is None:
                return None
        elif action == "replace":
            if match is not None:
                labels[rule["target_label"]] = match.expand(rule.get("replacement", "$1").replace("$", "\\"))
        else:
            raise AssertionError(f"relabel action {action} is not simulated here")
    return labels


def _discovered(doc: dict[str, Any], phase: str = "Running") -> list[dict[str, str]]:
    """The targets Kubernetes service discovery's pod role makes of a workload's pod: one per container
    port, with the pod's labels as __meta_kubernetes_pod_label_<name> (non-alphanumerics as _)."""
    template = doc["spec"]["template"]
    pod_labels = {
        "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v
        for k, v in template["metadata"]["labels"].items()
    }
    return [
        {
            **pod_labels,
            "__address__": f"10.0.0.7:{port['containerPort']}",
            "__meta_kubernetes_namespace": doc["metadata"]["namespace"],
            "__meta_kubernetes_pod_name": f"{doc['metadata']['name']}-5d9c7-x2x9q",
            "__meta_kubernetes_pod_phase": phase,
            "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
        }
        for c in template["spec"]["containers"]
        for port in c.get("ports", [])
    ]


def test_prometheus_on_kubernetes_scrapes_each_services_metrics_port_labelled_as_the_alerts_expect(
    base: dict[Any, Any],
) -> None:
    observability = ROOT / "deploy" / "observability"
    config = yaml.safe_load((observability / "prometheus-kubernetes.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod", "namespaces": {"names": ["zehanx"]}}]
    assert {doc["metadata"].get("namespace") for doc in base.values() if doc["kind"] != "Namespace"} == {
        "zehanx"
    }
    workloads = [doc for (kind, _), doc in base.items() if kind in ("Deployment", "StatefulSet")]
    candidates = [target for doc in workloads for target in _discovered(doc)]
    kept = [t for t in (_relabel(job["relabel_configs"], c) for c in candidates) if t is not None]
    # One target per service, on its metrics port (not gRPC, not PostgreSQL), with the labels the
    # alerts and the dashboard use: job as the local configuration names it, service as it labels it.
    assert sorted((t["service"], t["__address__"]) for t in kept) == sorted(
        (name, f"10.0.0.7:{METRICS_PORTS[name]}") for name in SERVICES
    )
    local = yaml.safe_load((observability / "prometheus.yml").read_text())
    assert job["job_name"] == local["scrape_configs"][0]["job_name"] == "zehanx"
    assert {t["service"] for t in kept} == {
        group["labels"]["service"] for group in local["scrape_configs"][0]["static_configs"]
    }
    assert all(t["pod"].startswith(f"zehanx-{t['service']}-") and t["namespace"] == "zehanx" for t in kept)
    assert len(candidates) > len(kept)  # gRPC ports and PostgreSQL were there to drop
    # A pod that is not running is not scraped.
    pending = _discovered(base["Deployment", "zehanx-gateway"], phase="Pending")
    assert [_relabel(job["relabel_configs"], t) for t in pending] == [None, None]
    assert config["rule_files"] == ["alerts.yml"]
    promtool = shutil.which("promtool") or (
        str(ROOT / ".venv/bin/promtool") if (ROOT / ".venv/bin/promtool").is_file() else None
    )
    if promtool is None:
        pytest.skip(
            "promtool is not installed (scripts/install_promtool.sh): the configuration was not checked"
        )
    done = _promtool_check(promtool, observability / "prometheus-kubernetes.yml")
    if "field kubernetes_sd_configs not found" in done.stderr:
        # Debian's promtool is built without Kubernetes discovery: the discovery block was checked
        # above by its content; promtool checks everything else (relabelling, rule files) with the same
        # targets given statically.
        static = copy.deepcopy(config)
        static["scrape_configs"][0].pop("kubernetes_sd_configs")
        static["scrape_configs"][0]["static_configs"] = [{"targets": ["10.0.0.7:47121"]}]
        stand_in = observability / ".zx-prometheus-kubernetes-static.yml"  # beside alerts.yml
        stand_in.write_text(yaml.safe_dump(static))
        try:
            done = _promtool_check(promtool, stand_in)
        finally:
            stand_in.unlink()
    assert done.returncode == 0, (done.stdout, done.stderr)


def _promtool_check(promtool: str, config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "check", "config", config.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
