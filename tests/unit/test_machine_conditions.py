"""Reasons, facts and message helpers of the rollout controller."""

from __future__ import annotations

import pytest

from bluegreen.controller import conditions as c
from bluegreen.controller.conditions import Fact, Reason, parse_failure_code
from bluegreen.controller.machine import (
    DownMigrationsFailed,
    Event,
    Restarted,
    Resume,
    Tick,
    transition,
)
from bluegreen.health.analysis import VerdictReason
from tests.unit.test_machine_states import STATES, build


@pytest.mark.parametrize("code", [*Reason, *VerdictReason], ids=str)
def test_every_reason_code_reads_back(code: Reason | VerdictReason) -> None:
    assert parse_failure_code(code.value) is code


def test_reason_codes_are_unique_across_controller_and_analysis() -> None:
    assert not {r.value for r in Reason} & {v.value for v in VerdictReason}


def test_an_unknown_reason_code_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown reason code 'x'; known codes: .*operator_abort"):
        parse_failure_code("x")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.04, "40 ms"),
        (-1, "0 ms"),
        (2.5, "2.5 s"),
        (3.0, "3 s"),
        (45, "45 s"),
        (125, "2 min 5 s"),
        (120, "2 min"),
        (3600, "1 h"),
        (12_000, "3 h 20 min"),
        (86_400, "1 d"),
        (93_600, "1 d 2 h"),
    ],
)
def test_human_seconds(seconds: float, text: str) -> None:
    assert c.human_seconds(seconds) == text


@pytest.mark.parametrize(
    ("bp", "text"), [(0, "0 %"), (1000, "10 %"), (1050, "10.5 %"), (1, "0.01 %")]
)
def test_percent(bp: int, text: str) -> None:
    assert c.percent(bp) == text


def test_every_fact_can_happen() -> None:
    seen = {e.fact for name in STATES if (r := build(name).rollout) for e in r.log}
    extra: list[tuple[str, Event, float]] = [
        ("bake_paused", Resume(), 20.0),
        ("bake", Restarted(), 20.0),
        ("rolling_back_weights", Tick(), 1e6),
        ("rolling_back_drain", Tick(), 1e6),
        ("rolling_back_down", DownMigrationsFailed("x"), 30.0),
    ]
    for state, event, now in extra:
        r, _ = transition(build(state).rollout, event, now)
        seen |= {e.fact for e in r.log}
    assert seen == set(Fact)
