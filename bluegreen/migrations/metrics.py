"""Prometheus metrics of the migration runner.

The histogram is named exactly as in the seed's monitoring example,
``migration_duration_seconds{migration_name, status}``, with ``status`` either
``success`` or ``failure``. It lives in its own registry, which the admin API
serves next to the proxy's metrics; runs of a down section are labelled
``<label>:down``.
"""

from __future__ import annotations

from typing import Final, Literal

from prometheus_client import CollectorRegistry, Histogram

MIGRATION_REGISTRY: Final = CollectorRegistry(auto_describe=True)

MIGRATION_DURATION: Final = Histogram(
    "migration_duration_seconds",
    "Migration duration in seconds",
    labelnames=("migration_name", "status"),
    registry=MIGRATION_REGISTRY,
    # DDL under lock_timeout takes milliseconds; index builds and backfills take hours.
    buckets=(0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 7200, float("inf")),
)


def observe_migration(
    migration_name: str, status: Literal["success", "failure"], seconds: float
) -> None:
    """Record one migration run (up, or ``name:down``) and how long it took."""
    MIGRATION_DURATION.labels(migration_name=migration_name, status=status).observe(seconds)
