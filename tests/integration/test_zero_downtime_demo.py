"""``bluegreen demo`` end to end: the whole rollout under load, and its two failure variants.

Each test runs the real command (``python -m bluegreen demo --output json``)
as a child process on the test PostgreSQL server: two app processes, one
``bluegreen serve`` with its rollout controller, a paced mixed read/write
load through the proxy, and the seed's migrations (expand, batched backfill,
validate, contract). The assertions read the report the command prints, which
counts every request the load generator sent.
"""

from __future__ import annotations

import pytest

from bluegreen.demo.config import ANALYSIS_INTERVAL, FAILURE_LIMIT, PROBE_INTERVAL
from tests.integration.zero_downtime_support import colour_count, demo_json, segments

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RATE = 100  # requests/s: enough for the analysis (20 per window and colour at 50 %)
SHORT = ("--rate", str(RATE), "--rows", "3000")


def phases_in_order(report: dict[str, object]) -> list[tuple[str, float]]:
    """(phase, green weight) of the timeline, consecutive repeats folded."""
    seen: list[tuple[str, float]] = []
    for entry in report["timeline"]:  # type: ignore[attr-defined]
        key = (entry["phase"], entry["green_weight"])
        if not seen or seen[-1] != key:
            seen.append(key)
    return seen


async def test_the_full_rollout_under_load_loses_no_request(pg_dsn: str) -> None:
    # Bakes of 1.5 s make the rollout last ~9.5 s: with 1 s it took 7.9-8.1 s on a
    # fast machine, which put the 800-request floor below at the edge.
    code, report, stderr = await demo_json(
        *SHORT, "--bake", "1.5s", "--grace", "500ms", database_url=pg_dsn
    )
    assert report["outcome"] == "promoted", stderr
    assert report["failed_requests"] == 0, report["phases"]
    assert report["ok"] is True
    assert code == 0
    # The load really ran at its rate for the whole rollout (bakes, migrations, contract).
    assert report["requests"] >= 0.8 * RATE * report["duration_seconds"]
    assert report["requests"] > 800
    colours = report["colours"]
    assert colours["blue"]["requests"] > 100
    assert colours["green"]["requests"] > 100
    assert set(colours) == {"blue", "green"}  # every request was answered by an app
    # 10 -> 50 -> 100 %, each step confirmed then baked, then promoted.
    weights = [(p, w) for p, w in phases_in_order(report) if p in ("ramp", "bake")]
    assert weights == [
        ("ramp", 10.0),
        ("bake", 10.0),
        ("ramp", 50.0),
        ("bake", 50.0),
        ("ramp", 100.0),
        ("bake", 100.0),
    ]
    # Blue served alone while the expand and migrate phases ran under load.
    (migrating,) = segments(report, "migrating")
    assert colour_count(migrating, "blue") > 0
    assert migrating["failed_requests"] == 0
    applied = [(m["name"][:4], m["phase"]) for m in report["migrations"]]
    assert applied == [
        ("0001", "expand"),
        ("0002", "expand"),
        ("0003", "expand"),
        ("0004", "migrate"),
        ("0005", "migrate"),
        ("0006", "contract"),
    ]
    assert report["rollout"]["contract"] == "done"
    # v2 kept serving after the contract dropped orders.status.
    last = report["phases"][-1]
    assert "contract done" in last["note"]
    assert colour_count(last, "green") > 0
    assert last["failed_requests"] == 0
    assert report["work_dir"] is None  # a good run cleans up after itself


async def test_green_breaking_at_50_percent_falls_back_automatically(pg_dsn: str) -> None:
    code, report, stderr = await demo_json(
        *SHORT, "--break", "green", "--bake", "4s", database_url=pg_dsn
    )
    assert report["outcome"] == "rolled_back", stderr
    assert report["variant"] == "break green"
    # Bound: the injected 500s show in the first analysis window that contains them (at
    # most one window after they start), FAILURE_LIMIT failing windows in a row decide,
    # then the 0 % is stored with the decision and confirmed by the replica's next
    # heartbeat (fast heartbeats, ~PROBE_INTERVAL). 1.5 s for a loaded 2-core machine.
    bound = (FAILURE_LIMIT + 1) * ANALYSIS_INTERVAL + PROBE_INTERVAL + 1.5
    assert 0 < report["detection_seconds"] <= report["fallback_seconds"] < bound, report
    assert report["rollout"]["failure"]["code"] in ("error_rate_above_baseline", "error_rate")
    # The break was real: green's 500s to POST/PATCH reached clients until the fallback,
    # and nothing else; every idempotent request green failed was answered by blue.
    assert report["failed_requests"] > 0
    assert report["failed_idempotent"] == 0, report["phases"]
    assert report["failed_requests"] == report["allowed_failures"]
    assert report["ok"] is True
    assert code == 0
    assert set(report["colours"]["green"]["outcomes"]) <= {"2xx", "4xx", "500"}
    assert report["colours"]["blue"]["failed_requests"] == 0
    # After the fallback blue serves everything, without a failure.
    after = segments(report, "rolling_back") + segments(report, "rolled_back")
    assert after
    for row in after:
        assert colour_count(row, "green") == 0
        assert row["failed_requests"] == 0
    assert sum(colour_count(row, "blue") for row in after) > 50


async def test_green_killed_mid_ramp_costs_no_idempotent_request(pg_dsn: str) -> None:
    code, report, stderr = await demo_json(
        *SHORT, "--kill", "green", "--bake", "4s", database_url=pg_dsn
    )
    assert report["outcome"] == "rolled_back", stderr
    assert report["variant"] == "kill green"
    # Requests that found green's port closed were retried on blue by the proxy.
    assert report["failed_idempotent"] == 0, report["phases"]
    # At most the writes in flight on green when it died may fail (they may have committed).
    assert report["failed_requests"] == report["allowed_failures"]
    assert report["ok"] is True
    assert code == 0
    killed = next(e for e in report["timeline"] if "killed" in e["note"])
    assert killed["phase"] == "bake"
    assert killed["green_weight"] == 50.0
    after_kill = [p for p in report["phases"] if p["at_seconds"] >= killed["at_seconds"]]
    assert sum(colour_count(row, "blue") for row in after_kill) > 50
    assert all(colour_count(row, "green") == 0 for row in after_kill)
    assert report["fallback_seconds"] is not None
