"""docker-compose.yml, Prometheus, Grafana provisioning and the Dockerfile, checked together.

``docker compose config`` itself runs in tests/integration/test_demo_deploy_tools.py
when a Compose v2 binary is installed; these structural checks run everywhere.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tempfile
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from bluegreen.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")
ENV = {
    "BLUEGREEN_STATE_URL": "postgresql://orders@postgres:5432/bluegreen",
    "DATABASE_URL": "postgresql://orders@postgres:5432/orders",
}


def compose_config() -> Config:
    text = COMPOSE["configs"]["bluegreen-config"]["content"].replace("$${", "${")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bluegreen.yaml"
        path.write_text(text, encoding="utf-8")
        return load_config(path, env=ENV)


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def instructions(text: str) -> list[tuple[str, str]]:
    """Dockerfile instructions (keyword, arguments), continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def test_compose_has_every_part() -> None:
    assert set(SERVICES) == {
        "postgres",
        "migrate",
        "app-blue",
        "app-green",
        "bluegreen",
        "prometheus",
        "grafana",
    }


def test_the_compose_config_is_a_valid_bluegreen_config() -> None:
    cfg = compose_config()
    assert cfg.state.url.startswith("postgresql://")
    assert not cfg.listeners.admin.is_loopback


def test_bluegreen_uses_postgresql_state_and_a_token_because_admin_is_not_loopback() -> None:
    env = SERVICES["bluegreen"]["environment"]
    assert env["BLUEGREEN_STATE_URL"].startswith("postgresql://")
    assert env["BLUEGREEN_STATE_URL"].endswith("@postgres:5432/bluegreen")
    assert env["BLUEGREEN_ADMIN_TOKEN"].startswith("${BLUEGREEN_ADMIN_TOKEN:?")  # required
    init = COMPOSE["configs"]["postgres-init"]["content"]
    assert "CREATE DATABASE bluegreen" in init
    mounts = {c["source"]: c["target"] for c in SERVICES["bluegreen"]["configs"]}
    argv = SERVICES["bluegreen"]["command"]
    assert mounts["bluegreen-config"] == flag(argv, "--config")


def test_bluegreen_ports_match_its_listeners() -> None:
    cfg = compose_config()
    published = {p.rsplit(":", 1)[-1]: p for p in SERVICES["bluegreen"]["ports"]}
    assert set(published) == {str(cfg.listeners.proxy.port), str(cfg.listeners.admin.port)}
    assert published[str(cfg.listeners.admin.port)].startswith("127.0.0.1:")  # host-local
    readyz = SERVICES["bluegreen"]["environment"]["BLUEGREEN_READYZ_URL"]
    assert readyz == f"http://127.0.0.1:{cfg.listeners.admin.port}/readyz"


@pytest.mark.parametrize(("colour", "version"), [("blue", "v1"), ("green", "v2")])
def test_apps_run_their_version_with_the_seed_health_check(colour: str, version: str) -> None:
    app = SERVICES[f"app-{colour}"]
    assert app["entrypoint"] == ["python", "-m", "bluegreen.demo.app"]
    assert flag(app["command"], "--version") == version
    port = int(flag(app["command"], "--port"))
    assert flag(app["command"], "--host") == "0.0.0.0"
    assert f"http://127.0.0.1:{port}/health" in " ".join(app["healthcheck"]["test"])
    (server,) = compose_config().upstreams[colour].servers
    assert (server.host, server.port) == (f"app-{colour}", port)
    assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_the_migrate_service_creates_what_v1_needs() -> None:
    argv = SERVICES["migrate"]["command"]
    assert argv[:4] == ["migrate", "up", "--to", "1"]
    assert flag(argv, "--dir") in DOCKERFILE


def test_prometheus_scrapes_the_admin_metrics() -> None:
    mount = next(v for v in SERVICES["prometheus"]["volumes"] if "prometheus.yml" in v)
    source, target, _ = mount.split(":")
    assert (ROOT / source).resolve() == ROOT / "deploy" / "prometheus" / "prometheus.yml"
    assert flag_value(SERVICES["prometheus"]["command"], "--config.file") == target
    prom = yaml.safe_load((ROOT / source).read_text(encoding="utf-8"))
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "bluegreen"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (target_group,) = job["static_configs"]
    assert target_group["targets"] == [f"bluegreen:{compose_config().listeners.admin.port}"]


