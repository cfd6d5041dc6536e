"""The review queue's rows: calls due for review, the queue itself and the verdicts on it.

A row is offered once per call (`call_id` is unique) and marked once (only a pending row takes a
verdict). Rows come back as dicts of REVIEW_COLUMNS; `stillhouse.review` builds its items from
them and decides what is due.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import codec
from .sql import SQLStore

REVIEW_COLUMNS = (
    "id",
    "call_id",
    "task",
    "created_at",
    "reason",
    "status",
    "correction",
    "reviewer",
    "reviewed_at",
)
_ITEMS = f"SELECT {', '.join(REVIEW_COLUMNS)} FROM review_items"


class ReviewQueries(SQLStore):
    def reviewable_calls(self, task: str, since: float) -> list[tuple[Any, ...]]:
        """(id, role, route_reason, created_at, response, metadata) of the task's successful
        student answers and fallback teacher calls created at or after `since`, oldest first."""
        rows = self.query(
            "SELECT id, role, route_reason, created_at, response, metadata FROM calls "
            "WHERE task = ? AND created_at >= ? AND status = 'ok' "
            "AND (role = 'student' OR route_reason = 'fallback') ORDER BY created_at",
            (task, since),
        )
        return [(*r[:4], codec.decode(r[4]), codec.decode(r[5])) for r in rows]

    def fallback_calls(self, task: str, since: float) -> list[tuple[Any, Any]]:
        """(response, metadata) of the task's fallback teacher calls created at or after
        `since`."""
        rows = self.query(
            "SELECT response, metadata FROM calls WHERE task = ? AND route_reason = 'fallback' "
            "AND created_at >= ?",
            (task, since),
        )
        return [(codec.decode(response), codec.decode(meta)) for response, meta in rows]

    def add_review_items(self, rows: Sequence[tuple[str, str, str, float, str]]) -> None:
        """Queue (id, call_id, task, created_at, reason) rows as pending; a call already queued
        is left alone."""
        with self.transaction() as conn:
            conn.cursor().executemany(
                self._sql(
                    "INSERT INTO review_items (id, call_id, task, created_at, reason, status) "
                    "VALUES (?, ?, ?, ?, ?, 'pending') ON CONFLICT (call_id) DO NOTHING"
                ),
                list(rows),
            )

    def mark_review_item(
        self, item_id: str, status: str, correction: str | None, reviewer: str | None, at: float
    ) -> None:
        """Store a verdict on a pending row (a row already marked is left alone)."""
        with self.transaction() as conn:
            conn.execute(
                self._sql(
                    "UPDATE review_items SET status = ?, correction = ?, reviewer = ?, "
                    "reviewed_at = ? WHERE id = ? AND status = 'pending'"
                ),
                (status, correction, reviewer, at, item_id),
            )

    def review_item(self, item_id: str) -> dict[str, Any] | None:
        rows = self.query(f"{_ITEMS} WHERE id = ?", (item_id,))
        return dict(zip(REVIEW_COLUMNS, rows[0], strict=True)) if rows else None

    def review_items(
        self, task: str | None = None, status: str | None = "pending", limit: int = 50
    ) -> list[dict[str, Any]]:
        """Queue rows, oldest first (pending by default; status None: every row)."""
        where, params = [], []
        if task is not None:
            where.append("task = ?")
            params.append(task)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = _ITEMS + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.query(sql + " ORDER BY created_at, id LIMIT ?", (*params, limit))
        return [dict(zip(REVIEW_COLUMNS, r, strict=True)) for r in rows]

    def review_corrections(self, task: str) -> list[tuple[str, Any]]:
        """(call_id, correction) of the task's corrected rows, in the order they were marked."""
        rows = self.query(
            "SELECT call_id, correction FROM review_items WHERE task = ? AND status = 'corrected' "
            "ORDER BY reviewed_at, id",
            (task,),
        )
        return [(call_id, correction) for call_id, correction in rows]
