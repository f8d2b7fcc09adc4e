"""bluegreen.metrics: hot-path counters, snapshots and the Prometheus exposition."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily

from bluegreen.metrics import DURATION_BUCKETS, ColourStats, PoolGauge, ProxyMetrics
from bluegreen.routing import Colour


def test_observe_counts_status_class_and_bucket() -> None:
    stats = ColourStats(Colour.BLUE)
    stats.observe(200, 0.0005)
    stats.observe(204, 0.001)  # on a bound: counted in that bucket (le)
    stats.observe(499, 0.3)
    stats.observe(502, 100.0)  # beyond the last bound: +Inf
    snap = stats.snapshot()
    assert snap.requests == 4
    assert snap.by_class == (0, 2, 0, 1, 1)
    assert snap.errors_5xx == 1
    assert snap.duration_counts[0] == 2
    assert snap.duration_counts[DURATION_BUCKETS.index(0.5)] == 1
    assert snap.duration_counts[-1] == 1
    assert snap.duration_sum == 0.0005 + 0.001 + 0.3 + 100.0


def test_snapshots_subtract_into_a_window_but_keep_the_in_flight_level() -> None:
    stats = ColourStats(Colour.GREEN)
    stats.observe(500, 0.01)
    stats.connect_errors = 2
    older = stats.snapshot()
    stats.observe(200, 0.01)
    stats.observe(503, 0.02)
    stats.connect_errors = 5
    stats.in_flight = 7
    window = stats.snapshot().since(older)
    assert (window.requests, window.errors_5xx, window.connect_errors) == (2, 1, 3)
    assert window.in_flight == 7
    assert sum(window.duration_counts) == 2


def test_duration_quantile_is_a_bucket_bound() -> None:
    stats = ColourStats(Colour.BLUE)
    assert stats.snapshot().duration_quantile(0.5) is None
    for _ in range(9):
        stats.observe(200, 0.002)
    stats.observe(200, 2.0)
    snap = stats.snapshot()
    assert snap.duration_quantile(0.5) == 0.0025
    assert snap.duration_quantile(0.99) == 2.5


def test_exposition_uses_bluegreen_names_and_base_units() -> None:
    gauges = [PoolGauge(Colour.BLUE, "127.0.0.1:9001", idle=2, busy=1, waiting=3)]
    metrics = ProxyMetrics(pools=lambda: gauges)
    metrics.blue.observe(200, 0.003)
    metrics.blue.in_flight = 1
    metrics.green.timeouts = 4
    metrics.reject(431)
    metrics.mirrors_dropped = 2
    text = generate_latest(metrics.registry).decode()
    assert 'bluegreen_requests_total{colour="blue",status_class="2xx"} 1.0' in text
    assert 'bluegreen_requests_in_flight{colour="blue"} 1.0' in text
    assert 'bluegreen_request_duration_seconds_bucket{colour="blue",le="0.005"} 1.0' in text
    assert 'bluegreen_request_duration_seconds_sum{colour="blue"} 0.003' in text
    assert 'bluegreen_upstream_timeouts_total{colour="green"} 4.0' in text
    assert 'bluegreen_requests_rejected_total{status="431"} 1.0' in text
    assert 'bluegreen_mirror_requests_total{result="dropped"} 2.0' in text
    assert (
        'bluegreen_upstream_connections{colour="blue",server="127.0.0.1:9001",state="idle"} 2.0'
        in text
    )
    assert 'bluegreen_upstream_pool_waiting{colour="blue",server="127.0.0.1:9001"} 3.0' in text


def test_each_instance_has_its_own_registry_and_can_be_extended() -> None:
    first, second = ProxyMetrics(), ProxyMetrics()
    first.blue.observe(200, 0.01)

    class Weights:
        def collect(self) -> list[GaugeMetricFamily]:
            return [GaugeMetricFamily("bluegreen_green_weight_ratio", "Green's share.", value=0.1)]

    first.register(Weights())  # type: ignore[arg-type]  # duck-typed collector
    first_text = generate_latest(first.registry).decode()
    second_text = generate_latest(second.registry).decode()
    assert "bluegreen_green_weight_ratio 0.1" in first_text
    assert "bluegreen_green_weight_ratio" not in second_text
    assert 'bluegreen_requests_total{colour="blue",status_class="2xx"} 0.0' in second_text
