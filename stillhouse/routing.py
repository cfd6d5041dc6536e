"""Which model answers a request: pure functions over the task's config and the routing table.

The routing table is in memory: the lifecycle controller (or a refresher reading its stored
state in the background) publishes a new table; the gateway only reads it, never the database.
A session lands in a sticky bucket, hash(task, session key or request id) in [0, 1), and goes to
the student when its bucket is under the task's current student share.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .answers import DEFAULT_SIGNAL, message_text, stays, threshold_for
from .config import TaskConfig
from .intents import IntentModel
from .store.records import Role


@dataclass(frozen=True, slots=True)
class Route:
    role: Role
    model: str  # a model name from stillhouse.toml
    reason: str
    candidate: str | None = None  # the registered student that answers (None: `model` as is)


@dataclass(frozen=True, slots=True)
class TaskRoute:
    """One task's entry in the routing table, as the lifecycle controller published it."""

    state: str = "grace"
    share: float = 0.0  # fraction of sessions that go to the student
    mode: str | None = None  # a stored `stillhouse mode` override of tasks.<t>.mode
    threshold: float | None = None  # calibrated confidence under which the teacher answers
    candidate: str | None = None  # the student rolling out or serving
    # the candidate's `serving` table from the registry (how to deploy it; empty: the task's
    # `student` model as configured)
    serving: Mapping[str, Any] | None = None
    # a retrained candidate rolls out against the student that served before it: sessions
    # outside the candidate's share keep that incumbent (not the teacher)
    incumbent: str | None = None
    incumbent_serving: Mapping[str, Any] | None = None
    incumbent_threshold: float | None = None
    # which `stillhouse.confidence` reduction each threshold is on (evaluate.calibrate chose it)
    signal: str = DEFAULT_SIGNAL
    incumbent_signal: str = DEFAULT_SIGNAL
    # per-intent thresholds where the calibration chose them (`threshold`: the other intents')
    intent_thresholds: Mapping[str, float] | None = None
    incumbent_intent_thresholds: Mapping[str, float] | None = None


class RoutingTable:
    """task -> TaskRoute, replaced whole by `publish` (one reference swap: readers never lock)."""

    def __init__(self, entries: Mapping[str, TaskRoute] | None = None) -> None:
        self._entries: Mapping[str, TaskRoute] = MappingProxyType(dict(entries or {}))
        self._intents: Mapping[str, IntentModel] = MappingProxyType({})

    def get(self, task: str) -> TaskRoute | None:
        return self._entries.get(task)

    def publish(self, entries: Mapping[str, TaskRoute]) -> None:
        self._entries = MappingProxyType(dict(entries))

    def update(self, task: str, entry: TaskRoute) -> None:
        self.publish({**self._entries, task: entry})

    def snapshot(self) -> dict[str, TaskRoute]:
        return dict(self._entries)

    # -- intents: each task's intent model, from its newest curated snapshot ------------------
    def publish_intents(self, models: Mapping[str, IntentModel]) -> None:
        self._intents = MappingProxyType(dict(models))

    def intent_of(self, task: str, metadata: Mapping[str, Any] | None, request: Any) -> str | None:
        """A live request's intent: the caller's metadata.intent, else the task's intent model
        on the request's user turns (None: no model yet, or nothing matched)."""
        given = (metadata or {}).get("intent")
        if given is not None:
            return str(given)
        model = self._intents.get(task)
        if model is None or not isinstance(request, dict):
            return None
        users = [m for m in request.get("messages") or [] if m.get("role") == "user"]
        return model.predict("\n".join(message_text(m) for m in users))


def _unit(*parts: str) -> float:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def bucket(task: str, key: str) -> float:
    """The sticky bucket of a session (or request) in [0, 1): the same key, the same bucket, so
    a session stays with one model while the share only grows."""
    return _unit("bucket", task, key)


def mode_of(task: TaskConfig, entry: TaskRoute | None) -> str:
    return entry.mode if entry is not None and entry.mode else task.mode


