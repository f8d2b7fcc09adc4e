"""freeze_startup_objects: what lives at start-up is no longer walked by collections."""

from __future__ import annotations

import gc

from bluegreen.runtime import freeze_startup_objects


def test_objects_alive_at_start_up_leave_the_collected_generations() -> None:
    early: list[object] = [object()]
    freeze_startup_objects()
    try:
        late: list[object] = [object()]
        tracked = gc.get_objects()
        assert gc.get_freeze_count() > 0
        assert not any(obj is early for obj in tracked)
        assert any(obj is late for obj in tracked)
    finally:
        gc.unfreeze()
