"""The trace store interface, with the SQL both backends share.

A TraceStore instance owns one connection and is used from one thread at a time: the capture
writer opens its own, readers (CLI, dashboard) open theirs. Inserts are idempotent on `id`, so a
replayed spill file or journal never makes duplicate rows.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ..errors import StoreError
from .records import CALL_COLUMNS, JSON_COLUMNS, SCORE_COLUMNS, Call, Score
from .schema import LATEST_VERSION, MIGRATIONS, statements_for


def _dump(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


class TraceStore:
    """Calls and scores in SQL. Subclasses supply the connection and dialect."""

    dialect: str = ""
    placeholder: str = "?"

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: Any = None

    # -- dialect hooks -----------------------------------------------------------------------
    def _begin_write(self) -> None:
        """Start a write transaction."""
        raise NotImplementedError

    def _lock_migrations(self) -> None:
        """Serialise concurrent migrators (several gateways starting at once)."""

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------------------
    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(self._sql(sql), tuple(params))
        rows = cur.fetchall()
        self.conn.commit()
        return list(rows)

    # -- schema --------------------------------------------------------------------------------
    def schema_version(self) -> int:
        try:
            rows = self._query("SELECT MAX(version) FROM schema_migrations")
        except Exception:
            self.conn.rollback()
            return 0
        return int(rows[0][0] or 0)

    def migrate(self) -> int:
        """Bring the schema to the latest version; returns the version now in force."""
        try:
            self._begin_write()
            self._lock_migrations()
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at "
                + ("REAL" if self.dialect == "sqlite" else "DOUBLE PRECISION")
                + " NOT NULL)"
            )
            row = self.conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
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
                    self.conn.execute(statement)
                self.conn.execute(
                    self._sql(
                        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"
                    ),
                    (migration.version, migration.name, time.time()),
                )
            self.conn.commit()
        except StoreError:
            self.conn.rollback()
            raise
        except Exception as err:
            self.conn.rollback()
            raise StoreError(f"cannot migrate {self.dialect} store: {err}") from err
        return LATEST_VERSION

    # -- writes -----------------------------------------------------------------------------
    def _insert(self, table: str, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> int:
        values = [
            tuple(
                _dump(row[c]) if c in JSON_COLUMNS else (int(row[c]) if c == "stream" else row[c])
                for c in columns
            )
            for row in rows
        ]
        if not values:
            return 0
        marks = ", ".join("?" for _ in columns)
        sql = self._sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
            "ON CONFLICT (id) DO NOTHING"
        )
        self._begin_write()
        try:
            cur = self.conn.cursor()
            cur.executemany(sql, values)
            self.conn.commit()
        except Exception:
            self.conn.rollback()
            raise
        return len(values)

    def insert_calls(self, calls: Iterable[Call]) -> int:
        return self._insert("calls", CALL_COLUMNS, (c.to_dict() for c in calls))

    def insert_scores(self, scores: Iterable[Score]) -> int:
        return self._insert("scores", SCORE_COLUMNS, (s.to_dict() for s in scores))

    def add_counter(self, name: str, delta: int) -> None:
        self._begin_write()
        try:
            self.conn.execute(
                self._sql(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value"
                ),
                (name, delta),
            )
            self.conn.commit()
        except Exception:
            self.conn.rollback()
            raise

    # -- reads --------------------------------------------------------------------------------
    def counter(self, name: str) -> int:
        rows = self._query("SELECT value FROM counters WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def _calls(self, where: str, params: Sequence[Any], tail: str = "") -> list[Call]:
        sql = f"SELECT {', '.join(CALL_COLUMNS)} FROM calls {where} {tail}"
        out = []
        for row in self._query(sql, params):
            data = dict(zip(CALL_COLUMNS, row, strict=True))
            for c in JSON_COLUMNS:
                data[c] = _load(data[c])
            data["stream"] = bool(data["stream"])
            out.append(Call.from_dict(data))
        return out

    def get_call(self, call_id: str) -> Call | None:
        found = self._calls("WHERE id = ?", (call_id,))
        return found[0] if found else None

    def list_calls(
        self, task: str | None = None, limit: int = 50, role: str | None = None
    ) -> list[Call]:
        """The newest calls first."""
        clauses: list[str] = []
        params: list[Any] = []
        if task is not None:
            clauses.append("task = ?")
            params.append(task)
        if role is not None:
            clauses.append("role = ?")
            params.append(role)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        params.append(limit)
        return self._calls(where, params, "ORDER BY created_at DESC, id LIMIT ?")

    def count_calls(self) -> dict[str, dict[str, int]]:
        """{task: {role: n}} over every call, failed ones included."""
        out: dict[str, dict[str, int]] = {}
        for task, role, n in self._query(
            "SELECT task, role, COUNT(*) FROM calls GROUP BY task, role"
        ):
            out.setdefault(task, {})[role] = int(n)
        return out

    def scores_for(self, call_id: str) -> list[Score]:
        rows = self._query(
            f"SELECT {', '.join(SCORE_COLUMNS)} FROM scores WHERE call_id = ? ORDER BY created_at",
            (call_id,),
        )
        return [Score.from_dict(dict(zip(SCORE_COLUMNS, r, strict=True))) for r in rows]
