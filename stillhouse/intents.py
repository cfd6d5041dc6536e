"""The intent model a snapshot carries, so a gateway can tell a live request's intent cheaply.

Fitted at curation (curate/intent_model.py) on the snapshot's own examples and intents; stored as
JSON in the dataset's config. Predicting is pure Python over a few dict lookups (microseconds, no
numpy, no sklearn): the router calls it on the request path, where it must never import sklearn
or read the store. Ground floor: imports nothing of the project.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

TOKEN = re.compile(r"(?u)\b[^\W\d_]{2,}\b")  # the clustering's token_pattern
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