def choose_route(
    task: TaskConfig, entry: TaskRoute | None = None, *, name: str = "", key: str = ""
) -> Route:
    """The route of one request to task `name`; `key` is its session key, else its request id."""
    mode = mode_of(task, entry)
    if mode == "teacher":
        return Route("teacher", task.teacher, "mode:teacher")
    if task.student is None:
        return Route("teacher", task.teacher, "no-student")
    candidate = entry.candidate if entry is not None else None
    if mode == "student":
        return Route("student", task.student, "mode:student", candidate)
    if entry is None:
        return Route("teacher", task.teacher, "grace")
    if entry.share > 0 and bucket(name, key) < entry.share:
        reason = f"{entry.state}:{round(entry.share * 100)}%"
        return Route("student", task.student, reason, candidate)
    if entry.incumbent is not None:
        return Route("student", task.student, f"{entry.state}:incumbent", entry.incumbent)
    return Route("teacher", task.teacher, entry.state)


def needs_fallback(
    task: TaskConfig,
    entry: TaskRoute | None,
    route: Route,
    confidence: Mapping[str, Any] | None,
    intent: str | None = None,
) -> bool:
    """A student answer in auto mode whose confidence (`answers.confidence_of`: min, mean,
    p10), on the signal its threshold was calibrated on, is under that threshold (its
    intent's, where thresholds are per intent) is replaced by the teacher's. No threshold or
    no confidence reported: no fallback."""
    threshold = fallback_threshold(task, entry, route, intent)
    if threshold is None or not confidence or entry is None:
        return False
    value = confidence.get(fallback_signal(entry, route))
    return isinstance(value, int | float) and not stays(value, threshold)


def fallback_signal(entry: TaskRoute, route: Route) -> str:
    """The confidence signal this route's threshold is on (the candidate's, or the incumbent's)."""
    if entry.incumbent is not None and route.candidate == entry.incumbent:
        return entry.incumbent_signal
    return entry.signal


def fallback_threshold(
    task: TaskConfig, entry: TaskRoute | None, route: Route, intent: str | None = None
) -> float | None:
    """The calibrated confidence under which this route's student answer is replaced (the
    candidate's, or the serving incumbent's; `intent`'s own where thresholds are per intent);
    None: no fallback on this route."""
    if route.role != "student" or task.routing.fallback != "confidence":
        return None
    if mode_of(task, entry) != "auto" or entry is None:
        return None
    if entry.incumbent is not None and route.candidate == entry.incumbent:
        threshold, by_intent = entry.incumbent_threshold, entry.incumbent_intent_thresholds
    else:
        threshold, by_intent = entry.threshold, entry.intent_thresholds
    return threshold_for(threshold, by_intent, intent)


def shadow_sampled(task: TaskConfig, role: str, call_id: str) -> bool:
    """Whether a student-served call is also sent to the teacher in the background."""
    if role != "student" or task.routing.shadow_rate <= 0:
        return False
    return _unit("shadow", call_id) < task.routing.shadow_rate


def intent_rules(
    task: TaskConfig, entry: TaskRoute | None, route: Route, intent: str | None, *, name: str = ""
) -> Route:
    """Per-intent rules on top of the share: `routing.teacher_intents` always go to the teacher
    (the high-stakes cases); `routing.student_intents` go to the student at full share as soon
    as a candidate has a share (auto mode)."""
    if intent is None:
        return route
    rules = task.routing
    if intent in rules.teacher_intents:
        if route.role == "teacher":
            return route
        return Route("teacher", task.teacher, "intent:teacher")
    if (
        intent in rules.student_intents
        and route.role == "teacher"
        and mode_of(task, entry) == "auto"
        and entry is not None
        and entry.share > 0
    ):
        full = choose_route(task, dataclasses.replace(entry, share=1.0), name=name, key="")
        if full.role == "student":
            return dataclasses.replace(full, reason="intent:student")
    return route
