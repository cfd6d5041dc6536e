"""Confidence calibration: for each threshold on the student's confidence, the share of answers
sent to the teacher and the agreement of the answers kept; the threshold to route with; and how
that choice holds on examples it was not chosen on (cross-fitted), which is what the gate judges.

The router (gateway/chat.py) replaces a student answer whose confidence is *under* the threshold,
so an answer is kept when confidence >= threshold. Pure functions; the confidence is one of the
signals the gateway can compare (`stillhouse.confidence`: min, p10 or mean of the token
logprobs): `stillhouse eval` calibrates on CALIBRATED; given several, `pick` chooses the one whose
curve keeps the most answers.

Per-intent thresholds (`fit_intents`): where the answers' intents are known, a ridge logistic
regression of agreement on the standardised signal with one intercept per intent (shrunk towards
the common one) turns one cut on its score into one threshold per intent. It is used for a task only
when, over REPEATS fold splits, its out-of-sample operating point beats the single threshold's
(`choose_intents`): it helped where a student's errors gather in a few intents, and hurt on a small
holdout whose errors are spread (docs/benchmarks.md, "Deferral").
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..answers import DEFAULT_SIGNAL, stays, threshold_for
from ..stats import binomial_interval

SIGNAL = DEFAULT_SIGNAL  # the signal when only one is given
# The signals an eval calibrates on. Measured on four students of two tasks, 10 fold splits each
# (bench/deferral_learned.py, docs/benchmarks.md "Deferral"): min's kept lower bound was the best
# of min, p10 and mean on three and 0.013 under mean's on the fourth; picking one per candidate
# lowered it on all four (its choice on a small holdout costs more than it buys); p10 ranked right
# and wrong answers worst (AUROC 0.49-0.67, min 0.64-0.87).
CALIBRATED = ("min",)
FOLDS = 2  # cross-fitting: each half's threshold is chosen on the other half
COVERAGE_POINTS = 21  # the coverage curve is drawn at most at this many thresholds
REPEATS = 10  # fold splits per-intent thresholds are judged on against the single threshold
RIDGE = 1.0  # the L2 penalty on the standardised slope and on each intent's intercept
MIN_PER_INTENT = 3  # answers an intent needs for an intercept of its own


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
    # {intent: threshold} when per-intent thresholds won (`threshold` is then the one for intents
    # not listed); None: one threshold for every answer
    intent_thresholds: dict[str, float] | None = None
    intents_judged: dict[str, Any] | None = field(default=None, compare=False)

    def threshold_of(self, intent: str | None) -> float | None:
        """The threshold an answer of `intent` is judged by: its own where thresholds are per
        intent, else the common one."""
        return threshold_for(self.threshold, self.intent_thresholds, intent)

    def to_json(self) -> dict[str, Any]:
        return {
            "signal": self.signal,
            "intent_thresholds": self.intent_thresholds,
            "intents_judged": self.intents_judged,
            "target": self.target,
            "threshold": self.threshold,
            "teacher_share": self.teacher_share,
            "kept_agreement": self.kept_agreement,
            "reached": self.reached,
            "held_out": self.held_out.to_json() if self.held_out else None,
            "method": f"{FOLDS}-fold cross-fit (signal and threshold chosen in each fold), "
            "lower bound of stats.binomial_interval",
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


Signals = Mapping[str, Sequence[float | None]]


def pick(signals: Signals, agree: Sequence[float], target: float) -> tuple[str, float | None]:
    """The signal and threshold to route with, chosen on these examples: of the signals whose
    curve reaches `target` (on the lower bound), the one that keeps the most answers; when none
    does, the best lower bound. Ties keep the signals' order (p10 first)."""
    best: tuple[tuple[bool, float, float], str, float | None] | None = None
    for name, confidences in signals.items():
        known = [(c, a) for c, a in zip(confidences, agree, strict=True) if c is not None]
        if not known:
            continue
        point, reached = choose(curve([c for c, _ in known], [a for _, a in known]), target)
        kept = 1.0 - point.teacher_share
        key = (reached, kept if reached else point.kept_low, point.kept_low if reached else kept)
        if best is None or key > best[0]:
            best = (key, name, point.threshold)
    if best is None:  # no confidence reported: every answer is kept
        return next(iter(signals), SIGNAL), None
    return best[1], best[2]


def cross_fit(
    confidences: Sequence[float | None] | Signals,
    agree: Sequence[float],
    target: float,
    seed: int = 0,
) -> Point:
    """Each fold judged by the signal and threshold chosen on the other folds (`pick`), pooled:
    what choosing them on this much data does on data they were not chosen on."""
    signals = _signals(confidences)

    def judge(fit: list[int], test: list[int]) -> Point:
        name, threshold = pick(
            {n: [c[i] for i in fit] for n, c in signals.items()}, [agree[i] for i in fit], target
        )
        return apply(threshold, [signals[name][i] for i in test], [agree[i] for i in test])

    return pooled(len(agree), seed, judge)


