"""The seeded, intent-stratified holdout split and per-intent caps.

Within each intent, examples are ranked by a hash of (seed, content) and the first share goes to
the holdout: the same examples and seed always give the same split, whatever their order. It
must never put one example in both splits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

Split = Literal["train", "holdout"]


def _rank(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()


def holdout_count(n: int, share: float) -> int:
    """Rounded half up, so 15% of 10 is 2 and an intent of 3 still gives one holdout example."""
    return int(n * share + 0.5)


def stratified_split(
    keys: Sequence[str], intents: Sequence[str], *, holdout: float, seed: int
) -> list[Split]:
    """A split per example. `keys` identify contents (content hashes), not positions."""
    by_intent: dict[str, list[int]] = {}
    for i, intent in enumerate(intents):
        by_intent.setdefault(intent, []).append(i)
    out: list[Split] = ["train"] * len(keys)
    for members in by_intent.values():
        ranked = sorted(members, key=lambda i: (_rank(seed, keys[i]), keys[i]))
        for i in ranked[: holdout_count(len(members), holdout)]:
            out[i] = "holdout"
    return out


def cap_per_intent(
    intents: Sequence[str], created_at: Sequence[float], keys: Sequence[str], cap: int | None
) -> list[int]:
    """Indices kept when each intent may have at most `cap` examples (the newest are kept)."""
    if cap is None:
        return list(range(len(intents)))
    by_intent: dict[str, list[int]] = {}
    for i, intent in enumerate(intents):
        by_intent.setdefault(intent, []).append(i)
    kept: list[int] = []
    for members in by_intent.values():
        members.sort(key=lambda i: (created_at[i], keys[i]), reverse=True)
        kept.extend(members[:cap])
    return sorted(kept)