def flag_value(argv: list[str], name: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")]
    return value


def grafana_mounts() -> dict[Path, str]:
    mounts = {}
    for volume in SERVICES["grafana"]["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[(ROOT / source).resolve()] = target
    return mounts


def test_grafana_provisions_the_prometheus_datasource() -> None:
    mounts = grafana_mounts()
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    assert mounts[provisioning] == "/etc/grafana/provisioning"
    data = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (source,) = data["datasources"]
    assert source["type"] == "prometheus"
    assert source["uid"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert any(p.endswith(":9090") for p in SERVICES["prometheus"]["ports"])


def test_grafana_loads_the_dashboard_file_from_where_compose_mounts_it() -> None:
    provider_file = ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "bluegreen.yml"
    (provider,) = yaml.safe_load(provider_file.read_text())["providers"]
    dashboards_dir = ROOT / "deploy" / "grafana"
    assert provider["type"] == "file"
    assert provider["options"]["path"] == grafana_mounts()[dashboards_dir]


def test_the_dashboard_is_json_on_the_provisioned_datasource() -> None:
    path = ROOT / "deploy" / "grafana" / "bluegreen-dashboard.json"
    if not path.exists():
        pytest.skip(f"{path.relative_to(ROOT)} is not written yet")
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard.get("panels")
    uids = set(re.findall(r'"uid":\s*"([^"]+)"', json.dumps(dashboard_datasources(dashboard))))
    # the provisioned uid, a datasource variable, or Grafana's built-in annotations
    assert uids <= {"prometheus", "${DS_PROMETHEUS}", "${datasource}", "-- Grafana --"}


def dashboard_datasources(node: object) -> list[object]:
    """Every ``datasource`` value in a dashboard."""
    found: list[object] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append(value)
            else:
                found.extend(dashboard_datasources(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(dashboard_datasources(item))
    return found


def test_dockerfile_is_slim_non_root_and_checks_readyz() -> None:
    steps = instructions(DOCKERFILE)
    froms = [args for kw, args in steps if kw == "FROM"]
    assert all("-slim" in f for f in froms)
    users = [args for kw, args in steps if kw == "USER"]
    assert users
    assert not users[-1].startswith(("root", "0"))
    (healthcheck,) = [args for kw, args in steps if kw == "HEALTHCHECK"]
    assert "urllib.request" in healthcheck
    assert "curl" not in healthcheck
    assert "BLUEGREEN_READYZ_URL" in healthcheck
    assert "BLUEGREEN_READYZ_URL=http://127.0.0.1:9900/readyz" in DOCKERFILE
    (expose,) = [args for kw, args in steps if kw == "EXPOSE"]
    assert set(expose.split()) == {"8080", "9900"}
    assert [args for kw, args in steps if kw == "ENTRYPOINT"] == ['["bluegreen"]']
    (cmd,) = [args for kw, args in steps if kw == "CMD"]
    assert cmd == '["serve", "--config", "/etc/bluegreen/bluegreen.yaml"]'
    assert any(kw == "RUN" and '".[fast]"' in args for kw, args in steps)


def test_the_image_builds_the_compiled_data_plane_with_what_the_build_needs() -> None:
    steps = instructions(DOCKERFILE)
    first, final = [i for i, (kw, _) in enumerate(steps) if kw == "FROM"]
    build_stage = steps[first:final]
    env = " ".join(args for kw, args in build_stage if kw == "ENV")
    assert "BLUEGREEN_COMPILE=1" in env
    assert any(kw == "RUN" and "gcc" in args for kw, args in build_stage)
    copied = {
        source.rstrip("/")
        for kw, args in build_stage
        if kw == "COPY"
        for source in shlex.split(args)[:-1]
    }
    build_system = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    assert {"pyproject.toml", "setup.py", *build_system["backend-path"]} <= copied


def test_the_image_default_config_listens_where_the_image_exposes() -> None:
    with tempfile.TemporaryDirectory():
        cfg = load_config(
            ROOT / "config" / "bluegreen.yaml", env={"BLUEGREEN_LISTEN": "0.0.0.0:8080"}
        )
    assert "BLUEGREEN_LISTEN=0.0.0.0:8080" in DOCKERFILE
    assert cfg.listeners.proxy.port == 8080
    assert cfg.listeners.admin.is_loopback  # no token needed; the HEALTHCHECK uses loopback
    assert cfg.listeners.admin.port == 9900


def test_dockerignore_lets_every_copied_file_through() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for pattern in patterns:
            negated = pattern.startswith("!")
            bare = pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
                keep = negated
        return keep

    for keyword, args in instructions(DOCKERFILE):
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _ = shlex.split(args)
            for source in sources:
                assert included(source), f"{source} is excluded by .dockerignore"
                assert (ROOT / source).exists(), source
    assert not included(".venv")
    assert not included("tests/unit/test_deploy_compose.py")
