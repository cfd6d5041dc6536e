"""The questions the lifecycle asks the store: its events, a rollout stage's evidence, the calls
that restart curation, the traffic the drift monitor compares.

Events are written once and never updated: the newest row of a task is its state. Rows come back
as plain tuples and dicts (JSON columns decoded); the lifecycle builds its own types from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import codec
from .sql import SQLStore

EVENT_COLUMNS = (
    "id",
    "task",
    "created_at",
    "kind",
    "from_state",
    "state",
    "stage",
    "share",
    "mode",
    "candidate_id",
    "reason",
    "detail",
)
_EVENTS = f"SELECT {', '.join(EVENT_COLUMNS)} FROM lifecycle_events"
IDS_PER_READ = 500  # ids in one `IN (...)` list


class LifecycleQueries(SQLStore):
    # -- events -----------------------------------------------------------------------------
    def append_event(self, event: dict[str, Any]) -> None:
        """Store one lifecycle event (a dict of EVENT_COLUMNS; detail as a dict)."""
        values = tuple(codec.encode(event[c]) if c == "detail" else event[c] for c in EVENT_COLUMNS)
        marks = ", ".join("?" for _ in EVENT_COLUMNS)
        with self.transaction() as conn:
            conn.execute(
                self._sql(
                    f"INSERT INTO lifecycle_events ({', '.join(EVENT_COLUMNS)}) VALUES ({marks})"
                ),
                values,
            )

    def _event(self, row: Sequence[Any]) -> dict[str, Any]:
        data = dict(zip(EVENT_COLUMNS, row, strict=True))
        data["detail"] = codec.decode(data["detail"])
        return data

    def events(self, task: str, limit: int = 100) -> list[dict[str, Any]]:
        """A task's events, newest first."""
        rows = self.query(
            f"{_EVENTS} WHERE task = ? ORDER BY created_at DESC, id DESC LIMIT ?", (task, limit)
        )
        return [self._event(r) for r in rows]

    def latest_event(self, task: str) -> dict[str, Any] | None:
        """A task's newest event (its current state), or None when it has none."""
        found = self.events(task, limit=1)
        return found[0] if found else None

    def latest_events(self) -> list[dict[str, Any]]:
        """Every task's newest event (tasks with none are absent)."""
        rows = self.query(
            f"{_EVENTS} e WHERE e.id = ("
            "SELECT x.id FROM lifecycle_events x WHERE x.task = e.task "
            "ORDER BY x.created_at DESC, x.id DESC LIMIT 1)"
        )
        return [self._event(r) for r in rows]

    def event_timeline(self, task: str) -> list[tuple[Any, ...]]:
        """(created_at, from_state, state, share, mode, candidate_id) of a task's events, oldest
        first: what the safety check replays."""
        return self.query(
            "SELECT created_at, from_state, state, share, mode, candidate_id FROM lifecycle_events "
            "WHERE task = ? ORDER BY created_at, id",
            (task,),
        )

    # -- a rollout stage's evidence ---------------------------------------------------------
    def rollout_evidence(self, task: str, since: float) -> list[tuple[Any, ...]]:
        """(id, role, route_reason, status, latency_ms, metadata) of the task's calls created
        at or after `since`."""
        rows = self.query(
            "SELECT id, role, route_reason, status, latency_ms, metadata FROM calls "
            "WHERE task = ? AND created_at >= ?",
            (task, since),
        )
        return [(*r[:5], codec.decode(r[5])) for r in rows]

    def shadow_scores(self, task: str, since: float) -> list[tuple[str, float]]:
        """(call id, value) of the task's shadow agreement scores given at or after `since`."""
        rows = self.query(
            "SELECT s.call_id, s.value FROM scores s JOIN calls c ON c.id = s.call_id "
            "WHERE c.task = ? AND s.name = 'shadow_agreement' AND s.created_at >= ? "
            "AND s.value IS NOT NULL",
            (task, since),
        )
        return [(call_id, codec.agreement(value)) for call_id, value in rows]

    def call_responses(self, call_ids: Sequence[str]) -> list[tuple[str, Any]]:
        """(id, response) of the given calls, read IDS_PER_READ at a time."""
        out: list[tuple[str, Any]] = []
        for start in range(0, len(call_ids), IDS_PER_READ):
            part = list(call_ids[start : start + IDS_PER_READ])
            marks = ", ".join("?" for _ in part)
            rows = self.query(f"SELECT id, response FROM calls WHERE id IN ({marks})", part)
            out.extend((call_id, codec.decode(response)) for call_id, response in rows)
        return out

    def new_teacher_calls(self, task: str, since: float) -> int:
        """Successful teacher calls of the task created at or after `since`."""
        rows = self.query(
            "SELECT COUNT(*) FROM calls WHERE task = ? AND role = 'teacher' AND status = 'ok' "
            "AND created_at >= ?",
            (task, since),
        )
        return int(rows[0][0])

    def teacher_requests(
        self,
        task: str,
        *,
        since: float | None = None,
        before: float | None = None,
        limit: int | None = None,
    ) -> list[tuple[float, Any, Any]]:
        """(created_at, request, metadata) of the task's successful teacher calls created at or
        after `since` and before `before` (None: no bound), newest first, at most `limit`."""
        sql = "SELECT created_at, request, metadata FROM calls WHERE task = ? "
        sql += "AND role = 'teacher' AND status = 'ok'"
        params: list[Any] = [task]
        if since is not None:
            sql += " AND created_at >= ?"
            params.append(since)
        if before is not None:
            sql += " AND created_at < ?"
            params.append(before)
        sql += " ORDER BY created_at DESC, id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self.query(sql, params)
        return [(float(t), codec.decode(request), codec.decode(meta)) for t, request, meta in rows]

    def served_requests(self, task: str, since: float) -> list[tuple[Any, Any]]:
        """(request, metadata) of the task's calls since `since` that answered a user (no
        shadow or fallback teacher calls)."""
        rows = self.query(
            "SELECT request, metadata FROM calls WHERE task = ? AND created_at >= ? "
            "AND route_reason NOT IN ('shadow', 'fallback')",
            (task, since),
        )
        return [(codec.decode(request), codec.decode(meta)) for request, meta in rows]
