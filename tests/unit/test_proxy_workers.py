"""Pieces of ``serve --workers``: the ``workers`` key, the wire, and adding workers up."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bluegreen.config import Config, parse_config, with_overrides
from bluegreen.errors import ConfigError
from bluegreen.metrics import ColourStats, PoolGauge
from bluegreen.routing import Colour
from bluegreen.worker import WorkerInit, WorkerStats, encode, read_message
from bluegreen.workers import _sum_gauges, _Totals, usable_cpus, worker_count


@pytest.mark.parametrize(
    ("value", "expected"), [(2, 2), ("4", 4), ("auto", "auto"), ("AUTO", "auto")]
)
def test_workers_key_takes_a_count_or_auto(value: object, expected: object) -> None:
    assert parse_config({"workers": value}).workers == expected


@pytest.mark.parametrize("value", [0, -1, "many", True, 1025])
def test_workers_key_refuses_what_is_not_a_count(value: object) -> None:
    with pytest.raises(ConfigError, match="workers") as caught:
        parse_config({"workers": value})
    assert caught.value.key == "workers"


def test_workers_default_is_one_per_cpu_and_the_flag_overrides_the_file() -> None:
    assert Config().workers == "auto"
    assert parse_config({}).workers == "auto"
    assert worker_count(Config()) == usable_cpus()
    assert with_overrides(parse_config({"workers": 3}), workers="2").workers == 2
    assert worker_count(with_overrides(Config(), workers="auto")) == usable_cpus() >= 1


async def test_messages_cross_the_wire_config_included() -> None:
    config = with_overrides(Config(), blue=["127.0.0.1:9001"], green=["127.0.0.1:9002"])
    init = WorkerInit(slot=1, config=config, host="127.0.0.1", port=8080, state="{}")
    reader = asyncio.StreamReader()
    reader.feed_data(encode(("init", init)) + encode(("drain",)))
    reader.feed_eof()
    assert await read_message(reader) == ("init", init)
    assert await read_message(reader) == ("drain",)
    assert await read_message(reader) is None


def _stats(requests: int, in_flight: int) -> WorkerStats:
    blue = ColourStats(Colour.BLUE)
    for _ in range(requests):
        blue.observe(200, 0.002)
    blue.in_flight = in_flight
    return WorkerStats(
        blue=blue.snapshot(),
        green=ColourStats(Colour.GREEN).snapshot(),
        rejected={400: 1},
        mirrors=(1, 0, 0),
        pools=(),
        log_dropped=0,
    )


def test_a_dead_workers_counters_are_kept_but_its_in_flight_is_not() -> None:
    totals = _Totals()
    totals.live = _stats(requests=5, in_flight=2)
    assert totals.snapshot().blue.in_flight == 2
    totals.fold()  # the worker died
    assert totals.snapshot().blue.requests == 5
    assert totals.snapshot().blue.in_flight == 0
    totals.live = _stats(requests=3, in_flight=1)  # its replacement starts from zero
    snap = totals.snapshot().blue
    assert (snap.requests, snap.in_flight, snap.by_class[1]) == (8, 1, 8)
    assert totals.base_rejected == {400: 1}
    assert totals.base_mirrors == (1, 0, 0)


def test_pool_gauges_of_workers_add_up_per_server() -> None:
    a = PoolGauge(Colour.BLUE, "127.0.0.1:9001", idle=2, busy=1, waiting=0)
    b = dataclasses.replace(a, idle=1, busy=3, waiting=4)
    assert _sum_gauges(a, b) == PoolGauge(Colour.BLUE, "127.0.0.1:9001", 3, 4, 4)
