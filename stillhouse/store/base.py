"""The trace store interface: calls, scores, counters, datasets and the registry, in the SQL both
backends share; the lifecycle's, the review queue's, the reports' and the fine-tuning API's
questions in their own modules beside this one.

A TraceStore instance owns one connection and is used from one thread at a time: the capture
writer opens its own, readers (CLI, dashboard) open theirs. Inserts are idempotent on `id`, so a
replayed journal never makes duplicate rows. Every write runs in `transaction()` (see sql.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import codec
from .codec import JSON_COLUMNS_OF
from .finetune import FineTuningQueries
from .lifecycle import LifecycleQueries
from .records import (
    CALL_COLUMNS,
    CANDIDATE_COLUMNS,
    DATASET_COLUMNS,
    EVAL_RUN_COLUMNS,
    EXPORT_COLUMNS,
    RELEASE_COLUMNS,
    RESPONSE_COLUMNS,
    SCORE_COLUMNS,
    Call,
    Candidate,
    Dataset,
    DatasetExample,
    EvalRun,
    Export,
    Release,
    Score,
    StoredResponse,
)
from .reports import ReportQueries
from .review import ReviewQueries

CALL_JSON = JSON_COLUMNS_OF["calls"]
# The JSON columns of the records `_insert` writes (calls, scores, responses): no name collides.
RECORD_JSON = CALL_JSON | JSON_COLUMNS_OF["responses"]


class TraceStore(LifecycleQueries, ReviewQueries, ReportQueries, FineTuningQueries):
    """Calls and scores in SQL. Subclasses supply the connection and dialect."""

    # -- writes -----------------------------------------------------------------------------
    def _value(self, column: str, value: Any) -> Any:
        """A record's field as its column holds it."""
        if column in RECORD_JSON:
            return codec.encode(value)
        return int(value) if column == "stream" else value

    def _insert(self, table: str, columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> int:
        values = [tuple(self._value(c, row[c]) for c in columns) for row in rows]
        if not values:
            return 0
        marks = ", ".join("?" for _ in columns)
        sql = self._sql(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
            "ON CONFLICT (id) DO NOTHING"
        )
        with self.transaction() as conn:
            conn.cursor().executemany(sql, values)
        return len(values)

    def insert_calls(self, calls: Iterable[Call]) -> int:
        return self._insert("calls", CALL_COLUMNS, (c.to_dict() for c in calls))

    def insert_scores(self, scores: Iterable[Score]) -> int:
        return self._insert("scores", SCORE_COLUMNS, (s.to_dict() for s in scores))

    def insert_responses(self, responses: Iterable[StoredResponse]) -> int:
        return self._insert("responses", RESPONSE_COLUMNS, (r.to_dict() for r in responses))

    def add_counter(self, name: str, delta: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                self._sql(
                    "INSERT INTO counters (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value"
                ),
                (name, delta),
            )

    # -- reads --------------------------------------------------------------------------------
    def counter(self, name: str) -> int:
        rows = self.query("SELECT value FROM counters WHERE name = ?", (name,))
        return int(rows[0][0]) if rows else 0

    def _calls(self, where: str, params: Sequence[Any], tail: str = "") -> list[Call]:
        sql = f"SELECT {', '.join(CALL_COLUMNS)} FROM calls {where} {tail}"
        out = []
        for row in self.query(sql, params):
            data = dict(zip(CALL_COLUMNS, row, strict=True))
            for c in CALL_JSON:
                data[c] = codec.decode(data[c])
            data["stream"] = bool(data["stream"])
            out.append(Call.from_dict(data))
        return out

    def get_call(self, call_id: str) -> Call | None:
        found = self._calls("WHERE id = ?", (call_id,))
        return found[0] if found else None

    def get_response(self, response_id: str) -> StoredResponse | None:
        """A kept Responses answer by its id (`resp_…`)."""
        rows = self.query(
            f"SELECT {', '.join(RESPONSE_COLUMNS)} FROM responses WHERE id = ?", (response_id,)
        )
        if not rows:
            return None
        data = dict(zip(RESPONSE_COLUMNS, rows[0], strict=True))
        for c in JSON_COLUMNS_OF["responses"]:
            data[c] = codec.decode(data[c])
        return StoredResponse.from_dict(data)

    def list_calls(
        self,
        task: str | None = None,
        limit: int = 50,
        role: str | None = None,
        status: str | None = None,
    ) -> list[Call]:
        """The newest calls first (None: no filter on that column)."""
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (("task", task), ("role", role), ("status", status)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        params.append(limit)
        return self._calls(where, params, "ORDER BY created_at DESC, id LIMIT ?")

    def answered_requests(self, task: str) -> list[Any]:
        """The request of every successful call of a task."""
        rows = self.query("SELECT request FROM calls WHERE task = ? AND status = 'ok'", (task,))
        return [codec.decode(request) for (request,) in rows]

    def count_calls(self) -> dict[str, dict[str, int]]:
        """{task: {role: n}} over every call, failed ones included."""
        out: dict[str, dict[str, int]] = {}
        for task, role, n in self.query(
            "SELECT task, role, COUNT(*) FROM calls GROUP BY task, role"
        ):
            out.setdefault(task, {})[role] = int(n)
        return out

    def scores_for(self, call_id: str) -> list[Score]:
        rows = self.query(
            f"SELECT {', '.join(SCORE_COLUMNS)} FROM scores WHERE call_id = ? ORDER BY created_at",
            (call_id,),
        )
        return [Score.from_dict(dict(zip(SCORE_COLUMNS, r, strict=True))) for r in rows]

    def calls_for_task(self, task: str) -> list[Call]:
        """Every call of a task, oldest first."""
        return self._calls("WHERE task = ?", (task,), "ORDER BY created_at, id")

    def scores_for_task(self, task: str) -> dict[str, list[Score]]:
        """{call_id: scores} for every scored call of a task."""
        cols = ", ".join(f"s.{c}" for c in SCORE_COLUMNS)
        rows = self.query(
            f"SELECT {cols} FROM scores s JOIN calls c ON c.id = s.call_id "
            "WHERE c.task = ? ORDER BY s.created_at",
            (task,),
        )
        out: dict[str, list[Score]] = {}
        for r in rows:
            score = Score.from_dict(dict(zip(SCORE_COLUMNS, r, strict=True)))
            out.setdefault(score.call_id, []).append(score)
        return out

    def task_readiness(self) -> dict[str, dict[str, Any]]:
        """Per task, over successful teacher calls: conversations (distinct
        metadata.conversation_id, else one per call), distinct metadata.intent values, the
        calls, and the first call's time."""
        conv = f"COALESCE({self._json_text('metadata', 'conversation_id')}, id)"
        intent = self._json_text("metadata", "intent")
        rows = self.query(
            f"SELECT task, COUNT(DISTINCT {conv}), COUNT(DISTINCT {intent}), COUNT(*), "
            "MIN(created_at) FROM calls WHERE status = 'ok' AND role = 'teacher' GROUP BY task"
        )
        return {
            task: {
                "conversations": int(c),
                "intents": int(i),
                "calls": int(n),
                "first_call_at": float(first),
            }
            for task, c, i, n, first in rows
        }

    # -- datasets -----------------------------------------------------------------------------
    def insert_dataset(self, dataset: Dataset, examples: Sequence[DatasetExample]) -> bool:
        """Store a snapshot once; False when a dataset with this id already exists (snapshots
        are immutable: the existing one is never touched)."""
        row = dataset.to_dict()
        json = JSON_COLUMNS_OF["datasets"]
        values = tuple(codec.encode(row[c]) if c in json else row[c] for c in DATASET_COLUMNS)
        marks = ", ".join("?" for _ in DATASET_COLUMNS)
        with self.transaction() as conn:
            cur = conn.execute(
                self._sql(
                    f"INSERT INTO datasets ({', '.join(DATASET_COLUMNS)}) VALUES ({marks}) "
                    "ON CONFLICT (id) DO NOTHING"
                ),
                values,
            )
            created = cur.rowcount == 1
            if created:
                conn.cursor().executemany(
                    self._sql(
                        "INSERT INTO dataset_examples "
                        "(dataset_id, position, split, call_id, intent, example) "
                        "VALUES (?, ?, ?, ?, ?, ?)"
                    ),
                    [
                        (
                            dataset.id,
                            e.position,
                            e.split,
                            e.call_id,
                            e.intent,
                            codec.encode(e.example),
                        )
                        for e in examples
                    ],
                )
        return created

    def _datasets(self, where: str, params: Sequence[Any]) -> list[Dataset]:
        rows = self.query(
            f"SELECT {', '.join(DATASET_COLUMNS)} FROM datasets {where} "
            "ORDER BY created_at DESC, id",
            params,
        )
        out = []
        for r in rows:
            data = dict(zip(DATASET_COLUMNS, r, strict=True))
            for c in JSON_COLUMNS_OF["datasets"]:
                data[c] = codec.decode(data[c])
            out.append(Dataset(**data))
        return out

    def get_dataset(self, dataset_id: str) -> Dataset | None:
        found = self._datasets("WHERE id = ?", (dataset_id,))
        return found[0] if found else None

    def list_datasets(self, task: str | None = None) -> list[Dataset]:
        """Newest first."""
        if task is None:
            return self._datasets("", ())
        return self._datasets("WHERE task = ?", (task,))

    def newest_datasets(self) -> list[tuple[str, str]]:
        """(task, dataset id) of each task's newest dataset."""
        rows = self.query(
            "SELECT d.task, d.id FROM datasets d WHERE d.created_at = "
            "(SELECT MAX(x.created_at) FROM datasets x WHERE x.task = d.task)"
        )
        return [(task, dataset_id) for task, dataset_id in rows]

    def dataset_examples(self, dataset_id: str, split: str | None = None) -> list[DatasetExample]:
        """A dataset's lines in their stored order; `split` = train | holdout | None (all)."""
        clause = "WHERE dataset_id = ?" + (" AND split = ?" if split else "")
        params: tuple[Any, ...] = (dataset_id, split) if split else (dataset_id,)
        rows = self.query(
            "SELECT position, split, call_id, intent, example FROM dataset_examples "
            f"{clause} ORDER BY position",
            params,
        )
        return [
            DatasetExample(position=int(p), split=s, call_id=c, intent=i, example=codec.decode(e))
            for p, s, c, i, e in rows
        ]

    # -- registry: candidates, eval runs, releases (each row written once) --------------------
    def _insert_once(self, table: str, columns: Sequence[str], row: dict[str, Any]) -> bool:
        """Insert a registry row; False when one with this id exists (it is never touched)."""
        json = JSON_COLUMNS_OF[table]
        values = tuple(
            codec.encode(row[c])
            if c in json
            else (None if row[c] is None else int(row[c]))
            if c == "passed"
            else row[c]
            for c in columns
        )
        marks = ", ".join("?" for _ in columns)
        with self.transaction() as conn:
            cur = conn.execute(
                self._sql(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
                    "ON CONFLICT (id) DO NOTHING"
                ),
                values,
            )
            return bool(cur.rowcount == 1)

    def _registry_rows(
        self, table: str, columns: Sequence[str], where: str, params: Sequence[Any]
    ) -> list[dict[str, Any]]:
        rows = self.query(
            f"SELECT {', '.join(columns)} FROM {table} {where} ORDER BY created_at DESC, id",
            params,
        )
        out = []
        for r in rows:
            data = dict(zip(columns, r, strict=True))
            for c in JSON_COLUMNS_OF[table]:
                data[c] = codec.decode(data[c])
            if "passed" in data and data["passed"] is not None:
                data["passed"] = bool(data["passed"])
            out.append(data)
        return out

    def insert_candidate(self, candidate: Candidate) -> bool:
        return self._insert_once("candidates", CANDIDATE_COLUMNS, candidate.to_dict())

    def get_candidate(self, candidate_id: str) -> Candidate | None:
        rows = self._registry_rows("candidates", CANDIDATE_COLUMNS, "WHERE id = ?", (candidate_id,))
        return Candidate(**rows[0]) if rows else None

    def list_candidates(
        self, task: str | None = None, dataset_id: str | None = None
    ) -> list[Candidate]:
        """Newest first."""
        clauses, params = [], []
        if task is not None:
            clauses.append("task = ?")
            params.append(task)
        if dataset_id is not None:
            clauses.append("dataset_id = ?")
            params.append(dataset_id)
        where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
        return [
            Candidate(**r)
            for r in self._registry_rows("candidates", CANDIDATE_COLUMNS, where, params)
        ]

    def insert_eval_run(self, run: EvalRun) -> bool:
        return self._insert_once("eval_runs", EVAL_RUN_COLUMNS, run.to_dict())

    def get_eval_run(self, run_id: str) -> EvalRun | None:
        rows = self._registry_rows("eval_runs", EVAL_RUN_COLUMNS, "WHERE id = ?", (run_id,))
        return EvalRun(**rows[0]) if rows else None

    def list_eval_runs(self, candidate_id: str) -> list[EvalRun]:
        where = "WHERE candidate_id = ?"
        return [
            EvalRun(**r)
            for r in self._registry_rows("eval_runs", EVAL_RUN_COLUMNS, where, (candidate_id,))
        ]

    def insert_release(self, release: Release) -> bool:
        return self._insert_once("releases", RELEASE_COLUMNS, release.to_dict())

    def get_release(self, release_id: str) -> Release | None:
        rows = self._registry_rows("releases", RELEASE_COLUMNS, "WHERE id = ?", (release_id,))
        return Release(**rows[0]) if rows else None

    def list_releases(self, candidate_id: str) -> list[Release]:
        where = "WHERE candidate_id = ?"
        return [
            Release(**r)
            for r in self._registry_rows("releases", RELEASE_COLUMNS, where, (candidate_id,))
        ]

    def insert_export(self, export: Export) -> bool:
        return self._insert_once("exports", EXPORT_COLUMNS, export.to_dict())

    def get_export(self, export_id: str) -> Export | None:
        rows = self._registry_rows("exports", EXPORT_COLUMNS, "WHERE id = ?", (export_id,))
        return Export(**rows[0]) if rows else None

    def list_exports(self, candidate_id: str) -> list[Export]:
        where = "WHERE candidate_id = ?"
        rows = self._registry_rows("exports", EXPORT_COLUMNS, where, (candidate_id,))
        return [Export(**r) for r in rows]
