"""The seeded, intent-stratified holdout split, its groups, and per-intent caps.

Rows that retell one case (user turns at least `group_similarity` alike, or one `metadata.group`)
form a group, and a group goes whole to one split: a holdout row must never have a near-copy in
training, or "held-out agreement" partly measures recall. Groups are ranked by a hash of (seed,
content), so the same examples and seed always give the same split, whatever their order.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from .dedupe import components, jaccard, shingle_hashes, shingle_sets, similar_pairs, words

Split = Literal["train", "holdout"]
_EXACT_PAIRS = 50_000  # below this many holdout x train pairs, the max similarity is exact


def _rank(seed: int, key: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()


def holdout_count(n: int, share: float) -> int:
    """Rounded half up, so 15% of 10 is 2."""
    return int(n * share + 0.5)


def group_rows(texts: Sequence[str], tags: Sequence[str | None], *, similarity: float) -> list[int]:
    """A group label per row: rows whose texts (the user turns) have a word-shingle Jaccard
    similarity >= `similarity`, or that carry the same tag (`metadata.group`), are joined, and
    so are their groups in turn (connected components)."""
    import numpy as np

    pairs, _ = similar_pairs([words(t) for t in texts], similarity)
    first: dict[str, int] = {}
    tagged = []
    for i, tag in enumerate(tags):
        if tag is not None:
            tagged.append((first.setdefault(tag, i), i))
    links = np.concatenate([pairs, np.asarray(tagged, dtype=np.int64).reshape(-1, 2)])
    return [int(x) for x in components(len(texts), links)]


def group_split(
    keys: Sequence[str],
    intents: Sequence[str],
    groups: Sequence[int],
    *,
    holdout: float,
    seed: int,
    pinned: Sequence[bool] = (),
) -> list[Split]:
    """A split per example that never separates a group. `keys` identify contents (content
    hashes), not positions; a group counts under its members' most common intent; a group with
    a `pinned` member stays in training (pinned rows do not count towards the share).

    Intents are visited in name order; each takes groups in seeded order while a group brings
    the holdout closer to its share of the rows seen so far, so rounding and lumpy groups in
    one intent are made up in the next: the holdout misses `round(n x holdout)` by at most half
    a group."""
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    strata: dict[str, list[tuple[bytes, str, list[int]]]] = {}
    for rows in members.values():
        counts = Counter(intents[i] for i in rows)
        top = max(counts.values())
        intent = min(k for k, v in counts.items() if v == top)
        key = min(keys[i] for i in rows)
        strata.setdefault(intent, []).append((_rank(seed, key), key, rows))
    fixed = set(i for i, p in enumerate(pinned) if p)
    out: list[Split] = ["train"] * len(keys)
    seen = held = 0
    for intent in sorted(strata):
        seen += sum(i not in fixed for _, _, rows in strata[intent] for i in rows)
        goal = holdout_count(seen, holdout)
        for _, _, rows in sorted(strata[intent]):
            if fixed.intersection(rows):
                continue
            if abs(held + len(rows) - goal) < abs(held - goal):
                held += len(rows)
                for i in rows:
                    out[i] = "holdout"
    return out


def stratified_split(
    keys: Sequence[str], intents: Sequence[str], *, holdout: float, seed: int
) -> list[Split]:
    """The split of unrelated rows: every row its own group."""
    return group_split(keys, intents, range(len(keys)), holdout=holdout, seed=seed)


@dataclass(frozen=True, slots=True)
class Leak:
    """How close the holdout comes to training."""

    max_similarity: float  # the highest user-turn Jaccard of a holdout row to a training row
    exact: bool  # every pair compared; else LSH candidates only (a lower bound below threshold)


def holdout_similarity(texts: Sequence[str], splits: Sequence[str], *, similarity: float) -> Leak:
    """The highest word-shingle Jaccard similarity of any holdout row's text to any train row's
    (rows of other splits are ignored). Exact when there are few pairs; otherwise only the pairs
    that MinHash LSH tuned to `similarity` proposes are measured, which finds a pair at or above
    `similarity` with high probability and is a lower bound below it (0.0 when none is a
    candidate)."""
    import numpy as np

    holdout = [i for i, s in enumerate(splits) if s == "holdout"]
    train = [i for i, s in enumerate(splits) if s == "train"]
    if not holdout or not train:
        return Leak(0.0, True)
    docs = [words(t) for t in texts]
    exact = len(holdout) * len(train) <= _EXACT_PAIRS
    if exact:
        pairs = np.array([(h, t) for h in holdout for t in train], dtype=np.int64)
        pairs = pairs[[bool(docs[h]) and bool(docs[t]) for h, t in pairs.tolist()]]
        if not len(pairs):
            return Leak(0.0, True)
        shingles, offsets = shingle_hashes(docs)
        sims = jaccard(pairs, *shingle_sets(shingles, offsets))
    else:
        pairs, sims = similar_pairs(docs, similarity, floor=0.0)
        held = np.asarray([s == "holdout" for s in splits])
        trained = np.asarray([s == "train" for s in splits])
        a, b = pairs[:, 0], pairs[:, 1]
        sims = sims[(held[a] & trained[b]) | (trained[a] & held[b])]
    return Leak(round(float(sims.max()), 4) if len(sims) else 0.0, exact)


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


@dataclass(frozen=True, slots=True)
class Consistency:
    """How often the teacher gave a retold case the answer it gave most often to that case's
    group: `agreement` over the `examples` in groups of two or more (None: no such group)."""

    examples: int
    agreement: float | None
    agreement_ci: tuple[float, float]

    def to_json(self) -> dict[str, object]:
        return {
            "examples": self.examples,
            "agreement": self.agreement,
            "agreement_ci": list(self.agreement_ci),
        }


def teacher_consistency(groups: Sequence[int], answers: Sequence[str]) -> Consistency:
    """The teacher's own consistency over retellings (answers as canonical keys, one per row):
    a student that learns the case, not the wording, agrees with the teacher at most about this
    often on new retellings (docs/quality.md). Measured in sample: it reads high."""
    from ..stats import binomial_interval

    members: dict[int, list[str]] = {}
    for g, answer in zip(groups, answers, strict=True):
        members.setdefault(g, []).append(answer)
    n = right = 0
    for keys in members.values():
        if len(keys) > 1:
            n += len(keys)
            right += Counter(keys).most_common(1)[0][1]
    return Consistency(n, right / n if n else None, binomial_interval(right, n))
