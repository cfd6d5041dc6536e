"""The trace store: captured calls and scores in SQLite (default) or PostgreSQL."""

from __future__ import annotations

from .base import TraceStore
from .records import Call, Score, new_id
from .writer import CaptureWriter


def open_store(url: str, *, migrate: bool = True) -> TraceStore:
    """Open the store at `url` (sqlite:///path or postgresql://...), migrating it by default."""
    store: TraceStore
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        store = SQLiteStore(url)
    elif url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        store = PostgresStore(url)
    else:
        from ..errors import StoreError

        raise StoreError(f"unsupported store url {url!r}: use sqlite:/// or postgresql://")
    if migrate:
        store.migrate()
    return store


__all__ = ["Call", "CaptureWriter", "Score", "TraceStore", "new_id", "open_store"]
