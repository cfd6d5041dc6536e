"""Lifecycle events in the store: one row per transition or mode change, written once.

The newest row of a task is its current state; the rows in order are its history. The SQL lives
here, beside the lifecycle, on the store's connection (SQLite or PostgreSQL).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..store.base import TraceStore
from ..store.records import new_id
from .states import State, TaskState

COLUMNS = (
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


def record(
    store: TraceStore, new: TaskState, *, previous: State | None, kind: str = "transition"
) -> TaskState:
    """Store `new` as the task's newest event; returns it with its id and time."""
    now = time.time()
    stored = TaskState(
        task=new.task,
        state=new.state,
        stage=new.stage,
        share=new.share,
        mode=new.mode,
        candidate_id=new.candidate_id,
        detail=new.detail,
        reason=new.reason,
        created_at=now,
        id=new_id("evt"),
    )
    values = (
        stored.id,
        stored.task,
        now,
        kind,
        str(previous) if previous is not None else None,
        str(stored.state),
        stored.stage,
        stored.share,
        stored.mode,
        stored.candidate_id,
        stored.reason,
        orjson.dumps(stored.detail).decode(),
    )
    marks = ", ".join("?" for _ in COLUMNS)
    store._begin_write()
    try:
        store.conn.execute(
            store._sql(f"INSERT INTO lifecycle_events ({', '.join(COLUMNS)}) VALUES ({marks})"),
            values,
        )
        store.conn.commit()
    except Exception:
        store.conn.rollback()
        raise
    return stored


def _state(row: tuple[Any, ...]) -> tuple[TaskState, dict[str, Any]]:
    data = dict(zip(COLUMNS, row, strict=True))
    detail = data["detail"]
    state = TaskState(
        task=data["task"],
        state=State(data["state"]),
        stage=int(data["stage"]),
        share=float(data["share"]),
        mode=data["mode"],
        candidate_id=data["candidate_id"],
        detail=orjson.loads(detail) if isinstance(detail, str | bytes) else dict(detail),
        reason=data["reason"],
        created_at=float(data["created_at"]),
        id=data["id"],
    )
    return state, data


def history(store: TraceStore, task: str, limit: int = 100) -> list[dict[str, Any]]:
    """A task's events, newest first, as JSON documents."""
    rows = store.query(
        f"SELECT {', '.join(COLUMNS)} FROM lifecycle_events WHERE task = ? "
        "ORDER BY created_at DESC, id DESC LIMIT ?",
        (task, limit),
    )
    out = []
    for row in rows:
        state, data = _state(row)
        out.append(
            {"id": state.id, "kind": data["kind"], "from": data["from_state"], **state.to_json()}
        )
    return out


def current(store: TraceStore, task: str) -> TaskState:
    """The task's newest event, or grace with no student when it has none."""
    rows = store.query(
        f"SELECT {', '.join(COLUMNS)} FROM lifecycle_events WHERE task = ? "
        "ORDER BY created_at DESC, id DESC LIMIT 1",
        (task,),
    )
    return _state(rows[0])[0] if rows else TaskState(task=task)


def current_all(store: TraceStore) -> dict[str, TaskState]:
    """Every task's newest event (tasks with none are absent)."""
    rows = store.query(
        f"SELECT {', '.join(COLUMNS)} FROM lifecycle_events e WHERE e.id = ("
        "SELECT x.id FROM lifecycle_events x WHERE x.task = e.task "
        "ORDER BY x.created_at DESC, x.id DESC LIMIT 1)"
    )
    return {state.task: state for state, _ in map(_state, rows)}


def serving_student(store: TraceStore, task: str, exclude: str | None = None) -> str | None:
    """The candidate serving the task now: the newest release in state `serving`, else the
    lifecycle's serving (or retraining) student; None when the teacher still serves alone."""
    releases = [
        r
        for c in store.list_candidates(task=task)
        for r in store.list_releases(c.id)
        if r.state == "serving" and c.id != exclude
    ]
    if releases:
        return max(releases, key=lambda r: r.created_at).candidate_id
    state = current(store, task)
    if state.state in (State.SERVING, State.RETRAINING) and state.candidate_id != exclude:
        return state.candidate_id
    return None
