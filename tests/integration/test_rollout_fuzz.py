"""Fuzz the rollout endpoints of a real ``bluegreen serve`` against the OpenAPI document it serves.

The replica runs in front of real upstream processes with a live controller,
so fuzzed starts really run (preflight, smoke, ramp) while pauses, aborts and
promotions arrive: every schemathesis check must hold, above all "no 5xx".
The one check left out for ``startRollout`` is "valid data is accepted": step
weights must strictly increase, which JSON Schema cannot say, so a
schema-valid body may rightly get 422.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from bluegreen.admin import ROUTES
from bluegreen.admin_openapi import build_document
from bluegreen.admin_rollout import rollout_routes
from bluegreen.controller.executors import ControllerSettings
from bluegreen.controller.runner import RolloutController
from tests.integration.replica_procs import free_port
from tests.integration.rollout_fixtures import TOKEN, write_config

MAX_EXAMPLES = 40
REJECTIONS = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
ACCEPTANCES = ["2xx", "401", "403", "404", "409", "413"]


def _wait_http(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback URL
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer {url}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("rollout-fuzz")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        ports = {}
        for colour in ("blue", "green"):
            ports[colour] = free_port()
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tests.integration.rollout_upstream",
                        colour,
                        str(ports[colour]),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            _wait_http(f"http://127.0.0.1:{ports[colour]}/health", procs[-1], colour)
        config = write_config(tmp / "bluegreen.yaml")
        admin = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLUEGREEN_ADMIN")}
        serve = subprocess.Popen(
            [sys.executable, "-m", "bluegreen", "serve", "--config", str(config),
             "--listen", f"127.0.0.1:{free_port()}", "--admin", f"127.0.0.1:{admin}",
             "--state", f"file:{tmp / 'state.json'}",
             "--blue", f"127.0.0.1:{ports['blue']}", "--green", f"127.0.0.1:{ports['green']}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        procs.append(serve)
        url = f"http://127.0.0.1:{admin}"
        _wait_http(f"{url}/healthz", serve, "bluegreen serve")
        yield url
        assert serve.poll() is None, "the replica survived the fuzzing"
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def built_document() -> dict[str, Any]:
    """The document a replica with the test config serves (default attestations)."""
    controller = RolloutController(None, ControllerSettings(), lead=False)  # type: ignore[arg-type]
    routes, schemas = rollout_routes(controller)
    return build_document((*ROUTES, *routes), schemas=schemas)


schema = schemathesis.openapi.from_dict(
    built_document(),
    config=schemathesis.Config.from_dict(
        {
            "checks": {
                "negative_data_rejection": {"expected-statuses": REJECTIONS},
                "positive_data_acceptance": {"expected-statuses": ACCEPTANCES},
            }
        }
    ),
).include(path_regex="^/api/v1/rollout")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_rollout_api_survives_fuzzing(case: schemathesis.Case, served: str) -> None:
    excluded = [positive_data_acceptance] if case.operation.label == "POST /api/v1/rollout" else []
    case.call_and_validate(
        base_url=served,
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
        excluded_checks=excluded,
    )


def test_served_document_is_the_built_one_and_valid_openapi(served: str) -> None:
    with urllib.request.urlopen(f"{served}/api/v1/openapi.json", timeout=10) as answer:  # noqa: S310 - loopback URL
        document = json.loads(answer.read())
    assert document == json.loads(json.dumps(built_document()))
    validate(document)
    paths = document["paths"]
    assert set(paths["/api/v1/rollout"]) == {"get", "post"}
    for command in ("pause", "resume", "promote", "abort", "contract", "preflight"):
        operation = paths[f"/api/v1/rollout/{command}"]["post"]
        assert operation["security"] == [{"bearer": []}]
    attest = document["components"]["schemas"]["RolloutStart"]["properties"]["attest"]
    assert attest["oneOf"][0]["items"]["enum"] == [
        "staging_tested",
        "team_notified",
        "rollback_runbook",
    ]


def test_commands_need_the_token(served: str) -> None:
    request = urllib.request.Request(  # noqa: S310 - loopback URL
        f"{served}/api/v1/rollout/abort", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - loopback URL
    caught.value.close()
    assert caught.value.code == 401
