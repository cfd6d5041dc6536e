"""Confidence calibration: for each threshold on the student's confidence, the share of answers
sent to the teacher and the agreement of the answers kept; the threshold to route with; and how
that choice holds on examples it was not chosen on (cross-fitted), which is what the gate judges.

The router (gateway/chat.py) replaces a student answer whose confidence is *under* the threshold,
so an answer is kept when confidence >= threshold. Pure functions; the confidence is the same
signal the gateway compares (`stillhouse.confidence.p10`, a low quantile of token logprobs).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..stats import binomial_interval

SIGNAL = "p10"  # the key of `stillhouse.confidence` the gateway routes on
FOLDS = 2  # cross-fitting: each half's threshold is chosen on the other half
COVERAGE_POINTS = 21  # the coverage curve is drawn at most at this many thresholds


def kept_low(right: float, n: int) -> float:
    """The lower bound of kept answers' agreement (stats.binomial_interval; 0 when none kept).
    The point estimate is not used: the first threshold whose few kept answers happen to be all
    right is mostly luck."""
    return binomial_interval(right, n)[0] if n else 0.0


@dataclass(frozen=True, slots=True)
class Point:
    """Keep answers with confidence >= threshold: this share goes to the teacher, and the kept
    ones agree this often (None when nothing is kept)."""

    threshold: float | None  # None: every answer kept (no threshold, or a pooled estimate)
    teacher_share: float
    kept_agreement: float | None
    kept: int
    kept_low: float = 0.0  # the lower bound of kept_agreement (binomial_interval)

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "teacher_share": self.teacher_share,
            "student_share": 1.0 - self.teacher_share,
            "kept_agreement": self.kept_agreement,
            "kept_low": self.kept_low,
            "kept": self.kept,
        }


@dataclass(frozen=True, slots=True)
class Calibration:
    """The chosen threshold (on the whole holdout: the least teacher traffic whose kept answers'
    lower bound reaches the target) and what the choosing did out of sample: `held_out` pools
    each fold judged by the threshold chosen on the other folds. `reached` is judged there, on
    the lower bound. `threshold` None: no confidence was reported, every answer is kept."""

    target: float
    threshold: float | None
    teacher_share: float | None
    kept_agreement: float | None
    reached: bool
    curve: tuple[Point, ...]
    held_out: Point | None = None
    signal: str = SIGNAL

    def to_json(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "target": self.target,
            "threshold": self.threshold,
            "teacher_share": self.teacher_share,
            "kept_agreement": self.kept_agreement,
            "reached": self.reached,
            "held_out": self.held_out.to_json() if self.held_out else None,
            "method": f"{FOLDS}-fold cross-fit, {SIGNAL}, lower bound of stats.binomial_interval",
            "curve": [p.to_json() for p in self.curve],
        }


def curve(confidences: Sequence[float], agree: Sequence[float]) -> list[Point]:
    """One point per distinct confidence (as threshold), lowest first: the first keeps every
    answer (teacher share 0), later ones send more to the teacher."""
    pairs = sorted(zip(confidences, agree, strict=True))
    n = len(pairs)
    points = []
    right = sum(a for _, a in pairs)
    i = 0
    while i < n:
        # pairs[i:] are kept at threshold pairs[i][0]
        threshold = pairs[i][0]
        kept = n - i
        points.append(Point(threshold, i / n, right / kept, kept, kept_low(right, kept)))
        while i < n and pairs[i][0] == threshold:
            right -= pairs[i][1]
            i += 1
    return points


def choose(points: Sequence[Point], target: float) -> tuple[Point, bool]:
    """The least teacher traffic whose kept answers' lower bound reaches `target` (points run
    from keep-all to strictest); when none does, the best lower bound, and False."""
    for point in points:  # teacher share rises along the curve: the first that reaches wins
        if point.kept_low >= target:
            return point, True
    return max(points, key=lambda p: (p.kept_low, -p.teacher_share)), False


def _folds(n: int, seed: int) -> list[int]:
    """A seeded, balanced fold number for each of n examples."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    fold = [0] * n
    for rank, i in enumerate(order):
        fold[i] = rank % FOLDS
    return fold


