"""Duplicate removal: exact content hashes first, then MinHash LSH over normalised word shingles.

Vectorised with numpy: every shingle of every example is hashed in one pass, and signatures are
minimums over chunks of a (shingles x permutations) matrix. LSH candidates are confirmed with the
exact Jaccard similarity of their shingle sets, so a removal is never only the sketch's guess.
Of each group of duplicates the newest example is kept; the only copy of anything is never removed.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_WORD = re.compile(r"\w+")
_CHUNK = 8192  # shingles per minhash block: num_perm * 8 * 8192 bytes stay in cache


def words(text: str) -> list[str]:
    """Normalised words: lower case, punctuation and spacing dropped."""
    return _WORD.findall(text.lower())


def content_key(doc: Sequence[str]) -> bytes:
    """The exact-duplicate key of normalised words: equal keys, equal text to dedupe."""
    return hashlib.blake2b(" ".join(doc).encode(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class DedupeResult:
    kept: tuple[int, ...]  # indices into the input, in input order
    exact: int  # removed as exact duplicates
    near: int  # removed as near duplicates
    duplicate_of: dict[int, int] = field(default_factory=dict)  # removed index -> kept index


def lsh_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """Bands and rows per band minimising weighted false negatives and positives around the
    threshold. False negatives weigh more: candidates are verified exactly, misses are final."""
    import numpy as np

    best = (1, num_perm)
    best_err = float("inf")
    for bands in range(1, num_perm + 1):
        rows = num_perm // bands
        if rows < 1:
            break
        lo = np.linspace(0.0, threshold, 200)
        hi = np.linspace(threshold, 1.0, 200)
        fp = np.trapezoid(1 - (1 - lo**rows) ** bands, lo)
        fn = np.trapezoid((1 - hi**rows) ** bands, hi)
        err = float(0.05 * fp + 0.95 * fn)
        if err < best_err:
            best, best_err = (bands, rows), err
    return best


def shingle_hashes(docs: Sequence[Sequence[str]], k: int = 3) -> tuple[Any, Any]:
    """(32-bit hashes of every k-word shingle of every doc, offsets[n + 1] into them).

    A doc shorter than k words is padded, so every doc has at least one shingle."""
    import numpy as np

    vocab: dict[str, int] = {"": 0}  # id 0 pads short docs
    ids: list[int] = []
    lengths = np.empty(len(docs), dtype=np.int64)
    for i, doc in enumerate(docs):
        # setdefault's default is evaluated first: a new word gets the next id.
        ids.extend([vocab.setdefault(w, len(vocab)) for w in doc])
        if len(doc) < k:
            ids.extend([0] * (k - len(doc)))
        lengths[i] = max(len(doc), k)
    # Word hashes come from the word itself (crc32), not its id: stable whatever the input order.
    word_hash = np.fromiter(
        (zlib.crc32(w.encode()) + 1 if w else 0 for w in vocab), dtype=np.uint64, count=len(vocab)
    )
    tok = word_hash[np.asarray(ids, dtype=np.int64)]
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    counts = lengths - k + 1
    offsets = np.concatenate(([0], np.cumsum(counts)))
    positions = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1])
    mult = np.random.default_rng(0x5EED).integers(1, 2**63, size=k, dtype=np.uint64) | 1
    h = np.zeros(len(positions), dtype=np.uint64)
    for j in range(k):
        h += tok[positions + j] * mult[j]  # wraps mod 2**64 on purpose
    return (h >> np.uint64(32)).astype(np.uint32), offsets


def minhash_signatures(shingles: Any, offsets: Any, num_perm: int = 128, seed: int = 1) -> Any:
    """[n_docs, num_perm] uint32 MinHash signatures (multiply-add-shift hash family).

    Blocks are permutation-major and cache-sized; the shift to 32 bits is applied after the
    minimum (it is monotone, so min(h) >> 32 == min(h >> 32)), saving two passes per block."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = (rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1))[:, None]
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)[:, None]
    n = len(offsets) - 1
    sig = np.empty((num_perm, n), dtype=np.uint64)
    buf = np.empty((num_perm, _CHUNK), dtype=np.uint64)
    doc = 0
    while doc < n:
        # Whole docs per block, at least one, about _CHUNK shingles.
        end = int(np.searchsorted(offsets, offsets[doc] + _CHUNK, side="right")) - 1
        end = min(max(end, doc + 1), n)
        s0, s1 = int(offsets[doc]), int(offsets[end])
        m = s1 - s0
        block = buf[:, :m] if m <= _CHUNK else np.empty((num_perm, m), dtype=np.uint64)
        np.multiply(a, shingles[s0:s1].astype(np.uint64)[None, :], out=block)
        block += b  # wraps mod 2**64 on purpose
        sig[:, doc:end] = np.minimum.reduceat(block, offsets[doc:end] - s0, axis=1)
        doc = end
    return np.ascontiguousarray((sig >> np.uint64(32)).astype(np.uint32).T)


