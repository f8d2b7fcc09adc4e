"""The state store: weights, flags, rollout record and history shared by all replicas.

``open_store(url, actor=...)`` picks the backend from the URL:

- ``file:PATH``, ``file:///abs/path`` or a plain path — one JSON file, one host
  (:mod:`bluegreen.state.file`);
- ``postgresql://…`` or ``postgres://…`` — a table plus LISTEN/NOTIFY, for
  several replicas (:mod:`bluegreen.state.postgres`).

The document and its functional updates live in the pure
:mod:`bluegreen.state.model`. Backends are imported lazily, so importing the
model never loads asyncpg.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bluegreen.errors import ConfigError
from bluegreen.state.model import (
    HISTORY_LIMIT,
    Flag,
    HistoryEntry,
    HistoryKind,
    ReplicaInfo,
    ReplicaStatus,
    StateDocument,
    candidate,
    document_from_dict,
    document_to_dict,
    flag_from_dict,
    flag_to_dict,
    from_json,
    initial_document,
    replica_status_to_dict,
    to_json,
    with_flag,
    with_history,
    with_rollout,
    with_weights,
    without_flag,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from bluegreen.state.file import FileStateStore
    from bluegreen.state.leader import Leadership
    from bluegreen.state.postgres import PostgresStateStore
    from bluegreen.state.store import BaseStateStore, StateStore, run_heartbeats

__all__ = [
    "HISTORY_LIMIT",
    "BaseStateStore",
    "FileStateStore",
    "Flag",
    "HistoryEntry",
    "HistoryKind",
    "Leadership",
    "PostgresStateStore",
    "ReplicaInfo",
    "ReplicaStatus",
    "StateDocument",
    "StateStore",
    "candidate",
    "document_from_dict",
    "document_to_dict",
    "flag_from_dict",
    "flag_to_dict",
    "from_json",
    "initial_document",
    "open_store",
    "replica_status_to_dict",
    "run_heartbeats",
    "to_json",
    "with_flag",
    "with_history",
    "with_rollout",
    "with_weights",
    "without_flag",
]

_LAZY = {
    "FileStateStore": "bluegreen.state.file",
    "PostgresStateStore": "bluegreen.state.postgres",
    "Leadership": "bluegreen.state.leader",
    "BaseStateStore": "bluegreen.state.store",
    "StateStore": "bluegreen.state.store",
    "run_heartbeats": "bluegreen.state.store",
}

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
ACCEPTED_FORMS = "file:PATH, a plain path, or postgresql://USER@HOST:PORT/DATABASE"


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def open_store(
    url: str,
    *,
    actor: str,
    initial: StateDocument | None = None,
    poll_interval: float | None = None,
    replica_expiry: float | None = None,
    clock: Callable[[], datetime] | None = None,
) -> StateStore:
    """Build (not open) the store ``url`` names; call ``await store.open()`` next.

    ``initial`` is written when no document exists yet (default: green at 0 %,
    blue live). ``poll_interval`` defaults to 0.1 s for files and 1 s for
    PostgreSQL (where it only matters while the listener is down). Raises
    :class:`~bluegreen.errors.ConfigError` for anything else than the accepted
    forms; a password in the URL never appears in the message.
    """
    from bluegreen.state.store import mask_dsn

    options: dict[str, Any] = {"actor": actor, "initial": initial}
    if poll_interval is not None:
        options["poll_interval"] = poll_interval
    if replica_expiry is not None:
        options["replica_expiry"] = replica_expiry
    if clock is not None:
        options["clock"] = clock
    text = url.strip() if isinstance(url, str) else ""
    if not text:
        raise ConfigError("state", f"expected a state store URL, got {url!r}. Use {ACCEPTED_FORMS}")
    lowered = text.lower()
    if lowered.startswith(("postgresql://", "postgres://")):
        from bluegreen.state.postgres import PostgresStateStore

        return PostgresStateStore(text, **options)
    path: str | None = None
    if lowered.startswith("file://"):
        rest = text[len("file://") :]
        if not rest.startswith("/"):
            raise ConfigError(
                "state",
                f'"{mask_dsn(text)}": a file URL needs an absolute path (file:///var/lib/x.json) '
                "or use file:RELATIVE/PATH",
            )
        path = rest
    elif lowered.startswith("file:"):
        path = text[len("file:") :]
    elif _SCHEME.match(text) is None:
        path = text
    if not path:
        raise ConfigError(
            "state", f'unsupported state store "{mask_dsn(text)}". Use {ACCEPTED_FORMS}'
        )
    from bluegreen.state.file import FileStateStore

    return FileStateStore(path, **options)
