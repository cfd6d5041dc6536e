"""Seeded bootstrap confidence intervals: of a mean, and of a paired difference of means.

Pure functions over plain lists (numpy inside). Seeded, so the same scores always give the same
interval and an eval run is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95


def bootstrap_ci(
    values: Sequence[float],
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values` ((0.0, 0.0) with no values)."""
    import numpy as np

    if not 0 < level < 1:
        raise ValueError("level must be between 0 and 1")
    if not values:
        return (0.0, 0.0)
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    # One (resamples x n) index draw: 2000 x 1000 ints is 16 MB, fine for holdouts we serve.
    means = data[rng.integers(0, len(data), size=(resamples, len(data)))].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return (float(low), float(high))


def paired_difference_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The bootstrap interval of mean(a) - mean(b) over the same examples, resampled together
    (paired: both models answered example i, so their scores move together)."""
    if len(a) != len(b):
        raise ValueError("paired scores need the same examples")
    return bootstrap_ci(
        [x - y for x, y in zip(a, b, strict=True)], level=level, resamples=resamples, seed=seed
    )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation; None with no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
