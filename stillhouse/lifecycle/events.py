"""Lifecycle events in the store: one row per transition or mode change, written once.

The newest row of a task is its current state; the rows in order are its history. The store
keeps the rows (see store/lifecycle.py); this module turns them into TaskStates.
"""

from __future__ import annotations

import time
from typing import Any

from ..store.base import TraceStore
from ..store.records import new_id
from .states import State, TaskState


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
    store.append_event(
        {
            "id": stored.id,
            "task": stored.task,
            "created_at": now,
            "kind": kind,
            "from_state": str(previous) if previous is not None else None,
            "state": str(stored.state),
            "stage": stored.stage,
            "share": stored.share,
            "mode": stored.mode,
            "candidate_id": stored.candidate_id,
            "reason": stored.reason,
            "detail": stored.detail,
        }
    )
    return stored


def _state(data: dict[str, Any]) -> TaskState:
    return TaskState(
        task=data["task"],
        state=State(data["state"]),
        stage=int(data["stage"]),
        share=float(data["share"]),
        mode=data["mode"],
        candidate_id=data["candidate_id"],
        detail=dict(data["detail"]),
        reason=data["reason"],
        created_at=float(data["created_at"]),
        id=data["id"],
    )


def history(store: TraceStore, task: str, limit: int = 100) -> list[dict[str, Any]]:
    """A task's events, newest first, as JSON documents."""
    out = []
    for data in store.events(task, limit):
        state = _state(data)
        out.append(
            {"id": state.id, "kind": data["kind"], "from": data["from_state"], **state.to_json()}
        )
    return out


def current(store: TraceStore, task: str) -> TaskState:
    """The task's newest event, or grace with no student when it has none."""
    data = store.latest_event(task)
    return _state(data) if data is not None else TaskState(task=task)


def current_all(store: TraceStore) -> dict[str, TaskState]:
    """Every task's newest event (tasks with none are absent)."""
    return {state.task: state for state in map(_state, store.latest_events())}


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
