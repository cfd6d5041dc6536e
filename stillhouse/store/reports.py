"""The reads behind the cost report, the dashboard and the demo's figures: one read per table
over a window of time, aggregated by the caller in Python so SQLite and PostgreSQL give the same
numbers. Rows come back as plain tuples, JSON columns decoded.
"""

from __future__ import annotations

from typing import Any

from . import codec
from .sql import SQLStore

# The columns of a call that costs, latency and traffic need (no request or response).
REPORT_COLUMNS = (
    "id",
    "task",
    "created_at",
    "role",
    "model",
    "route_reason",
    "status",
    "latency_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "cost",
)
_AGREEMENT = (
    "FROM scores s JOIN calls c ON c.id = s.call_id "
    "WHERE s.name = 'shadow_agreement' AND s.value IS NOT NULL"
)


class ReportQueries(SQLStore):
    def report_rows(self, since: float, task: str | None = None) -> list[tuple[Any, ...]]:
        """REPORT_COLUMNS of every call created at or after `since` (of one task, or all),
        oldest first."""
        sql = f"SELECT {', '.join(REPORT_COLUMNS)} FROM calls WHERE created_at >= ?"
        params: list[Any] = [since]
        if task is not None:
            sql += " AND task = ?"
            params.append(task)
        return self.query(sql + " ORDER BY created_at", params)

    def agreement_scores(
        self, since: float, task: str | None = None
    ) -> list[tuple[str, float, float]]:
        """(task, call time, value) of every shadow agreement score on calls since `since`."""
        sql = f"SELECT c.task, c.created_at, s.value {_AGREEMENT} AND c.created_at >= ?"
        params: list[Any] = [since]
        if task is not None:
            sql += " AND c.task = ?"
            params.append(task)
        return [(t, float(at), codec.agreement(v)) for t, at, v in self.query(sql, params)]

    def intent_traffic(self, task: str, since: float) -> list[tuple[str, str, Any]]:
        """(role, route_reason, metadata) of the task's calls created at or after `since`."""
        rows = self.query(
            "SELECT role, route_reason, metadata FROM calls WHERE task = ? AND created_at >= ?",
            (task, since),
        )
        return [(role, reason, codec.decode(meta)) for role, reason, meta in rows]

    def intent_agreement(self, task: str, since: float) -> list[tuple[Any, float]]:
        """(call metadata, value) of the shadow agreement scores on the task's calls since
        `since`."""
        rows = self.query(
            f"SELECT c.metadata, s.value {_AGREEMENT} AND c.task = ? AND c.created_at >= ?",
            (task, since),
        )
        return [(codec.decode(meta), codec.agreement(value)) for meta, value in rows]

    def off_schema_shadows(self, task: str, since: float) -> int:
        """Shadow comparisons on the task's calls since `since` left unscored because the
        teacher's answer broke the task's schema."""
        rows = self.query(
            "SELECT COUNT(*) FROM scores s JOIN calls c ON c.id = s.call_id WHERE c.task = ? "
            "AND s.name = 'shadow_agreement' AND s.label = 'teacher_off_schema' "
            "AND c.created_at >= ?",
            (task, since),
        )
        return int(rows[0][0])

    def eval_metrics(self, task: str) -> list[tuple[dict[str, Any], str]]:
        """(metrics, candidate backend) of every eval run of the task's candidates, newest
        first."""
        rows = self.query(
            "SELECT e.metrics, c.backend FROM eval_runs e "
            "JOIN candidates c ON c.id = e.candidate_id "
            "WHERE c.task = ? ORDER BY e.created_at DESC",
            (task,),
        )
        return [(codec.decode(metrics), backend) for metrics, backend in rows]
