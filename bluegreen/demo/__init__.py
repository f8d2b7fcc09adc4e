"""The parts of ``bluegreen demo``: the seed's orders application and what runs it.

``app``        the orders API in two versions (v1 uses ``orders.status``; v2 writes both
               columns and reads ``status_code``), with the seed's ``/health``
``migrations`` its migration files, the seed's expand -> migrate -> contract story
``database``   a database for the demo: ``DATABASE_URL`` or an embedded PostgreSQL
``processes``  child processes started, awaited and stopped robustly
``load``       a paced mixed read/write load with per-phase, per-colour accounting
``report``     the demo's report as text or one JSON object
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

MIGRATIONS_DIR: Final = Path(__file__).resolve().parent / "migrations"
