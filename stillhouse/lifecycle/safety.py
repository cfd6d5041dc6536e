"""Safe student mode: `mode = "student"` (the student alone, no fallback, no teacher) only after the
student has served in auto mode for `safe_student_after` without a failed gate.

Computed from the stored lifecycle events alone, so the CLI and the controller agree. Read-only:
it judges, `controller.set_mode` refuses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ..config import TaskConfig
from ..store.base import TraceStore
from .states import State

# states in which a student can hold a share (validating: a retrain's, while its parent serves)
SERVING_STATES = {State.ROLLOUT, State.SERVING, State.RETRAINING, State.VALIDATING, State.PAUSED}


@dataclass(frozen=True, slots=True)
class StudentReadiness:
    allowed: bool
    reason: str
    stable_since: float | None  # when the student's current unbroken run in auto began
    allowed_at: float | None  # when mode student becomes allowed (None: not foreseeable yet)


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def stable_since(store: TraceStore, task: str) -> float | None:
    """Since when the student has served this task in auto mode without a failed gate, or None
    when it is not serving now. A rollback, a candidate failing its gate, or the mode set to
    teacher restarts the clock (and so does a retrained candidate withdrawn mid-rollout)."""
    rows = store.event_timeline(task)
    since: float | None = None
    mode: str | None = None
    candidate: str | None = None
    for created_at, from_state, state, share, event_mode, candidate_id in rows:
        mode = event_mode
        at = float(created_at)
        failed_gate = (
            state == State.ROLLED_BACK
            or (from_state == State.VALIDATING and state in (State.GRACE, State.SERVING))
            # a retrained candidate withdrawn at a stage: the student it was to replace serves on
            or (
                from_state == State.ROLLOUT and state == State.SERVING and candidate_id != candidate
            )
        )
        candidate = candidate_id
        serving = State(state) in SERVING_STATES and float(share) > 0 and mode != "teacher"
        if failed_gate or not serving:
            since = at if failed_gate and serving else None
        elif since is None:
            since = at
    return since


def student_readiness(
    store: TraceStore, name: str, task: TaskConfig, now: float
) -> StudentReadiness:
    period = task.safe_student_after
    since = stable_since(store, name)
    days = f"{period / 86400:g} days" if period >= 86400 else f"{period:g} s"
    if since is None:
        return StudentReadiness(
            False,
            f"the student of '{name}' is not serving in auto mode yet; mode student is allowed "
            f"once it has served for {days} without a failed gate "
            f"(tasks.{name}.safe_student_after), or now with --force",
            None,
            None,
        )
    at = since + period
    if now >= at:
        return StudentReadiness(True, f"stable since {_when(since)}", since, at)
    return StudentReadiness(
        False,
        f"the student of '{name}' has served in auto mode without a failed gate only since "
        f"{_when(since)}, less than {days} (tasks.{name}.safe_student_after); mode student is "
        f"allowed from {_when(at)}, or now with --force",
        since,
        at,
    )