def cross_fit(
    confidences: Sequence[float | None], agree: Sequence[float], target: float, seed: int = 0
) -> Point:
    """Each fold judged by the threshold chosen on the other folds, pooled: what choosing a
    threshold on this much data does on data it has not seen."""
    fold = _folds(len(agree), seed)
    kept = right = sent = 0.0
    for k in range(FOLDS):
        fit = [(c, a) for c, a, f in zip(confidences, agree, fold, strict=True) if f != k]
        test = [(c, a) for c, a, f in zip(confidences, agree, fold, strict=True) if f == k]
        known = [(c, a) for c, a in fit if c is not None]
        threshold = None
        if known:
            threshold = choose(curve([c for c, _ in known], [a for _, a in known]), target)[
                0
            ].threshold
        judged = apply(threshold, [c for c, _ in test], [a for _, a in test])
        kept += judged.kept
        right += (judged.kept_agreement or 0.0) * judged.kept
        sent += len(test) - judged.kept
    n = len(agree)
    return Point(
        None,
        sent / n if n else 0.0,
        right / kept if kept else None,
        int(kept),
        kept_low(round(right), int(kept)),
    )


def calibrate(
    confidences: Sequence[float | None], agree: Sequence[float], target: float, seed: int = 0
) -> Calibration:
    """Choose the threshold whose kept answers reach `target` agreement (on the lower bound) with
    the least teacher traffic, and judge that choice out of sample (`cross_fit`).

    Answers without a confidence (a remote model without logprobs) cannot be routed on and are
    kept, as the router keeps them; when none has one there is no threshold and every answer is
    kept. When the target is out of reach the threshold with the best lower bound is chosen, and
    `reached` is False: the gate fails on it unless the task's fallback is off."""
    held_out = cross_fit(confidences, agree, target, seed) if agree else None
    reached = held_out is not None and held_out.kept_low >= target
    known = [(c, a) for c, a in zip(confidences, agree, strict=True) if c is not None]
    if not known:
        everything = apply(None, confidences, agree)
        return Calibration(
            target, None, 0.0, everything.kept_agreement, reached, (), held_out=held_out
        )
    points = curve([c for c, _ in known], [a for _, a in known])
    point, _ = choose(points, target)
    return Calibration(
        target,
        point.threshold,
        point.teacher_share,
        point.kept_agreement,
        reached,
        tuple(points),
        held_out=held_out,
    )


def coverage(
    confidences: Sequence[float | None], agree: Sequence[float], points: int = COVERAGE_POINTS
) -> list[dict[str, Any]]:
    """The coverage curve: student share against the kept answers' agreement and its lower bound,
    at up to `points` thresholds spread evenly over the student share (keep-all first)."""
    known = [(c, a) for c, a in zip(confidences, agree, strict=True) if c is not None]
    if not known:
        return [apply(None, confidences, agree).to_json()] if agree else []
    full = curve([c for c, _ in known], [a for _, a in known])
    if len(full) > points:
        step = (len(full) - 1) / (points - 1)
        full = [full[round(k * step)] for k in range(points)]
    return [p.to_json() for p in full]


def apply(
    threshold: float | None, confidences: Sequence[float | None], agree: Sequence[float]
) -> Point:
    """What a threshold does on other data (a second split, live traffic): the router's rule
    (an answer without a confidence is kept, as the gateway keeps it)."""
    n = len(agree)
    kept = [
        a
        for c, a in zip(confidences, agree, strict=True)
        if threshold is None or c is None or c >= threshold
    ]
    share = (n - len(kept)) / n if n else 0.0
    return Point(
        threshold,
        share,
        sum(kept) / len(kept) if kept else None,
        len(kept),
        kept_low(sum(kept), len(kept)),
    )
