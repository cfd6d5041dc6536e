"""What people do to a task's lifecycle (the CLI's verbs): set its mode, advance or pause a rollout,
roll it back. Each is one stored transition, made with the same pure transitions the controller
uses (transitions.py).
"""

from __future__ import annotations

import dataclasses
import time

from ..config import Config
from ..errors import StillhouseError
from ..store.base import TraceStore
from . import events
from .states import State, TaskState
from .transitions import next_stage, rolled_back


def set_mode(
    store: TraceStore, config: Config, name: str, mode: str, *, force: bool = False
) -> TaskState:
    """Store a mode for the task; gateways pick it up with their next routing table. `student`
    is refused, unless forced, before the student has been stable (see lifecycle/safety.py)."""
    task = config.task(name)
    if mode != "teacher" and task.student is None:
        raise StillhouseError(f"task '{name}' has no student: set tasks.{name}.student first")
    if mode == "student" and not force:
        from .safety import student_readiness

        ready = student_readiness(store, name, task, time.time())
        if not ready.allowed:
            raise StillhouseError(f"refused: {ready.reason}")
    state = events.current(store, name)
    new = dataclasses.replace(state, mode=mode, reason=f"mode set to {mode}")
    return events.record(store, new, previous=state.state, kind="mode")


def advance(store: TraceStore, config: Config, name: str) -> TaskState:
    """Move a rollout (or a paused one) to its next stage now, without waiting for the gate."""
    task = config.task(name)
    state = events.current(store, name)
    if (
        state.state not in (State.ROLLOUT, State.PAUSED)
        or state.candidate_id is None
        or state.stage < 0
    ):
        raise StillhouseError(
            f"task '{name}' is {state.state}, not rolling out: nothing to advance"
        )
    new = next_stage(task, state, "advanced by hand", {}, time.time())
    return events.record(store, new, previous=state.state)


def pause(store: TraceStore, config: Config, name: str) -> TaskState:
    """Freeze the task where it is: its share stays, the controller leaves it alone."""
    config.task(name)
    state = events.current(store, name)
    if state.state is State.PAUSED:
        return state
    new = state.moved(
        State.PAUSED, "paused by hand", detail={**state.detail, "paused_from": str(state.state)}
    )
    return events.record(store, new, previous=state.state)


def rollback(store: TraceStore, config: Config, name: str) -> TaskState:
    """Send every session back to the teacher and go back to collecting data."""
    config.task(name)
    state = events.current(store, name)
    new = rolled_back(state, "rolled back by hand", {}, time.time())
    return events.record(store, new, previous=state.state)
