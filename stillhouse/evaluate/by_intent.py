"""An evaluation's figures per intent: each intent's agreement with its interval and its coverage
curve, and its kept answers at the calibrated threshold (its own, where thresholds are per
intent), which the gate reads for an intent clearly under the bar."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ..answers import stays
from ..stats import rate_interval
from .calibrate import Calibration, coverage


def per_intent(
    intents: Sequence[str], agree: Sequence[float], confidences: Sequence[float | None]
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Each intent's n, agreement and interval, and its coverage curve."""
    rows: dict[str, list[int]] = defaultdict(list)
    for i, intent in enumerate(intents):
        rows[intent].append(i)
    figures, curves = {}, {}
    for intent, idx in sorted(rows.items()):
        mine = [agree[i] for i in idx]
        low, high = rate_interval(mine)
        figures[intent] = {
            "n": len(mine),
            "agreement": sum(mine) / len(mine),
            "agreement_ci": [low, high],
        }
        curves[intent] = coverage([confidences[i] for i in idx], mine)
    return figures, curves


def kept_per_intent(
    intents: Sequence[str],
    agree: Sequence[float],
    confidences: Sequence[float | None],
    calibration: Calibration,
) -> dict[str, tuple[int, float]]:
    """Each intent's kept answers at the calibrated threshold (its own, where thresholds are per
    intent): (n, agreement upper bound)."""
    stayed: dict[str, list[float]] = defaultdict(list)
    for intent, a, c in zip(intents, agree, confidences, strict=True):
        if stays(c, calibration.threshold_of(intent)):
            stayed[intent].append(a)
    return {k: (len(v), rate_interval(v)[1]) for k, v in stayed.items()}
