"""Active-probe threshold tracking: one test per branch."""

from __future__ import annotations

import pytest

from bluegreen.health.probe_state import (
    ColourProbes,
    ProbeChange,
    ProbeHealth,
    ProbeSummary,
    ProbeThresholds,
    ServerProbe,
)
from bluegreen.routing import Colour

HEALTHY, UNHEALTHY = ProbeHealth.HEALTHY, ProbeHealth.UNHEALTHY


def results(probe: ServerProbe, *oks: bool) -> tuple[ServerProbe, list[ProbeChange | None]]:
    changes = []
    for i, ok in enumerate(oks):
        probe, change = probe.observe(ok, at=float(i), detail="200" if ok else "connect refused")
        changes.append(change)
    return probe, changes


def test_a_new_server_starts_unhealthy_and_its_first_success_makes_it_healthy() -> None:
    probe = ServerProbe.new("10.0.0.1:8081")
    assert (probe.health, probe.checked) == (UNHEALTHY, False)
    probe, changes = results(probe, True)
    assert changes == [ProbeChange("10.0.0.1:8081", UNHEALTHY, HEALTHY, 0.0, "200")]
    assert (probe.healthy, probe.changed_at, probe.checked) == (True, 0.0, True)


def test_without_the_startup_rule_a_new_server_needs_the_healthy_threshold() -> None:
    t = ProbeThresholds(healthy_threshold=3, first_success_marks_healthy=False)
    probe, changes = results(ServerProbe.new("s", t), True, True, True)
    assert [c is not None for c in changes] == [False, False, True]
    assert probe.healthy


def test_a_healthy_server_turns_unhealthy_after_the_unhealthy_threshold() -> None:
    probe, _ = results(ServerProbe.new("s"), True)
    probe, changes = results(probe, False, False, False)
    assert [c is not None for c in changes] == [False, False, True]
    assert changes[-1] == ProbeChange("s", HEALTHY, UNHEALTHY, 2.0, "connect refused")
    assert (probe.health, probe.failures, probe.detail) == (UNHEALTHY, 3, "connect refused")


def test_a_success_resets_the_run_of_failures() -> None:
    probe, _ = results(ServerProbe.new("s"), True)
    probe, changes = results(probe, False, False, True, False, False)
    assert changes == [None] * 5
    assert (probe.healthy, probe.failures, probe.successes) == (True, 2, 0)


def test_an_unhealthy_server_needs_the_healthy_threshold_to_recover() -> None:
    probe, _ = results(ServerProbe.new("s"), True, False, False, False)
    probe, changes = results(probe, True, False, True, True)
    assert [c is not None for c in changes] == [False, False, False, True]
    assert probe.healthy


def test_a_server_may_start_healthy_and_needs_failures_to_drop() -> None:
    probe = ServerProbe.new("s", ProbeThresholds(initial=HEALTHY, unhealthy_threshold=2))
    probe, changes = results(probe, False, False)
    assert [c is not None for c in changes] == [False, True]


def test_unchanged_health_reports_no_change_and_keeps_changed_at() -> None:
    probe, _ = results(ServerProbe.new("s"), True)
    probe, changes = results(probe, True, True)
    assert changes == [None, None]
    assert probe.changed_at == 0.0


@pytest.mark.parametrize(
    "kwargs",
    [{"healthy_threshold": 0}, {"unhealthy_threshold": -1}, {"healthy_threshold": True}],
    ids=["zero", "negative", "bool"],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        ProbeThresholds(**kwargs)  # type: ignore[arg-type]


def test_colour_probes_track_each_server_and_summarise() -> None:
    probes = ColourProbes.new(Colour.GREEN, ["a:1", "b:2", "c:3"])
    assert probes.summary() == ProbeSummary(3, 3)
    probes, change = probes.observe("a:1", True, at=1.0)
    assert change is not None
    assert change.server == "a:1"
    probes, _ = probes.observe("b:2", True, at=1.0)
    assert probes.summary() == ProbeSummary(3, 1)
    assert probes.get("c:3").health is UNHEALTHY


def test_an_unknown_server_is_named_in_the_error() -> None:
    with pytest.raises(KeyError, match="green has no server 'x:9'"):
        ColourProbes.new(Colour.GREEN, ["a:1"]).observe("x:9", True, at=0.0)


def test_a_server_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="blue servers listed twice"):
        ColourProbes.new(Colour.BLUE, ["a:1", "a:1"])


def test_summary_fractions() -> None:
    assert ProbeSummary(4, 1).unhealthy_fraction == 0.25
    assert ProbeSummary(0, 0).unhealthy_fraction == 0.0
    assert ProbeSummary(2, 2).all_unhealthy
    assert not ProbeSummary(0, 0).all_unhealthy


@pytest.mark.parametrize(("servers", "unhealthy"), [(-1, 0), (2, 3), (2, -1)])
def test_inconsistent_summaries_are_refused(servers: int, unhealthy: int) -> None:
    with pytest.raises(ValueError, match="0 <= unhealthy <= servers"):
        ProbeSummary(servers, unhealthy)