def candidate_pairs(sig: Any, bands: int, rows: int) -> Any:
    """[m, 2] int64 pairs (i < j) that share at least one LSH band."""
    import numpy as np

    n = sig.shape[0]
    mult = np.random.default_rng(7).integers(1, 2**63, size=rows, dtype=np.uint64) | 1
    found = []
    for band in range(bands):
        cols = sig[:, band * rows : (band + 1) * rows].astype(np.uint64)
        key = (cols * mult).sum(axis=1)
        order = np.argsort(key, kind="stable")
        sk = key[order]
        same = np.flatnonzero(sk[1:] == sk[:-1]) + 1  # sorted positions continuing a run
        if not len(same):
            continue
        run_start = np.maximum.accumulate(np.where(np.r_[True, sk[1:] != sk[:-1]], np.arange(n), 0))
        # Each member is paired with its run's first member and with its predecessor.
        for left in (order[run_start[same]], order[same - 1]):
            found.append(np.stack([left, order[same]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.sort(np.concatenate(found), axis=1).astype(np.int64)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    code = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([code // n, code % n], axis=1)


def _ranges(starts: Any, lengths: Any) -> Any:
    """Concatenated aranges: starts[i] .. starts[i] + lengths[i] for every i."""
    import numpy as np

    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)


def shingle_sets(shingles: Any, offsets: Any) -> tuple[Any, Any]:
    """Each doc's sorted distinct shingles (values, offsets[n + 1]), in one sort."""
    import numpy as np

    n = len(offsets) - 1
    doc = np.repeat(np.arange(n, dtype=np.uint64), np.diff(offsets))
    key = np.unique((doc << np.uint64(32)) | shingles.astype(np.uint64))
    values = (key & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return values, np.searchsorted(key >> np.uint64(32), np.arange(n + 1, dtype=np.uint64))


def jaccard(pairs: Any, values: Any, offsets: Any, budget: int = 1 << 22) -> Any:
    """Exact Jaccard similarity of the shingle sets of each pair (i, j), vectorised: both sets
    of a pair are tagged with the pair's index and sorted together, and a value seen twice is in
    both. Pairs go in chunks of about `budget` shingles."""
    import numpy as np

    out = np.empty(len(pairs))
    sizes = np.diff(offsets)
    cost = np.cumsum(sizes[pairs[:, 0]] + sizes[pairs[:, 1]]) if len(pairs) else np.empty(0)
    start = 0
    while start < len(pairs):
        done = cost[start - 1] if start else 0
        end = max(int(np.searchsorted(cost, done + budget, side="right")), start + 1)
        i, j = pairs[start:end, 0], pairs[start:end, 1]
        tag = np.arange(len(i), dtype=np.uint64) << np.uint64(32)
        keys = []
        for side in (i, j):
            idx = _ranges(offsets[side], sizes[side])
            keys.append(np.repeat(tag, sizes[side]) | values[idx].astype(np.uint64))
        key = np.sort(np.concatenate(keys))
        both = key[1:][key[1:] == key[:-1]] >> np.uint64(32)
        inter = np.bincount(both.astype(np.int64), minlength=len(i))
        out[start:end] = inter / (sizes[i] + sizes[j] - inter)
        start = end
    return out


def similar_pairs(
    docs: Sequence[Sequence[str]],
    threshold: float,
    *,
    num_perm: int = 128,
    shingle: int = 3,
    seed: int = 1,
    floor: float | None = None,
) -> tuple[Any, Any]:
    """Pairs (i < j) of docs whose k-word shingle sets have Jaccard >= threshold, and that
    similarity. MinHash LSH tuned to the threshold proposes candidates, the sketch's estimate
    drops clear non-matches, the exact Jaccard decides: a pair is never only the sketch's guess,
    and a pair above the threshold is missed only with the LSH's small false-negative rate.
    A doc without words is similar to nothing. `floor` (default: the threshold) keeps the
    candidates measured at or above it instead: below the threshold, some pairs only."""
    import numpy as np

    empty = np.empty((0, 2), dtype=np.int64), np.empty(0)
    if len(docs) < 2:
        return empty
    shingles, offsets = shingle_hashes(docs, shingle)
    sig = minhash_signatures(shingles, offsets, num_perm, seed)
    pairs = candidate_pairs(sig, *lsh_params(threshold, num_perm))
    wordless = np.fromiter((not d for d in docs), dtype=bool, count=len(docs))
    pairs = pairs[~(wordless[pairs[:, 0]] | wordless[pairs[:, 1]])]
    if not len(pairs):
        return empty
    estimate = np.empty(len(pairs))
    for s in range(0, len(pairs), 100_000):
        p = pairs[s : s + 100_000]
        estimate[s : s + 100_000] = (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1)
    floor = threshold if floor is None else floor
    pairs = pairs[estimate >= floor - 0.15]
    sim = jaccard(pairs, *shingle_sets(shingles, offsets))
    keep = sim >= floor
    return pairs[keep], sim[keep]


def components(n: int, pairs: Any) -> Any:
    """Connected-component label (0..k-1) of each of n nodes joined by `pairs`."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ones = np.ones(len(pairs), dtype=np.int8)
    graph = coo_matrix((ones, (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def dedupe(
    texts: Sequence[str],
    created_at: Sequence[float],
    keys: Sequence[str],
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    shingle: int = 3,
    seed: int = 1,
) -> DedupeResult:
    """Remove exact then near duplicates (Jaccard >= threshold), keeping the newest of each group.

    `keys` (call ids) break ties between equally new examples, so the result is deterministic."""
    n = len(texts)
    newest = sorted(range(n), key=lambda i: (created_at[i], keys[i]), reverse=True)
    rank = {i: r for r, i in enumerate(newest)}  # 0 = newest
    docs = [words(t) for t in texts]
    duplicate_of: dict[int, int] = {}

    # Exact: identical normalised word sequences.
    seen: dict[bytes, int] = {}
    survivors: list[int] = []
    for i in newest:
        digest = content_key(docs[i])
        if digest in seen:
            duplicate_of[i] = seen[digest]
        else:
            seen[digest] = i
            survivors.append(i)
    exact = n - len(survivors)

    near = 0
    survivors.sort()
    pairs, _ = similar_pairs(
        [docs[i] for i in survivors], threshold, num_perm=num_perm, shingle=shingle, seed=seed
    )
    if len(pairs):
        members: dict[int, list[int]] = {}
        for local, label in enumerate(components(len(survivors), pairs).tolist()):
            members.setdefault(label, []).append(survivors[local])
        for group in members.values():
            if len(group) < 2:
                continue
            keep = min(group, key=rank.__getitem__)
            for i in group:
                if i != keep:
                    duplicate_of[i] = keep
                    near += 1
    # An exact duplicate of a near-duplicate points at the example finally kept.
    for i, j in list(duplicate_of.items()):
        while j in duplicate_of:
            j = duplicate_of[j]
        duplicate_of[i] = j
    kept = tuple(i for i in range(n) if i not in duplicate_of)
    return DedupeResult(kept=kept, exact=exact, near=near, duplicate_of=duplicate_of)