def pooled(n: int, seed: int, judge: Callable[[list[int], list[int]], Point]) -> Point:
    """Cross-fitting: n examples in FOLDS seeded folds, each fold judged (`judge(fit, test)`,
    indices) by what was chosen on the others, the judged folds pooled into one point."""
    fold = _folds(n, seed)
    kept = right = 0.0
    for k in range(FOLDS):
        judged = judge(
            [i for i, f in enumerate(fold) if f != k], [i for i, f in enumerate(fold) if f == k]
        )
        kept += judged.kept
        right += (judged.kept_agreement or 0.0) * judged.kept
    return Point(
        None,
        (n - kept) / n if n else 0.0,
        right / kept if kept else None,
        int(kept),
        kept_low(round(right), int(kept)),
    )


# -- per-intent thresholds ---------------------------------------------------------------------
def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = RIDGE, steps: int = 50) -> np.ndarray:
    """Ridge logistic regression by Newton's method: the weights, the intercept last (not
    penalised)."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    penalty = np.full(xb.shape[1], ridge)
    penalty[-1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30.0, 30.0)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w = w - step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass(frozen=True, slots=True)
class IntentThresholds:
    """A threshold per intent on one signal; `default` for an intent not seen (or none)."""

    default: float
    by_intent: dict[str, float]

    def thresholds(self, intents: Sequence[str | None]) -> list[float | None]:
        """Each answer's threshold, by its intent."""
        return [threshold_for(self.default, self.by_intent, i) for i in intents]


def fit_intents(
    values: Sequence[float | None],
    agree: Sequence[float],
    intents: Sequence[str | None],
    target: float,
) -> IntentThresholds | None:
    """Per-intent thresholds on `values`: the ridge logistic regression of agreement on the
    standardised signal plus one intercept per intent, cut where the kept answers' lower bound
    reaches `target` with the least teacher traffic (`choose`), the cut read back as a threshold
    per intent. None with under two intents, a constant signal, or a slope that does not rise
    with confidence (the signal does not rank agreement here)."""
    rows = [
        (float(v), float(a), i)
        for v, a, i in zip(values, agree, intents, strict=True)
        if v is not None
    ]
    counts = Counter(i for _, _, i in rows if i is not None)
    # an intercept of one or two answers is noise (and a column each to solve for): such intents
    # share the common threshold
    names = sorted(i for i, n in counts.items() if n >= MIN_PER_INTENT)
    signal = np.array([r[0] for r in rows])
    if len(names) < 2 or signal.std() <= 0:
        return None
    mean, std = float(signal.mean()), float(signal.std())
    onehot = np.array([[r[2] == n for n in names] for r in rows], dtype=float)
    w = fit_logistic(
        np.hstack([((signal - mean) / std)[:, None], onehot]), np.array([r[1] for r in rows])
    )
    slope, offsets, bias = (
        float(w[0]),
        dict(zip(names, w[1:-1].tolist(), strict=True)),
        float(w[-1]),
    )
    if slope <= 0:
        return None
    # each answer's score, term by term (a matrix product may round two equal rows apart)
    scores = [slope * (v - mean) / std + offsets.get(i or "", 0.0) + bias for v, _, i in rows]
    point, _ = choose(curve(scores, [r[1] for r in rows]), target)
    cut = float(point.threshold) if point.threshold is not None else min(scores)

    def back(offset: float) -> float:  # the signal value whose score is the cut, a hair under
        value = mean + std * (cut - bias - offset) / slope
        return value - 1e-9 * (1.0 + abs(value))

    return IntentThresholds(back(0.0), {n: back(o) for n, o in offsets.items()})


def cross_fit_intents(
    values: Sequence[float | None],
    agree: Sequence[float],
    intents: Sequence[str | None],
    target: float,
    seed: int = 0,
) -> Point:
    """`cross_fit` of per-intent thresholds: each fold judged by the thresholds fitted on the
    other (the single threshold where none could be fitted there)."""

    def judge(fit: list[int], test: list[int]) -> Point:
        fit_values, fit_agree = [values[i] for i in fit], [agree[i] for i in fit]
        rule = fit_intents(fit_values, fit_agree, [intents[i] for i in fit], target)
        if rule is not None:
            threshold: float | list[float | None] | None = rule.thresholds(
                [intents[i] for i in test]
            )
        else:
            threshold = pick({SIGNAL: fit_values}, fit_agree, target)[1]
        return apply(threshold, [values[i] for i in test], [agree[i] for i in test])

    return pooled(len(agree), seed, judge)


def _mean_point(points: Sequence[Point]) -> dict[str, float]:
    """The mean operating point over fold splits: student share and kept answers' lower bound."""
    share = sum(1.0 - p.teacher_share for p in points) / len(points)
    low = sum(p.kept_low for p in points) / len(points)
    return {"student_share": round(share, 4), "kept_low": round(low, 4)}


