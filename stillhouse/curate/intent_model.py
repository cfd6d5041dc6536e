"""Fitting the intent model a snapshot carries (stillhouse.intents.IntentModel) at curation, on the
snapshot's own examples and intents (whatever gave them: the callers' metadata.intent or
clustering): TF-IDF with the clustering's settings, one sparse centroid per intent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..intents import TOKEN, IntentModel

TOP_TERMS = 64  # terms kept per centroid: enough to tell intents apart, small to store


def fit(texts: Sequence[str], intents: Sequence[str]) -> IntentModel | None:
    """Fit on examples' texts and intents; None when there is nothing to tell apart."""
    if len(set(intents)) < 2:
        return None
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        sublinear_tf=True, stop_words="english", token_pattern=TOKEN.pattern, max_features=20_000
    )
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # nothing but stop words and numbers
        return None
    terms = vectorizer.get_feature_names_out()
    idf_all = vectorizer.idf_
    centroids: dict[str, dict[str, float]] = {}
    kept: set[int] = set()
    for intent in sorted(set(intents)):
        rows = [i for i, x in enumerate(intents) if x == intent]
        mean = matrix[rows].mean(axis=0).A1
        top = [int(t) for t in mean.argsort()[::-1][:TOP_TERMS] if mean[t] > 0]
        norm = math.sqrt(sum(float(mean[t]) ** 2 for t in top))
        if not norm:
            continue
        centroids[intent] = {str(terms[t]): round(float(mean[t]) / norm, 6) for t in top}
        kept.update(top)
    if len(centroids) < 2:
        return None
    idf = {str(terms[t]): round(float(idf_all[t]), 6) for t in sorted(kept)}
    return IntentModel(idf=idf, centroids=centroids)
