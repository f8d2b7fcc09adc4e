"""Fuzz the admin API with schemathesis against its own OpenAPI document.

A real control plane (proxy, file state store, replica heartbeating,
upstreams) runs in a background thread on 127.0.0.1:0; schemathesis loads
the OpenAPI document it serves and sends valid and invalid requests to
every operation, running all of its default checks: no 5xx, status codes,
content types, headers and bodies as documented, valid data accepted and
invalid data rejected, 401 without the token, 405 for other methods.

Bounded and deterministic (``derandomize``) so CI is stable. The event
stream is left out: it never ends, so a request-response fuzzer cannot judge
it (``test_admin_api`` covers it).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_spec_validator import validate

from bluegreen.admin import ROUTES
from bluegreen.admin_openapi import build_document
from tests.integration.admin_fixtures import TOKEN, running_admin
from tests.integration.upstreams import start_upstream

MAX_EXAMPLES = 50


class ServerThread:
    """The control plane of :func:`running_admin`, in its own thread and event loop."""

    def __init__(self, state_path: Path) -> None:
        self.state_path = state_path
        self.url = ""
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="admin-fuzz-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # surfaced to the test through .error
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        blue, green = await start_upstream("blue"), await start_upstream("green")
        try:
            async with running_admin(self.state_path, blue, green) as env:
                self.url = env.url
                self.ready.set()
                await self._stop.wait()
        finally:
            await blue.close()
            await green.close()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self.ready.wait(30) or self.error is not None:
            raise RuntimeError(f"admin server did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


@pytest.fixture(scope="module")
def admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ServerThread(tmp_path_factory.mktemp("fuzz") / "state.json") as server:
        yield server.url


# The document the server serves (test_openapi_document_served_is_the_built_one
# holds them equal), loaded at import so pytest can parametrize over operations.
# 413 (body over admin.max_body_bytes) is a rejection too; 5xx never is. A schema
# cannot bound a body's total size, so a valid but huge body (1,000 allow-list keys
# of 256 characters, each \uXXXX-escaped) may get 413 as well.
REJECTIONS = ["400", "401", "403", "404", "405", "409", "413", "415", "422", "429"]
ACCEPTANCES = ["2xx", "401", "403", "404", "409", "413"]
schema = schemathesis.openapi.from_dict(
    build_document(ROUTES),
    config=schemathesis.Config.from_dict(
        {
            "checks": {
                "negative_data_rejection": {"expected-statuses": REJECTIONS},
                "positive_data_acceptance": {"expected-statuses": ACCEPTANCES},
            }
        }
    ),
)


@schema.exclude(path="/api/v1/events").parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_admin_api_survives_fuzzing(case: schemathesis.Case, admin_url: str) -> None:
    if (case.path_parameters or {}).get("name") == "evaluate":
        # /api/v1/flags/evaluate is its own (documented) operation: OpenAPI matches a
        # literal path before a template, so the "negative" name=evaluate for
        # /flags/{name} is not a request to that operation at all.
        return
    case.call_and_validate(
        base_url=admin_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )


def test_openapi_document_is_valid_openapi_3_1() -> None:
    validate(build_document(ROUTES))  # raises on any violation of the 3.1 schema


def test_openapi_document_describes_every_route_and_nothing_else() -> None:
    document = build_document(ROUTES)
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert documented == {(r.method, r.path) for r in ROUTES}


def test_openapi_document_served_is_the_built_one(admin_url: str) -> None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{admin_url}/api/v1/openapi.json", timeout=10) as answer:  # noqa: S310 - loopback URL
        served = json.loads(answer.read())
    assert served == json.loads(json.dumps(build_document(ROUTES)))