def choose_intents(
    values: Sequence[float | None],
    agree: Sequence[float],
    intents: Sequence[str | None],
    target: float,
    seed: int = 0,
) -> tuple[dict[str, Any], Point]:
    """Whether per-intent thresholds beat one threshold on this signal, judged out of sample
    over REPEATS fold splits: they must reach the target where the single one does not, or keep
    at least as many answers at a lower bound at least as high, one of the two strictly (the
    rule with more parameters is not bought with a trade). Returns {"per_intent": bool,
    "single": {...}, "intents": {...}, "splits": n} and the per-intent thresholds' pooled point
    on `seed`'s split (the one the calibration reports; one of the REPEATS when seed < REPEATS)."""
    one = _mean_point([cross_fit({SIGNAL: values}, agree, target, s) for s in range(REPEATS)])
    split = [cross_fit_intents(values, agree, intents, target, s) for s in range(REPEATS)]
    many = _mean_point(split)
    if (many["kept_low"] >= target) != (one["kept_low"] >= target):
        better = many["kept_low"] >= target
    else:
        pairs = [(many[k], one[k]) for k in ("student_share", "kept_low")]
        better = all(m >= o for m, o in pairs) and any(m > o for m, o in pairs)
    judged = {"per_intent": better, "single": one, "intents": many, "splits": REPEATS}
    if 0 <= seed < REPEATS:
        return judged, split[seed]
    return judged, cross_fit_intents(values, agree, intents, target, seed)


def _signals(confidences: Sequence[float | None] | Signals) -> Signals:
    return confidences if isinstance(confidences, Mapping) else {SIGNAL: confidences}


def calibrate(
    confidences: Sequence[float | None] | Signals,
    agree: Sequence[float],
    target: float,
    seed: int = 0,
    intents: Sequence[str | None] | None = None,
) -> Calibration:
    """Choose the signal and threshold whose kept answers reach `target` agreement (on the lower
    bound) with the least teacher traffic (`pick`; one signal when `confidences` is a plain
    sequence, else one of the mapping's), and judge that choice out of sample (`cross_fit`).

    Answers without a confidence (a remote model without logprobs) cannot be routed on and are
    kept, as the router keeps them; when none has one there is no threshold and every answer is
    kept. When the target is out of reach the threshold with the best lower bound is chosen, and
    `reached` is False: the gate fails on it unless the task's fallback is off.

    With `intents` (each answer's), per-intent thresholds on the chosen signal are weighed
    against the single one (`choose_intents`) and used when they do better out of sample."""
    signals = _signals(confidences)
    held_out = cross_fit(signals, agree, target, seed) if agree else None
    reached = held_out is not None and held_out.kept_low >= target
    name, _ = pick(signals, agree, target)
    chosen = signals[name] if signals else []
    known = [(c, a) for c, a in zip(chosen, agree, strict=True) if c is not None]
    if not known:
        everything = apply(None, chosen, agree)
        return Calibration(
            target,
            None,
            0.0,
            everything.kept_agreement,
            reached,
            (),
            held_out=held_out,
            signal=name,
        )
    points = curve([c for c, _ in known], [a for _, a in known])
    point, _ = choose(points, target)
    judged = rule = None
    if intents is not None:
        judged, split = choose_intents(chosen, agree, intents, target, seed)
        rule = fit_intents(chosen, agree, intents, target) if judged["per_intent"] else None
        judged["per_intent"] = rule is not None  # chosen, and a rule fitted on the whole holdout
    if rule is not None and intents is not None:
        in_sample = apply(rule.thresholds(intents), chosen, agree)
        return Calibration(
            target,
            rule.default,
            in_sample.teacher_share,
            in_sample.kept_agreement,
            split.kept_low >= target,
            tuple(points),
            held_out=split,
            signal=name,
            intent_thresholds=rule.by_intent,
            intents_judged=judged,
        )
    return Calibration(
        target,
        point.threshold,
        point.teacher_share,
        point.kept_agreement,
        reached,
        tuple(points),
        held_out=held_out,
        signal=name,
        intents_judged=judged,
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
    threshold: float | Sequence[float | None] | None,
    confidences: Sequence[float | None],
    agree: Sequence[float],
) -> Point:
    """What a threshold does on other data (a second split, live traffic): the router's rule
    (an answer without a confidence is kept, as the gateway keeps it). `threshold` may be one
    per answer (its intent's); the point then carries none."""
    n = len(agree)
    limits = threshold if isinstance(threshold, Sequence) else [threshold] * n
    stayed = [a for c, limit, a in zip(confidences, limits, agree, strict=True) if stays(c, limit)]
    return Point(
        None if isinstance(threshold, Sequence) else threshold,
        (n - len(stayed)) / n if n else 0.0,
        sum(stayed) / len(stayed) if stayed else None,
        len(stayed),
        kept_low(sum(stayed), len(stayed)),
    )
