"""The intent model a snapshot carries, so a gateway can tell a live request's intent cheaply.

Fitted at curation on the snapshot's own examples and intents (whatever gave them: the callers'
metadata.intent or clustering): TF-IDF with the clustering's settings, one sparse centroid per
intent. It is stored as JSON in the dataset's config. Predicting is pure Python over a few dict
lookups (microseconds, no numpy, no sklearn): the gateway calls it on the request path, where it
must never import sklearn or read the store.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store.base import TraceStore

TOKEN = re.compile(r"(?u)\b[^\W\d_]{2,}\b")  # the clustering's token_pattern
TOP_TERMS = 64  # terms kept per centroid: enough to tell intents apart, small to store
MIN_SCORE = 0.05  # under this cosine a request matches no intent well enough


@dataclass(frozen=True, slots=True)
class IntentModel:
    idf: dict[str, float]  # term -> idf, for the terms some centroid keeps
    centroids: dict[str, dict[str, float]]  # intent -> {term: weight}, unit length

    def vector(self, text: str) -> dict[str, float]:
        counts = Counter(t for t in TOKEN.findall(text.lower()) if t in self.idf)
        weights = {t: (1 + math.log(n)) * self.idf[t] for t, n in counts.items()}
        norm = math.sqrt(sum(w * w for w in weights.values()))
        return {t: w / norm for t, w in weights.items()} if norm else {}

    def predict(self, text: str) -> str | None:
        """The intent whose centroid is nearest (cosine), or None when nothing matches."""
        vec = self.vector(text)
        best, best_score = None, MIN_SCORE
        for intent, centroid in self.centroids.items():
            score = sum(w * centroid.get(t, 0.0) for t, w in vec.items())
            if score > best_score:
                best, best_score = intent, score
        return best

    def to_json(self) -> dict[str, Any]:
        return {"kind": "tfidf-centroids", "idf": self.idf, "centroids": self.centroids}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> IntentModel:
        return cls(
            idf={str(k): float(v) for k, v in doc["idf"].items()},
            centroids={
                str(i): {str(t): float(w) for t, w in c.items()}
                for i, c in doc["centroids"].items()
            },
        )


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


_LOADED: dict[str, IntentModel | None] = {}  # dataset id -> its model; snapshots never change


def newest_models(store: TraceStore) -> dict[str, IntentModel]:
    """task -> the intent model of its newest curated snapshot (tasks without one are absent).
    For the routing table's refresh, off the request path; each snapshot is parsed once."""
    out = {}
    for task, dataset_id in store.newest_datasets():
        if dataset_id not in _LOADED:
            found = store.get_dataset(dataset_id)
            doc = (found.config or {}).get("intent_model") if found is not None else None
            _LOADED[dataset_id] = IntentModel.from_json(doc) if doc else None
        model = _LOADED[dataset_id]
        if model is not None:
            out[str(task)] = model
    return out
