"""Confidence calibration: for each threshold on the student's confidence, the share of answers
sent to the teacher and the agreement of the answers kept; and the threshold to route with.

The router (gateway/chat.py) replaces a student answer whose confidence is *under* the threshold,
so an answer is kept when confidence >= threshold. Pure functions; the confidence is the same
signal the gateway compares (`stillhouse.confidence.p10`, a low quantile of token logprobs).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

SIGNAL = "p10"  # the key of `stillhouse.confidence` the gateway routes on
# The kept answers' agreement is judged on a one-sided 90% lower bound (Wilson), not the point
# estimate: on a few hundred examples the first threshold whose kept answers happen to be all
# right is mostly luck, and it did not hold on a second split in our tests.
Z_ONE_SIDED_90 = 1.2816


def wilson_low(right: float, n: int, z: float = Z_ONE_SIDED_90) -> float:
    """The Wilson score lower bound of a proportion right/n (0 with no trials)."""
    if n == 0:
        return 0.0
    p = right / n
    centre = p + z * z / (2 * n)
    margin = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5)
    return max(0.0, (centre - margin) / (1 + z * z / n))


@dataclass(frozen=True, slots=True)
class Point:
    """Keep answers with confidence >= threshold: this share goes to the teacher, and the kept
    ones agree this often (None when nothing is kept)."""

    threshold: float
    teacher_share: float
    kept_agreement: float | None
    kept: int
    kept_low: float = 0.0  # the one-sided 90% lower bound of kept_agreement

    def to_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "teacher_share": self.teacher_share,
            "kept_agreement": self.kept_agreement,
            "kept_low": self.kept_low,
            "kept": self.kept,
        }


@dataclass(frozen=True, slots=True)
class Calibration:
    """The curve and the chosen point: the least teacher traffic whose kept answers reach the
    target agreement. `threshold` None: no confidence was reported, so no fallback is possible;
    `reached` False: even the strictest threshold misses the target (the strictest is chosen)."""

    target: float
    threshold: float | None
    teacher_share: float | None
    kept_agreement: float | None
    reached: bool
    curve: tuple[Point, ...]
    signal: str = SIGNAL

    def to_json(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "target": self.target,
            "threshold": self.threshold,
            "teacher_share": self.teacher_share,
            "kept_agreement": self.kept_agreement,
            "reached": self.reached,
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
        points.append(Point(threshold, i / n, right / kept, kept, wilson_low(right, kept)))
        while i < n and pairs[i][0] == threshold:
            right -= pairs[i][1]
            i += 1
    return points


def calibrate(
    confidences: Sequence[float | None], agree: Sequence[float], target: float
) -> Calibration:
    """Choose the threshold whose kept answers reach `target` agreement (on its one-sided 90%
    lower bound) with the least teacher traffic.

    Answers without a confidence (a remote model without logprobs) cannot be routed on; when none
    has one there is no threshold. When the target is out of reach, the threshold with the best
    lower bound is chosen and `reached` is False: the gate reports it, and the router then sends
    as much as that threshold says to the teacher."""
    known = [(c, a) for c, a in zip(confidences, agree, strict=True) if c is not None]
    if not known:
        return Calibration(target, None, None, None, False, ())
    points = curve([c for c, _ in known], [a for _, a in known])
    for point in points:  # teacher share rises along the curve: the first that reaches wins
        if point.kept_low >= target:
            return Calibration(
                target,
                point.threshold,
                point.teacher_share,
                point.kept_agreement,
                True,
                tuple(points),
            )
    best = max(points, key=lambda p: (p.kept_low, -p.teacher_share))
    return Calibration(
        target, best.threshold, best.teacher_share, best.kept_agreement, False, tuple(points)
    )


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
        float("-inf") if threshold is None else threshold,
        share,
        sum(kept) / len(kept) if kept else None,
        len(kept),
        wilson_low(sum(kept), len(kept)),
    )
