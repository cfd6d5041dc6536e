"""The figures every verdict is stated in: one binomial interval for every rate that gates or is
reported, the bootstrap for paired differences only, one percentile, one mean.

Ground floor: pure functions over plain numbers, importing nothing of the project. The binomial
interval is Wilson's score interval at 95% (two-sided): 20 right of 20 is [0.839, 1], so a
perfect score on a small holdout cannot pass a 0.92 bar (docs/evaluation.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

DEFAULT_RESAMPLES = 2000
DEFAULT_LEVEL = 0.95
Z95 = 1.959964  # the two-sided 95% normal quantile of `binomial_interval`


def binomial_interval(successes: float, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson's 95% score interval of a rate successes/n; (0, 1) with no trials: no evidence
    is never read as good evidence. Every gated or reported rate uses this one function."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError("successes must be between 0 and n")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_interval(outcomes: Sequence[float | bool]) -> tuple[float, float]:
    """`binomial_interval` of 0/1 outcomes (each must be 0 or 1: a mean of continuous scores
    is not a binomial rate)."""
    if any(o not in (0, 1) for o in outcomes):
        raise ValueError("rate_interval takes 0/1 outcomes")
    return binomial_interval(float(sum(outcomes)), len(outcomes))


def bootstrap_ci(
    values: Sequence[float],
    *,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values` ((0.0, 0.0) with no values).
    For paired differences (`paired_difference_ci`); a rate's interval is `binomial_interval`."""
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
