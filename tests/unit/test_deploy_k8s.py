"""deploy/k8s: every manifest well formed, and consistent with the others and the config.

The Kubernetes JSON schemas are checked in tests/integration/test_demo_deploy_tools.py
when ``kubernetes-validate`` is installed; these checks run everywhere.
"""

from __future__ import annotations

import functools
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bluegreen.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
ENV = {
    "BLUEGREEN_STATE_URL": "postgresql://bluegreen@db/bluegreen",
    "DATABASE_URL": "postgresql://orders@db/orders",
}
SEED_READINESS = {"initialDelaySeconds": 5, "periodSeconds": 3}
SEED_LIVENESS = {"initialDelaySeconds": 10, "periodSeconds": 5}


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


DOCS = manifests()


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in DOCS if d["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def env_refs(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for container in containers(doc):
        for var in container.get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                yield ref["name"], ref["key"]


@functools.cache
def config() -> Config:
    """The ConfigMap's bluegreen.yaml, loaded the way ``bluegreen serve`` loads it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bluegreen.yaml"
        path.write_text(named("ConfigMap", "bluegreen-config")["data"]["bluegreen.yaml"])
        return load_config(path, env=ENV)


def test_every_document_has_api_version_kind_and_name() -> None:
    assert DOCS
    for doc in DOCS:
        where = f"{doc['__file__']}: {doc.get('kind')}"
        assert isinstance(doc.get("apiVersion"), str), where
        assert isinstance(doc.get("kind"), str), where
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), where
        if doc["kind"] not in ("ConfigMap", "Secret", "Namespace"):
            assert "spec" in doc, where


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == named("Namespace", "bluegreen")["metadata"]["name"]
    images = {c["image"] for d in of_kind("Deployment") + of_kind("Job") for c in containers(d)}
    assert images == {i["name"] for i in kustomization["images"]}


def test_the_configmap_is_a_valid_bluegreen_config() -> None:
    cfg = config()
    assert cfg.state.url == ENV["BLUEGREEN_STATE_URL"]
    assert not cfg.listeners.admin.is_loopback  # Prometheus scrapes it: a token is required


def test_the_configmap_matches_the_compose_config() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    in_compose = compose["configs"]["bluegreen-config"]["content"].replace("$${", "${")
    assert named("ConfigMap", "bluegreen-config")["data"]["bluegreen.yaml"] == in_compose


def test_selectors_match_their_pod_labels() -> None:
    for doc in of_kind("Deployment"):
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), doc["metadata"]["name"]
    for pdb in of_kind("PodDisruptionBudget"):
        selector = pdb["spec"]["selector"]["matchLabels"]
        assert any(
            selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for d in of_kind("Deployment")
        )


@pytest.mark.parametrize(
    "service", [d["metadata"]["name"] for d in of_kind("Service")], ids=lambda name: name
)
def test_each_service_reaches_a_named_container_port(service: str) -> None:
    svc = named("Service", service)
    selected = [
        d
        for d in of_kind("Deployment")
        if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert len(selected) == 1, f"Service {service} selects {len(selected)} Deployments"
    port_names = {p["name"] for c in containers(selected[0]) for p in c.get("ports", [])}
    for port in svc["spec"]["ports"]:
        assert port["targetPort"] in port_names


def test_every_referenced_secret_key_exists() -> None:
    secrets = {s["metadata"]["name"]: s.get("stringData", {}) for s in of_kind("Secret")}
    refs = {ref for d in of_kind("Deployment") + of_kind("Job") for ref in env_refs(d)}
    assert refs
    for name, key in refs:
        assert key in secrets.get(name, {}), f"secret {name} has no key {key}"
    assert len(secrets["bluegreen"]["admin-token"]) >= 16  # the config refuses shorter tokens


def test_mounted_configmaps_exist() -> None:
    maps = {m["metadata"]["name"] for m in of_kind("ConfigMap")}
    for doc in of_kind("Deployment"):
        for volume in doc["spec"]["template"]["spec"].get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in maps


def proxy() -> dict[str, Any]:
    return containers(named("Deployment", "bluegreen"))[0]


def test_the_proxy_runs_two_replicas_on_shared_postgresql_state() -> None:
    assert named("Deployment", "bluegreen")["spec"]["replicas"] == 2
    assert config().state.url.startswith("postgresql://")
    names = {v["name"] for v in proxy()["env"]}
    assert {"BLUEGREEN_ADMIN_TOKEN", "BLUEGREEN_STATE_URL", "DATABASE_URL"} <= names


def test_proxy_ports_and_probes_match_the_config() -> None:
    cfg = config()
    ports = {p["name"]: p["containerPort"] for p in proxy()["ports"]}
    assert ports == {"http": cfg.listeners.proxy.port, "admin": cfg.listeners.admin.port}
    readiness, liveness = proxy()["readinessProbe"], proxy()["livenessProbe"]
    assert readiness["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert liveness["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert SEED_READINESS.items() <= readiness.items()
    assert SEED_LIVENESS.items() <= liveness.items()


def test_the_proxy_gets_time_to_drain() -> None:
    spec = named("Deployment", "bluegreen")["spec"]["template"]["spec"]
    pre_stop = int(proxy()["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert spec["terminationGracePeriodSeconds"] > pre_stop + config().timeouts.drain


def test_the_config_points_each_colour_at_its_app_service() -> None:
    cfg = config()
    for colour, version in (("blue", "v1"), ("green", "v2")):
        (server,) = cfg.upstreams[colour].servers
        svc = named("Service", server.host)
        assert [p["port"] for p in svc["spec"]["ports"]] == [server.port]
        app = named("Deployment", f"app-{colour}")
        args = containers(app)[0]["args"]
        assert args[args.index("--version") + 1] == version
        assert svc["spec"]["selector"]["bluegreen.io/colour"] == colour


@pytest.mark.parametrize("colour", ["blue", "green"])
def test_apps_have_the_seed_probes_on_the_port_they_listen_on(colour: str) -> None:
    (app,) = containers(named("Deployment", f"app-{colour}"))
    args = app["args"]
    port = int(args[args.index("--port") + 1])
    assert args[args.index("--host") + 1] == "0.0.0.0"
    assert app["ports"] == [{"name": "http", "containerPort": port}]
    assert app["command"] == ["python", "-m", "bluegreen.demo.app"]
    readiness, liveness = app["readinessProbe"], app["livenessProbe"]
    assert readiness["httpGet"] == {"path": "/health", "port": "http"}
    assert SEED_READINESS.items() <= readiness.items()
    # liveness keeps the seed's timings but does not depend on the database (see the file)
    assert liveness["httpGet"] == {"path": "/version", "port": "http"}
    assert SEED_LIVENESS.items() <= liveness.items()


def test_everything_runs_as_non_root_without_privilege_escalation() -> None:
    for doc in of_kind("Deployment") + of_kind("Job"):
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_migration_job_uses_the_migrations_shipped_in_the_image() -> None:
    (job,) = containers(named("Job", "orders-migrate-initial"))
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    migrations_dir = job["args"][job["args"].index("--dir") + 1]
    assert migrations_dir in dockerfile
    assert job["args"][:4] == ["migrate", "up", "--to", "1"]
