"""The store's connection: reads, the one write transaction, and the schema's migrations.

Every write in the store runs inside `transaction()` (datasette's `execute_write_fn`): SQLite
takes its write lock up front with BEGIN IMMEDIATE, PostgreSQL opens one on the first statement,
and the block is committed when it ends or rolled back when it raises. Nothing outside `store/`
touches the connection or writes SQL: it asks the store's named methods.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any, Self

from ..errors import StoreError
from .schema import LATEST_VERSION, MIGRATIONS, statements_for


class SQLStore:
    """One connection, used from one thread at a time. Subclasses supply it and the dialect."""

    dialect: str = ""
    placeholder: str = "?"

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None
        self._depth = 0  # transactions open (a transaction inside another joins it)

    # -- dialect hooks -----------------------------------------------------------------------
    def _begin_write(self) -> None:
        """Start a write transaction."""
        raise NotImplementedError

    def _lock_migrations(self) -> None:
        """Serialise concurrent migrators (several gateways starting at once)."""

    def controller_lock(self) -> contextlib.AbstractContextManager[bool]:
        """A context yielding True while this store holds the one lifecycle controller lock of
        its database (False: another process holds it). Hold the store open meanwhile."""
        raise NotImplementedError

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read with `?` placeholders (translated for PostgreSQL), for this package's methods
        (and tests). Inside a transaction it reads there; otherwise it ends its own."""
        try:
            cur = self.conn.execute(self._sql(sql), tuple(params))
            rows = cur.fetchall()
        except Exception:
            if not self._depth:
                self.conn.rollback()  # PostgreSQL: the connection stays usable after a failed read
            raise
        if not self._depth:
            self.conn.commit()
        return list(rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """One write transaction around the block: committed when the block ends, rolled back
        when it raises. Yields the connection, for the store's own methods."""
        if self._depth:
            self._depth += 1
            try:
                yield self.conn
            finally:
                self._depth -= 1
            return
        self._begin_write()
        self._depth = 1
        try:
            yield self.conn
            self.conn.commit()
        except BaseException:
            self.conn.rollback()
            raise
        finally:
            self._depth = 0

    def _json_text(self, column: str, key: str) -> str:
        """SQL for the text of a top-level key of a JSON column."""
        if self.dialect == "postgres":
            return f"{column}->>'{key}'"
        return f"json_extract({column}, '$.{key}')"

    # -- schema --------------------------------------------------------------------------------
    def schema_version(self) -> int:
        try:
            rows = self.query("SELECT MAX(version) FROM schema_migrations")
        except Exception:
            return 0
        return int(rows[0][0] or 0)

    def migrate(self) -> int:
        """Bring the schema to the latest version; returns the version now in force."""
        try:
            with self.transaction() as conn:
                self._lock_migrations()
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations "
                    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at "
                    + ("REAL" if self.dialect == "sqlite" else "DOUBLE PRECISION")
                    + " NOT NULL)"
                )
                row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
                current = int(row[0] or 0)
                if current > LATEST_VERSION:
                    raise StoreError(
                        f"store schema is version {current}, newer than this Stillhouse "
                        f"({LATEST_VERSION}): upgrade stillhouse"
                    )
                for migration in MIGRATIONS:
                    if migration.version <= current:
                        continue
                    for statement in statements_for(migration, self.dialect):
                        conn.execute(statement)
                    conn.execute(
                        self._sql(
                            "INSERT INTO schema_migrations (version, name, applied_at) "
                            "VALUES (?, ?, ?)"
                        ),
                        (migration.version, migration.name, time.time()),
                    )
        except StoreError:
            raise
        except Exception as err:
            raise StoreError(f"cannot migrate {self.dialect} store: {err}") from err
        return LATEST_VERSION
