"""Rollout gates on live evidence: the student's calls at the current stage against the
teacher's, and the shadow comparisons of its answers.

A gate has three outcomes. pass: agreement's confidence-interval lower bound reaches the task's
threshold and errors and latency hold; fail: the interval's upper bound is under the threshold,
or errors or latency are out of bounds; wait: not enough evidence either way yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from ..config import TaskConfig
from ..store.base import TraceStore

Z95 = 1.96


def wilson(values: list[float], z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of the mean of values in [0, 1] ((0, 1) with no values)."""
    n = len(values)
    if n == 0:
        return 0.0, 1.0
    p = sum(values) / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True, slots=True)
class Evidence:
    """What happened since `since`: latencies and errors per role, and shadow agreement."""

    student_latency: list[float] = field(default_factory=list)
    teacher_latency: list[float] = field(default_factory=list)
    student_errors: int = 0
    teacher_errors: int = 0
    shadow: list[float] = field(default_factory=list)

    @property
    def student_calls(self) -> int:
        return len(self.student_latency) + self.student_errors

    @property
    def teacher_calls(self) -> int:
        return len(self.teacher_latency) + self.teacher_errors

    def to_json(self) -> dict[str, Any]:
        low, high = wilson(self.shadow)
        return {
            "student_calls": self.student_calls,
            "teacher_calls": self.teacher_calls,
            "student_errors": self.student_errors,
            "teacher_errors": self.teacher_errors,
            "shadow_samples": len(self.shadow),
            "agreement": sum(self.shadow) / len(self.shadow) if self.shadow else None,
            "agreement_ci": [round(low, 4), round(high, 4)],
            "student_p50_ms": quantile(self.student_latency, 0.5),
            "student_p95_ms": quantile(self.student_latency, 0.95),
            "teacher_p50_ms": quantile(self.teacher_latency, 0.5),
            "teacher_p95_ms": quantile(self.teacher_latency, 0.95),
        }


def collect(store: TraceStore, task: str, since: float) -> Evidence:
    """Evidence from the task's calls and shadow scores created at or after `since`."""
    rows = store.query(
        "SELECT role, route_reason, status, latency_ms FROM calls "
        "WHERE task = ? AND created_at >= ?",
        (task, since),
    )
    student: list[float] = []
    teacher: list[float] = []
    errors = {"student": 0, "teacher": 0}
    for role, reason, status, latency in rows:
        if role == "teacher" and reason in ("shadow", "fallback"):
            continue  # not a served teacher answer: it would skew the teacher's baseline
        if status != "ok":
            errors[role] = errors.get(role, 0) + 1
        elif latency is not None:
            (student if role == "student" else teacher).append(float(latency))
    scores = store.query(
        "SELECT s.value FROM scores s JOIN calls c ON c.id = s.call_id "
        "WHERE c.task = ? AND s.name = 'shadow_agreement' AND s.created_at >= ? "
        "AND s.value IS NOT NULL",
        (task, since),
    )
    return Evidence(
        student_latency=student,
        teacher_latency=teacher,
        student_errors=errors["student"],
        teacher_errors=errors["teacher"],
        shadow=[float(v) for (v,) in scores],
    )


Outcome = Literal["pass", "fail", "wait"]


@dataclass(frozen=True, slots=True)
class GateResult:
    outcome: Outcome
    reason: str
    evidence: dict[str, Any]


def judge(task: TaskConfig, evidence: Evidence, dwelt: float) -> GateResult:
    """Whether the stage's live evidence passes, fails or needs more time (see module doc)."""
    doc = evidence.to_json()
    threshold = task.gate.agreement
    low, high = wilson(evidence.shadow)
    n = evidence.student_calls
    if n and evidence.student_errors / n > task.rollout.max_error_rate:
        teacher_rate = evidence.teacher_errors / max(1, evidence.teacher_calls)
        if evidence.student_errors / n > teacher_rate:
            return GateResult("fail", f"student error rate {evidence.student_errors}/{n}", doc)
    if evidence.shadow and high < threshold:
        return GateResult("fail", f"shadow agreement {high:.3f} (upper bound) < {threshold}", doc)
    s95, t95 = doc["student_p95_ms"], doc["teacher_p95_ms"]
    ratio = task.rollout.max_latency_ratio
    if n >= task.rollout.min_samples and s95 is not None and t95 is not None and s95 > t95 * ratio:
        return GateResult("fail", f"student p95 {s95:.0f} ms > {ratio} x teacher {t95:.0f} ms", doc)
    if n < task.rollout.min_samples:
        return GateResult("wait", f"{n}/{task.rollout.min_samples} student calls", doc)
    if dwelt < task.rollout.min_dwell:
        return GateResult("wait", f"dwell {dwelt:.0f}/{task.rollout.min_dwell:.0f} s", doc)
    if low < threshold:
        return GateResult(
            "wait",
            f"shadow agreement lower bound {low:.3f} < {threshold} (n={len(evidence.shadow)})",
            doc,
        )
    return GateResult("pass", f"agreement lower bound {low:.3f} >= {threshold}, n={n}", doc)
