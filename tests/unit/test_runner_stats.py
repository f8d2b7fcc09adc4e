"""Cluster-wide traffic numbers: heartbeat payloads, windows over replicas, drains."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bluegreen.controller.stats import (
    LATENCY_BOUNDS,
    ColourTraffic,
    ReplicaTraffic,
    cluster_window,
    drain_status,
    traffic_from_extra,
    traffic_payload,
    wants_fast_heartbeats,
)
from bluegreen.metrics import ColourStats, StatsSnapshot
from bluegreen.routing import Colour


def snapshot(blue: ColourStats, green: ColourStats) -> StatsSnapshot:
    return StatsSnapshot(at=1.0, blue=blue.snapshot(), green=green.snapshot())


def traffic(
    requests: int = 0, e5xx: int = 0, retries: int = 0, in_flight: int = 0
) -> ColourTraffic:
    return ColourTraffic(requests=requests, errors_5xx=e5xx, retries=retries, in_flight=in_flight)


def both(blue: ColourTraffic, green: ColourTraffic) -> dict[Colour, ColourTraffic]:
    return {Colour.BLUE: blue, Colour.GREEN: green}


def test_heartbeat_payload_round_trips() -> None:
    blue, green = ColourStats(Colour.BLUE), ColourStats(Colour.GREEN)
    for status in (200, 200, 503):
        green.observe(status, 0.003)
    green.retries = 2
    green.in_flight = 4
    blue.observe(200, 0.2)
    decoded = traffic_from_extra({"traffic": traffic_payload(snapshot(blue, green))})
    assert decoded is not None
    assert decoded[Colour.GREEN] == ColourTraffic(3, 1, 0, 0, 2, 4, decoded[Colour.GREEN].latency)
    assert sum(decoded[Colour.GREEN].latency) == 3
    assert len(decoded[Colour.BLUE].latency) == len(LATENCY_BOUNDS)


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"traffic": "x"},
        {"traffic": {"blue": {}}},
        {"traffic": {"blue": traffic().to_json()}},
        {
            "traffic": {
                "blue": traffic().to_json(),
                "green": {**traffic().to_json(), "requests": -1},
            }
        },
    ],
    ids=["absent", "not-object", "colour-empty", "colour-missing", "negative"],
)
def test_malformed_heartbeat_traffic_is_unknown(extra: dict[str, object]) -> None:
    assert traffic_from_extra(extra) is None


def test_retried_connect_failures_count_as_failures_of_the_colour_that_failed() -> None:
    counters = traffic(requests=10, e5xx=1, retries=5).counters()
    assert counters.requests == 15
    assert counters.errors_5xx + counters.connect_errors + counters.timeouts == 6


def test_cluster_window_sums_replicas_and_skips_new_ones() -> None:
    before = {
        "a": both(traffic(100), traffic(10)),
        "b": both(traffic(50), traffic(5)),
    }
    after = {
        "a": both(traffic(150), traffic(20, e5xx=3)),
        "b": both(traffic(60), traffic(15)),
        "new": both(traffic(1000), traffic(1000, e5xx=1000)),
    }
    windows = cluster_window(before, after)
    assert windows[Colour.BLUE].requests == 60
    assert windows[Colour.GREEN].requests == 20
    assert windows[Colour.GREEN].failures == 3


def test_cluster_window_treats_a_counter_reset_as_a_restart() -> None:
    windows = cluster_window(
        {"a": both(traffic(500), traffic(500))}, {"a": both(traffic(7), traffic(3))}
    )
    assert windows[Colour.BLUE].requests == 7
    assert windows[Colour.GREEN].requests == 3


def test_drain_waits_for_replicas_behind_or_busy() -> None:
    drained = both(traffic(), traffic())
    busy = both(traffic(), traffic(in_flight=2))
    status = drain_status(
        [
            ReplicaTraffic("a", 12, drained),
            ReplicaTraffic("b", 11, drained),
            ReplicaTraffic("c", 12, busy),
            ReplicaTraffic("d", 12, None),
        ],
        Colour.GREEN,
        12,
    )
    assert not status.drained
    assert status.waiting == (
        "b: has not applied version 12 yet",
        "c: 2 in flight",
        "d: does not report requests in flight (upgrade bluegreen)",
    )
    ok = drain_status([ReplicaTraffic("a", 12, busy)], Colour.BLUE, 12)
    assert ok.drained
    assert ok.waiting == ()
    assert not drain_status([], Colour.BLUE, 1).drained


@pytest.mark.parametrize(
    ("record", "fast"),
    [
        (None, False),
        ({"phase": "bake"}, True),
        ({"phase": "rolling_back"}, True),
        ({"phase": "promoted", "contract": "draining"}, True),
        ({"phase": "promoted", "contract": "done"}, False),
        ({"phase": "rolled_back"}, False),
    ],
    ids=["none", "bake", "rolling-back", "promoted-draining", "promoted-done", "rolled-back"],
)
def test_fast_heartbeats_while_a_rollout_needs_them(
    record: dict[str, str] | None, fast: bool
) -> None:
    assert wants_fast_heartbeats(record) is fast


def test_pure_modules_load_no_io_libraries() -> None:
    code = (
        "import sys, bluegreen.controller.stats, bluegreen.controller.records;"
        "bad = [m for m in ('aiohttp', 'asyncpg', 'asyncio') if m in sys.modules];"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
