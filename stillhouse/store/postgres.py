"""The PostgreSQL trace store (psycopg 3), for several gateway processes sharing one database."""

from __future__ import annotations

from ..errors import StoreError
from .base import TraceStore

# Any fixed 64-bit number: the advisory lock that serialises schema migrations.
MIGRATION_LOCK = 0x5717_4805_E001


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

    def _begin_write(self) -> None:
        """psycopg opens a transaction on the first statement."""

    def _lock_migrations(self) -> None:
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
