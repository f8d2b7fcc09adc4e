"""The health: section: probes map to ProbeThresholds, analysis limits to AnalysisConfig."""

from __future__ import annotations

import pytest

from bluegreen.errors import ConfigError
from bluegreen.health.analysis import AnalysisConfig, InconclusivePolicy
from bluegreen.health.probe_state import ProbeHealth, ProbeThresholds
from bluegreen.rollout_config import HealthConfig, ProbeConfig
from bluegreen.rollout_config_parse import parse_health


def test_defaults_are_the_pure_cores_defaults() -> None:
    cfg = parse_health(None, "health")
    assert cfg == HealthConfig()
    assert cfg.analysis == AnalysisConfig()
    assert cfg.probes.thresholds == ProbeThresholds()
    assert cfg.probes.path == "/health"
    assert 200 in cfg.probes.expected_status
    assert 399 in cfg.probes.expected_status
    assert 404 not in cfg.probes.expected_status


def test_full_section_maps_to_the_cores() -> None:
    cfg = parse_health(
        {
            "probes": {
                "enabled": False,
                "path": "/healthz",
                "method": "head",
                "headers": {"Host": "app.internal"},
                "interval": "5s",
                "timeout": "500ms",
                "expected_status": [200, 204],
                "healthy_threshold": 1,
                "unhealthy_threshold": 4,
                "initial": "healthy",
                "first_success_marks_healthy": False,
                "max_connections": 8,
                "first_probe_jitter": 0,
            },
            "analysis": {
                "enabled": False,
                "interval": "10s",
                "min_requests": 200,
                "max_error_percent": "2%",
                "error_margin_percent": 0.5,
                "p99_factor": 2,
                "p99_floor": "20ms",
                "max_p99": "1s",
                "consecutive_failure_limit": 3,
                "failure_limit": 5,
                "consecutive_error_limit": 4,
                "inconclusive_limit": 6,
                "on_inconclusive": "fail",
            },
        },
        "health",
    )
    assert cfg.probes == ProbeConfig(
        enabled=False,
        path="/healthz",
        method="HEAD",
        headers=(("Host", "app.internal"),),
        interval=5.0,
        timeout=0.5,
        expected_status=cfg.probes.expected_status,
        thresholds=ProbeThresholds(1, 4, ProbeHealth.HEALTHY, False),
        max_connections=8,
        first_probe_jitter=0.0,
    )
    assert str(cfg.probes.expected_status) == "200 or 204"
    assert not cfg.analysis_enabled
    assert cfg.analysis_interval == 10
    assert cfg.analysis == AnalysisConfig(
        min_requests=200,
        max_error_rate=0.02,
        error_rate_margin=0.005,
        p99_factor=2.0,
        p99_floor_seconds=0.02,
        max_p99_seconds=1.0,
        consecutive_failure_limit=3,
        failure_limit=5,
        consecutive_error_limit=4,
        inconclusive_limit=6,
        on_inconclusive=InconclusivePolicy.FAIL,
    )


def test_null_clears_an_optional_limit() -> None:
    cfg = parse_health({"analysis": {"max_p99": None, "failure_limit": None}}, "health")
    assert cfg.analysis.max_p99_seconds is None
    assert cfg.analysis.failure_limit is None


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"probes": {"timeout": "3s"}}, "health.probes.timeout", "longer than the interval"),
        ({"probes": {"method": "POST"}}, "health.probes.method", "GET or HEAD"),
        ({"probes": {"interval": 0}}, "health.probes.interval", "greater than 0"),
        ({"probes": {"healthy_threshold": 0}}, "health.probes.healthy_threshold", "out of range"),
        ({"probes": {"initial": "maybe"}}, "health.probes.initial", "healthy or unhealthy"),
        ({"probes": {"path": "health"}}, "health.probes.path", "request path"),
        ({"analysis": {"on_inconclusive": "shrug"}}, "health.analysis.on_inconclusive", "pause"),
        ({"analysis": {"p99_factor": 0.5}}, "health.analysis.p99_factor", "at least 1"),
        ({"analysis": {"max_error_percent": 120}}, "health.analysis.max_error_percent", "0..100"),
        ({"analysis": {"min_requests": 0}}, "health.analysis.min_requests", "out of range"),
        ({"analysis": {"windows": 3}}, "health.analysis.windows", "unknown key"),
        ({"probe": {}}, "health.probe", "unknown key"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_mistakes_name_the_key(data: object, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_health(data, "health")
    assert info.value.key == key
    assert message in info.value.problem
