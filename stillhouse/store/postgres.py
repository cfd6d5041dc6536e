"""The PostgreSQL trace store (psycopg 3), for several gateway processes sharing one database."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import StoreError
from . import codec
from .base import RECORD_JSON, TraceStore

# Any fixed 64-bit numbers: the advisory locks that serialise schema migrations, and that let
# exactly one lifecycle controller act on the database.
MIGRATION_LOCK = 0x5717_4805_E001
CONTROLLER_LOCK = 0x5354494C4C484F  # "STILLHO"


class PostgresStore(TraceStore):
    dialect = "postgres"
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        try:
            import psycopg
        except ImportError:  # pragma: no cover - depends on the install
            raise StoreError(
                "PostgreSQL store needs psycopg: pip install 'stillhouse[postgres]'"
            ) from None
        try:
            self.conn = psycopg.connect(url, connect_timeout=10)
        except psycopg.Error as err:
            raise StoreError(f"cannot connect to PostgreSQL: {err}") from err

    def _value(self, column: str, value: Any) -> Any:
        """PostgreSQL cannot hold NUL in text or JSONB: it becomes U+FFFD, so that one request
        carrying it is still captured (and does not fail the batch it is written with)."""
        out = super()._value(column, value)
        if isinstance(out, str) and ("\x00" in out or "\\u0000" in out):
            out = codec.encode(_without_nul(value)) if column in RECORD_JSON else _without_nul(out)
        return out

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """As TraceStore.query; NUL in a parameter (a hostile filter) becomes U+FFFD, as it
        does in what is stored, instead of an error from PostgreSQL."""
        return super().query(sql, [_without_nul(p) for p in params])

    def _begin_write(self) -> None:
        """psycopg opens a transaction on the first statement."""

    def _lock_migrations(self) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))

    @contextlib.contextmanager
    def controller_lock(self) -> Iterator[bool]:
        """A session advisory lock on this store's connection: it outlives the transactions
        the store commits meanwhile, and PostgreSQL lets it go if the process dies."""
        row = self.query("SELECT pg_try_advisory_lock(?)", (CONTROLLER_LOCK,))
        held = bool(row and row[0][0])
        try:
            yield held
        finally:
            if held:
                self.query("SELECT pg_advisory_unlock(?)", (CONTROLLER_LOCK,))


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value
