"""The ``bluegreen serve`` configuration ``bluegreen demo`` generates. Pure: builds a document.

The demo runs the real proxy and the real rollout controller, configured as a
small production setup would be, only faster: bakes of seconds instead of
minutes, a half-second analysis window, probes every quarter second and a
contract grace of seconds instead of a day. Every key is one an operator can
write in ``config/bluegreen.yaml``; :func:`write_serve_config` writes the file
the demo passes to ``bluegreen serve --config`` (``bluegreen demo --keep``
leaves it behind, so it can be read and reused).

Secrets stay out of the file: the admin token comes from
``BLUEGREEN_ADMIN_TOKEN`` and the database URL (smoke tests' SQL check and the
rollout's migrations) from ``DATABASE_URL``, both in the environment of the
``serve`` process.

Two choices differ from what a production config would say, on purpose:

* ``health.analysis.p99_floor: 1s``. On a laptop running the load, the
  proxy, both apps and PostgreSQL on a few cores, p99 latency jitters by tens
  of milliseconds; a latency "regression" below a second is noise here.
* ``retries.statuses`` includes 500. The app's injected failure
  (``--break``) is a 500 answered before any work, so an idempotent request
  green fails is safely sent once more to blue; the default list leaves 500
  out because an application's 500 may come after it did something.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from bluegreen.demo import MIGRATIONS_DIR

ANALYSIS_INTERVAL: Final = 0.5  # seconds: one analysis window
FAILURE_LIMIT: Final = 2  # failing windows in a row before the fallback
PROBE_INTERVAL: Final = 0.25
MIN_REQUESTS: Final = 20  # per window and colour before the error rate is compared
STEP_WEIGHTS: Final = (10.0, 50.0, 100.0)
RETRY_STATUSES: Final = (500, 502, 503, 504)  # retries.statuses (see the module docstring)


@dataclass(frozen=True, slots=True)
class DemoServeSettings:
    """What varies between demo runs; everything else is fixed by :func:`serve_config`."""

    proxy_port: int
    blue: str  # host:port of the blue app
    green: str
    state_url: str  # file:PATH (one replica) or postgresql://... (several)
    bake: float = 5.0  # seconds per ramp step
    contract_grace: float = 3.0  # seconds between the old colour draining and the contract
    steps: Sequence[float] = STEP_WEIGHTS
    access_log: Path | None = None  # None: no access log
    migrations_dir: Path = MIGRATIONS_DIR
    drain: float = 10.0  # timeouts.drain: in-flight requests get this long on SIGTERM
    extra: Mapping[str, Any] = field(default_factory=dict)  # top-level sections merged in


def _duration(seconds: float) -> str:
    """``1.5s`` / ``250ms``: the config's duration syntax."""
    if seconds < 1 and seconds * 1000 == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    return f"{seconds:g}s"


def smoke_section() -> dict[str, Any]:
    """Smoke checks for the orders app, sent straight to one colour's server.

    The target (v2, after the expand and migrate phases) must be healthy,
    really run the version rolled out, read and write orders, and find the
    schema it needs; the live colour (v1) must still read and write on the
    new schema (the seed's "does the old code work with the migration?").
    """
    write = {
        "method": "POST",
        "path": "/orders",
        "json": {"customer": "smoke-{role}-{colour}", "amount": 1.5, "status": "paid"},
        "expect": {"status": 201, "json": {"status": "paid"}},
    }
    return {
        "database_url": "${DATABASE_URL}",
        "target": [
            {"name": "health", "http": "/health"},
            {
                "name": "version",
                "http": {"path": "/version", "expect": {"json": {"version": "{version}"}}},
            },
            {"name": "read", "http": {"path": "/orders?limit=5", "expect": {"status": 200}}},
            {"name": "write", "http": write},
            {"name": "schema", "sql": {"require": ["orders.status_code"], "min_version": 5}},
        ],
        "live": [
            {"name": "health", "http": "/health"},
            {"name": "read", "http": {"path": "/orders?limit=5", "expect": {"status": 200}}},
            {"name": "write", "http": write},
        ],
    }


def serve_config(settings: DemoServeSettings) -> dict[str, Any]:
    """The config document for one demo ``serve`` process (dump it as YAML)."""
    s = settings
    access_log: dict[str, Any] = (
        {"enabled": True, "path": str(s.access_log)}
        if s.access_log is not None
        else {"enabled": False}
    )
    doc: dict[str, Any] = {
        "listeners": {"proxy": f"127.0.0.1:{s.proxy_port}", "admin": "127.0.0.1:0"},
        # Heartbeats every 250 ms: a weight step counts once every replica applied it.
        "state": {"url": s.state_url, "heartbeat_interval": "250ms", "replica_expiry": "2s"},
        "upstreams": {"blue": {"servers": [s.blue]}, "green": {"servers": [s.green]}},
        # No sticky key: the load's requests are split exactly by weight.
        "routing": {"green_weight": 0},
        "timeouts": {"connect": "1s", "upstream_read": "10s", "drain": _duration(s.drain)},
        # The app's injected failures are 500s: an idempotent request green
        # answers so is sent once more to blue (green's stats still count it).
        "retries": {"statuses": list(RETRY_STATUSES)},
        "access_log": access_log,
        "health": {
            "probes": {
                "path": "/health",
                "interval": _duration(PROBE_INTERVAL),
                "timeout": "200ms",
                # One good /health is enough for green once its migrations ran.
                "healthy_threshold": 1,
                "unhealthy_threshold": 2,
            },
            "analysis": {
                "interval": _duration(ANALYSIS_INTERVAL),
                "min_requests": MIN_REQUESTS,
                "error_margin_percent": 1,
                "max_error_percent": 5,
                "consecutive_failure_limit": FAILURE_LIMIT,
                "p99_factor": 3,
                "p99_floor": "1s",
            },
        },
        "smoke": smoke_section(),
        "preflight": {
            "items": {
                "backup_recent": "skip",  # throwaway demo data
                "notifications_configured": "warn",
            }
        },
        "rollout": {
            "steps": [{"weight": w, "bake": _duration(s.bake)} for w in s.steps],
            "confirm_timeout": "10s",
            "drain_timeout": "10s",
            "check_old_colour": True,
            "down_migrations_on_rollback": False,
            "contract_grace": _duration(s.contract_grace),
            "auto_contract": True,
            "leadership_retry": "500ms",
            "migrations": {
                "directory": str(s.migrations_dir),
                "database_url": "${DATABASE_URL}",
                "lock_timeout": "2s",
            },
        },
    }
    for key, value in s.extra.items():
        doc[key] = value
    return doc


def write_serve_config(path: Path, settings: DemoServeSettings) -> Path:
    """Write :func:`serve_config` as YAML to ``path``; returns ``path``."""
    header = (
        "# Generated by `bluegreen demo`: the proxy and rollout controller of the demo.\n"
        "# Secrets come from the environment: BLUEGREEN_ADMIN_TOKEN, DATABASE_URL.\n"
    )
    path.write_text(header + yaml.safe_dump(serve_config(settings), sort_keys=False))
    return path
