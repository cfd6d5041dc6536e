"""Lifecycle states as one enum and one transition table; a task's state is the newest stored
event, so the controller, the CLI, the dashboard and the tests all read the same truth.

Nothing here touches the database; see events.py for the rows.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from ..answers import DEFAULT_SIGNAL
from ..errors import StillhouseError


class State(enum.StrEnum):
    GRACE = "grace"  # collecting teacher traffic
    CURATING = "curating"
    OPTIMIZING = "optimizing"  # a few-shot prompt candidate is built and gated before training
    TRAINING = "training"
    VALIDATING = "validating"
    ROLLOUT = "rollout"  # at stage `stage` of tasks.<t>.rollout.stages
    SERVING = "serving"  # the student takes every session; shadow samples watch for drift
    RETRAINING = "retraining"  # the serving student keeps serving while a new one trains
    PAUSED = "paused"  # a person froze the share; nothing moves on its own
    ROLLED_BACK = "rolled_back"  # share 0, collecting fresh data before trying again


S = State

# The one transition table: from each state, where it may go next.
TRANSITIONS: dict[State, frozenset[State]] = {
    S.GRACE: frozenset({S.CURATING, S.PAUSED}),
    S.CURATING: frozenset({S.OPTIMIZING, S.TRAINING, S.GRACE, S.PAUSED}),
    # a prompt that passes the gate alone rolls out; else a LoRA is trained
    S.OPTIMIZING: frozenset({S.ROLLOUT, S.TRAINING, S.GRACE, S.PAUSED}),
    S.TRAINING: frozenset({S.VALIDATING, S.GRACE, S.PAUSED}),
    # a failed gate goes back to collecting data (grace), or keeps the serving student
    S.VALIDATING: frozenset({S.ROLLOUT, S.GRACE, S.SERVING, S.PAUSED}),
    S.ROLLOUT: frozenset({S.ROLLOUT, S.SERVING, S.ROLLED_BACK, S.PAUSED}),
    S.SERVING: frozenset({S.RETRAINING, S.ROLLED_BACK, S.PAUSED}),
    S.RETRAINING: frozenset({S.VALIDATING, S.SERVING, S.ROLLED_BACK, S.PAUSED}),
    S.PAUSED: frozenset({S.ROLLOUT, S.SERVING, S.ROLLED_BACK, S.GRACE}),
    S.ROLLED_BACK: frozenset({S.CURATING, S.ROLLOUT, S.PAUSED}),
}


class TransitionError(StillhouseError):
    """A move the transition table does not allow."""


def check_transition(current: State, target: State) -> None:
    if target not in TRANSITIONS[current]:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "nothing"
        raise TransitionError(f"cannot go from {current} to {target} (from {current}: {allowed})")


def intent_thresholds_of(detail: dict[str, Any]) -> dict[str, float] | None:
    """A state detail's per-intent thresholds (None where one threshold serves every intent)."""
    found = detail.get("intent_thresholds")
    return {str(k): float(v) for k, v in found.items()} if isinstance(found, dict) else None


@dataclass(frozen=True, slots=True)
class TaskState:
    """A task's whole lifecycle state after one event (the newest event is the current state).

    `share` is the fraction of sessions routed to the student; `detail` carries what the
    states need (dataset, incumbent candidate, confidence threshold, when data collection
    restarted, the state a pause came from).
    """

    task: str
    state: State = State.GRACE
    stage: int = -1  # index into rollout.stages while rolling out, else -1
    share: float = 0.0
    mode: str | None = None  # a stored `stillhouse mode` override of tasks.<t>.mode
    candidate_id: str | None = None  # the student being rolled out or serving
    detail: dict[str, Any] = field(default_factory=dict)
    reason: str = "initial"
    created_at: float = 0.0
    id: str | None = None

    @property
    def label(self) -> str:
        """The state as people read it: `rollout:25%` for a rollout stage."""
        if self.state is State.ROLLOUT:
            return f"rollout:{self.share:.0%}"
        return self.state.value

    def moved(self, state: State, reason: str, **changes: Any) -> TaskState:
        check_transition(self.state, state)
        return dataclasses.replace(self, state=state, reason=reason, **changes)

    @property
    def threshold(self) -> float | None:
        value = self.detail.get("threshold")
        return float(value) if value is not None else None

    @property
    def signal(self) -> str:
        """The confidence signal the threshold is on (states stored before it had one: p10)."""
        return str(self.detail.get("signal") or DEFAULT_SIGNAL)

    @property
    def intent_thresholds(self) -> dict[str, float] | None:
        """Per-intent thresholds, where the calibration chose them (`threshold`: the others')."""
        return intent_thresholds_of(self.detail)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "stage": self.stage,
            "share": self.share,
            "mode": self.mode,
            "candidate": self.candidate_id,
            "reason": self.reason,
            "since": self.created_at or None,
            "detail": self.detail,
        }
