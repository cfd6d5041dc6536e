"""Rollout gates on live evidence: the student's calls at the current stage against the
teacher's, and the shadow comparisons of its answers.

A gate has three outcomes. pass: agreement's confidence-interval lower bound reaches the task's
threshold and errors, hallucinations and latency hold (and, for a retrained candidate, its
agreement matches the serving student's); fail: the interval's upper bound is under the
threshold, or errors, hallucinations or latency are out of bounds, or it is clearly worse than
the serving student; wait: not enough evidence either way yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..answers import Metric, answer_text, hallucinated
from ..config import TaskConfig
from ..stats import binomial_interval, percentile, rate_interval
from ..store.base import TraceStore


@dataclass(frozen=True, slots=True)
class Evidence:
    """What happened since `since`: latencies and errors per role, and shadow agreement."""

    student_latency: list[float] = field(default_factory=list)
    teacher_latency: list[float] = field(default_factory=list)
    student_errors: int = 0
    teacher_errors: int = 0
    shadow: list[float] = field(default_factory=list)
    # one per student answer whose call carried metadata.reference: 1.0 when it contradicts it
    hallucinations: list[float] = field(default_factory=list)

    @property
    def student_calls(self) -> int:
        return len(self.student_latency) + self.student_errors

    @property
    def teacher_calls(self) -> int:
        return len(self.teacher_latency) + self.teacher_errors

    def to_json(self) -> dict[str, Any]:
        low, high = rate_interval(self.shadow)
        return {
            "student_calls": self.student_calls,
            "teacher_calls": self.teacher_calls,
            "student_errors": self.student_errors,
            "teacher_errors": self.teacher_errors,
            "shadow_samples": len(self.shadow),
            "agreement": sum(self.shadow) / len(self.shadow) if self.shadow else None,
            "agreement_ci": [round(low, 4), round(high, 4)],
            "student_error_rate_ci": _rounded(
                binomial_interval(self.student_errors, self.student_calls)
            ),
            "referenced": len(self.hallucinations),
            "hallucination_rate": (
                sum(self.hallucinations) / len(self.hallucinations) if self.hallucinations else None
            ),
            "hallucination_rate_ci": _rounded(rate_interval(self.hallucinations)),
            "student_p50_ms": percentile(self.student_latency, 50),
            "student_p95_ms": percentile(self.student_latency, 95),
            "teacher_p50_ms": percentile(self.teacher_latency, 50),
            "teacher_p95_ms": percentile(self.teacher_latency, 95),
        }


def _rounded(interval: tuple[float, float]) -> list[float]:
    return [round(interval[0], 4), round(interval[1], 4)]


def collect(
    store: TraceStore,
    task: str,
    since: float,
    candidate: str | None = None,
    metric: Metric = "exact",
) -> Evidence:
    """Evidence from the task's calls and shadow scores created at or after `since`. With
    `candidate`, only the student calls that candidate answered (metadata.candidate) count."""
    rows = store.rollout_evidence(task, since)
    student: list[float] = []
    teacher: list[float] = []
    errors = {"student": 0, "teacher": 0}
    mine: set[str] = set()
    referenced: dict[str, Any] = {}  # call id -> its metadata.reference
    for call_id, role, reason, status, latency, metadata in rows:
        if role == "teacher" and reason == "fallback":
            continue  # the teacher on the student's hardest requests: it would skew its baseline
        # A shadow is the teacher answering a request the student served: at a stage where few
        # users reach the teacher, it is where the teacher's latency is sampled from.
        meta = metadata or {}
        if role == "student":
            if candidate is not None and meta.get("candidate") != candidate:
                continue
            mine.add(call_id)
            if status == "ok" and meta.get("reference") is not None:
                referenced[call_id] = meta["reference"]
        if status != "ok":
            errors[role] = errors.get(role, 0) + 1
        elif latency is not None:
            (student if role == "student" else teacher).append(float(latency))
    scores = store.shadow_scores(task, since)
    return Evidence(
        student_latency=student,
        teacher_latency=teacher,
        student_errors=errors["student"],
        teacher_errors=errors["teacher"],
        shadow=[v for call_id, v in scores if candidate is None or call_id in mine],
        hallucinations=_hallucinations(store, referenced, metric),
    )


def _hallucinations(store: TraceStore, referenced: dict[str, Any], metric: Metric) -> list[float]:
    """1.0 for each answer that contradicts its call's reference (only those calls' responses
    are read)."""
    if not referenced:
        return []
    out = []
    for call_id, response in store.call_responses(list(referenced)):
        text = answer_text(response)
        out.append(float(hallucinated(metric, text, referenced[call_id])))
    return out


Outcome = Literal["pass", "fail", "wait"]


@dataclass(frozen=True, slots=True)
class GateResult:
    outcome: Outcome
    reason: str
    evidence: dict[str, Any]


def judge(
    task: TaskConfig, evidence: Evidence, dwelt: float, incumbent: Evidence | None = None
) -> GateResult:
    """Whether the stage's live evidence passes, fails or needs more time (see module doc).
    `incumbent`: the serving student's evidence over the same window, when a retrained
    candidate rolls out against it."""
    doc = evidence.to_json()
    if incumbent is not None:
        doc["incumbent"] = incumbent.to_json()
    threshold = task.gate.agreement
    low, high = rate_interval(evidence.shadow)
    n = evidence.student_calls
    if n and evidence.student_errors / n > task.rollout.max_error_rate:
        teacher_rate = evidence.teacher_errors / max(1, evidence.teacher_calls)
        if evidence.student_errors / n > teacher_rate:
            return GateResult("fail", f"student error rate {evidence.student_errors}/{n}", doc)
    if evidence.shadow and high < threshold:
        return GateResult("fail", f"shadow agreement {high:.3f} (upper bound) < {threshold}", doc)
    wrong = evidence.hallucinations
    most = task.rollout.max_hallucination_rate
    if wrong and rate_interval(wrong)[0] > most:
        rate = sum(wrong) / len(wrong)
        return GateResult(
            "fail", f"hallucination rate {rate:.3f} (n={len(wrong)}) > {most} (lower bound)", doc
        )
    # the serving student's lower bound: a candidate clearly under it is worse than production
    floor = (
        rate_interval(incumbent.shadow)[0] if incumbent is not None and incumbent.shadow else None
    )
    if floor is not None and evidence.shadow and high < floor:
        return GateResult(
            "fail",
            f"shadow agreement {high:.3f} (upper bound) < the serving student's {floor:.3f} "
            "(lower bound)",
            doc,
        )
    s95, t95 = doc["student_p95_ms"], doc["teacher_p95_ms"]
    ratio = task.rollout.max_latency_ratio
    if n >= task.rollout.min_samples and s95 is not None and t95 is not None and s95 > t95 * ratio:
        return GateResult("fail", f"student p95 {s95:.0f} ms > {ratio} x teacher {t95:.0f} ms", doc)
    if n < task.rollout.min_samples:
        return GateResult("wait", f"{n}/{task.rollout.min_samples} student calls", doc)
    if t95 is None:
        # missing evidence never passes: shadows sample the teacher's latency, so wait for them
        return GateResult("wait", "no teacher latency yet to compare the student's p95 with", doc)
    if dwelt < task.rollout.min_dwell:
        return GateResult("wait", f"dwell {dwelt:.0f}/{task.rollout.min_dwell:.0f} s", doc)
    if low < threshold:
        return GateResult(
            "wait",
            f"shadow agreement lower bound {low:.3f} < {threshold} (n={len(evidence.shadow)})",
            doc,
        )
    if wrong and sum(wrong) / len(wrong) > most:
        return GateResult("wait", f"hallucination rate over {most} (n={len(wrong)})", doc)
    if floor is not None:
        mean = sum(evidence.shadow) / len(evidence.shadow)
        if mean < floor:
            return GateResult(
                "wait", f"agreement {mean:.3f} < the serving student's lower bound {floor:.3f}", doc
            )
    return GateResult("pass", f"agreement lower bound {low:.3f} >= {threshold}, n={n}", doc)
