"""The fine-tuning API's rows: uploaded files (with their content), jobs and their events.

A file is written once. A job is created with its first event in one transaction, and after that
changes only by `move_job`: a compare-and-set of its status that writes its event in the same
transaction, so two gateways (or a cancel and the trainer) can never both move one job, and no
job is ever left with a status its events do not tell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from . import codec
from .codec import JSON_COLUMNS_OF
from .records import (
    FILE_COLUMNS,
    JOB_COLUMNS,
    JOB_EVENT_COLUMNS,
    FineTuningJob,
    JobEvent,
    UploadedFile,
)
from .sql import SQLStore

_JOBS = f"SELECT {', '.join(JOB_COLUMNS)} FROM fine_tuning_jobs"
_EVENTS = f"SELECT {', '.join(JOB_EVENT_COLUMNS)} FROM fine_tuning_events"


def _row(table: str, columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    data = dict(zip(columns, row, strict=True))
    for c in JSON_COLUMNS_OF.get(table, ()):
        data[c] = codec.decode(data[c])
    return data


def _values(table: str, columns: Sequence[str], data: dict[str, Any]) -> tuple[Any, ...]:
    json = JSON_COLUMNS_OF.get(table, frozenset())
    return tuple(codec.encode(data[c]) if c in json else data[c] for c in columns)


class FineTuningQueries(SQLStore):
    # -- files ----------------------------------------------------------------------------------
    def insert_file(self, file: UploadedFile, content: str) -> None:
        columns = (*FILE_COLUMNS, "content")
        marks = ", ".join("?" for _ in columns)
        with self.transaction() as conn:
            conn.execute(
                self._sql(f"INSERT INTO files ({', '.join(columns)}) VALUES ({marks})"),
                (*_values("files", FILE_COLUMNS, file.to_dict()), content),
            )

    def get_file(self, file_id: str) -> UploadedFile | None:
        rows = self.query(f"SELECT {', '.join(FILE_COLUMNS)} FROM files WHERE id = ?", (file_id,))
        return UploadedFile(**_row("files", FILE_COLUMNS, rows[0])) if rows else None

    def list_files(
        self, purpose: str | None = None, limit: int = 10_000, after: str | None = None
    ) -> list[UploadedFile]:
        """Newest first; `after`: the files older than that one."""
        where, params = self._after("files", after)
        if purpose is not None:
            where.append("purpose = ?")
            params.append(purpose)
        rows = self.query(
            f"SELECT {', '.join(FILE_COLUMNS)} FROM files {self._where(where)} "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [UploadedFile(**_row("files", FILE_COLUMNS, r)) for r in rows]

    def file_content(self, file_id: str) -> str | None:
        rows = self.query("SELECT content FROM files WHERE id = ?", (file_id,))
        return str(rows[0][0]) if rows else None

    # -- jobs -----------------------------------------------------------------------------------
    def create_job(self, job: FineTuningJob, *events: JobEvent) -> None:
        """Store a new job and its first events, all or nothing."""
        marks = ", ".join("?" for _ in JOB_COLUMNS)
        with self.transaction() as conn:
            conn.execute(
                self._sql(
                    f"INSERT INTO fine_tuning_jobs ({', '.join(JOB_COLUMNS)}) VALUES ({marks})"
                ),
                _values("fine_tuning_jobs", JOB_COLUMNS, job.to_dict()),
            )
            self.add_job_events(events)

    def move_job(
        self, job_id: str, from_: Iterable[str], to: str, *events: JobEvent, **fields: Any
    ) -> bool:
        """Set the job's status to `to` (and `fields`: finished_at, fine_tuned_model, error...)
        only when it is in one of `from_`, and write `events` with it; False when it was not
        (another process moved it first, or it was cancelled)."""
        sources = list(from_)
        json = JSON_COLUMNS_OF["fine_tuning_jobs"]
        sets = ["status = ?", *(f"{name} = ?" for name in fields)]
        values = [to, *(codec.encode(v) if k in json else v for k, v in fields.items())]
        marks = ", ".join("?" for _ in sources)
        with self.transaction() as conn:
            cur = conn.execute(
                self._sql(
                    f"UPDATE fine_tuning_jobs SET {', '.join(sets)} "
                    f"WHERE id = ? AND status IN ({marks})"
                ),
                (*values, job_id, *sources),
            )
            moved = cur.rowcount == 1
            if moved:
                self.add_job_events(events)
        return moved

    def get_job(self, job_id: str) -> FineTuningJob | None:
        rows = self.query(f"{_JOBS} WHERE id = ?", (job_id,))
        return FineTuningJob(**_row("fine_tuning_jobs", JOB_COLUMNS, rows[0])) if rows else None

    def job_status(self, job_id: str) -> str | None:
        rows = self.query("SELECT status FROM fine_tuning_jobs WHERE id = ?", (job_id,))
        return str(rows[0][0]) if rows else None

    def list_jobs(self, limit: int = 20, after: str | None = None) -> list[FineTuningJob]:
        """Newest first; `after`: the jobs created before that one."""
        where, params = self._after("fine_tuning_jobs", after)
        rows = self.query(
            f"{_JOBS} {self._where(where)} ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [FineTuningJob(**_row("fine_tuning_jobs", JOB_COLUMNS, r)) for r in rows]

    def next_job(self, statuses: Sequence[str]) -> FineTuningJob | None:
        """The oldest job in one of `statuses`: the next one to work on."""
        marks = ", ".join("?" for _ in statuses)
        rows = self.query(
            f"{_JOBS} WHERE status IN ({marks}) ORDER BY created_at, id LIMIT 1", tuple(statuses)
        )
        return FineTuningJob(**_row("fine_tuning_jobs", JOB_COLUMNS, rows[0])) if rows else None

    def fine_tuned_models(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """{fine_tuned_model: (the model it was trained on, its serving table)} of every
        succeeded job."""
        rows = self.query(
            "SELECT fine_tuned_model, model, serving FROM fine_tuning_jobs "
            "WHERE status = 'succeeded' AND fine_tuned_model IS NOT NULL"
        )
        return {str(name): (str(base), codec.decode(serving)) for name, base, serving in rows}

    # -- events ---------------------------------------------------------------------------------
    def add_job_events(self, events: Sequence[JobEvent]) -> None:
        marks = ", ".join("?" for _ in JOB_EVENT_COLUMNS)
        with self.transaction() as conn:
            conn.cursor().executemany(
                self._sql(
                    f"INSERT INTO fine_tuning_events ({', '.join(JOB_EVENT_COLUMNS)}) "
                    f"VALUES ({marks})"
                ),
                [_values("fine_tuning_events", JOB_EVENT_COLUMNS, e.to_dict()) for e in events],
            )

    def job_events(self, job_id: str, limit: int = 20, after: str | None = None) -> list[JobEvent]:
        """A job's events, newest first; `after`: the events older than that one."""
        where, params = self._after("fine_tuning_events", after)
        rows = self.query(
            f"{_EVENTS} {self._where(['job_id = ?', *where])} "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (job_id, *params, limit),
        )
        return [JobEvent(**_row("fine_tuning_events", JOB_EVENT_COLUMNS, r)) for r in rows]

    # -- cursors --------------------------------------------------------------------------------
    def _after(self, table: str, after: str | None) -> tuple[list[str], list[Any]]:
        """The clause for rows older than row `after` of `table` (newest-first pages); a cursor
        that names no row gives an empty page, as OpenAI's does."""
        if after is None:
            return [], []
        rows = self.query(f"SELECT created_at FROM {table} WHERE id = ?", (after,))
        if not rows:
            return ["1 = 0"], []
        at = rows[0][0]
        return ["(created_at < ? OR (created_at = ? AND id < ?))"], [at, at, after]

    @staticmethod
    def _where(clauses: Sequence[str]) -> str:
        return ("WHERE " + " AND ".join(clauses)) if clauses else ""
