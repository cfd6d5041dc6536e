"""Drift of a serving student: shadow agreement in a recent window, and the shift of the intent
distribution (population stability index) from the data the student learnt to recent traffic.

Read-only: it reports; the controller decides to retrain.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..config import TaskConfig
from ..stats import rate_interval
from ..store.base import TraceStore
from .rollout import collect

_EPS = 1e-4


def psi(baseline: Sequence[str], current: Sequence[str]) -> float:
    """Population stability index of two samples of labels (0: same distribution; > 0.25 is
    conventionally a large shift). Empty bins get a small floor so the index stays finite."""
    if not baseline or not current:
        return 0.0
    a, b = Counter(baseline), Counter(current)
    total = 0.0
    for label in set(a) | set(b):
        p = max(a[label] / len(baseline), _EPS)
        q = max(b[label] / len(current), _EPS)
        total += (q - p) * math.log(q / p)
    return total


def _user_text(request: dict[str, Any]) -> str:
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    content = users[-1].get("content") if users else ""
    return content if isinstance(content, str) else orjson.dumps(content).decode()


def recent_intents(
    store: TraceStore, task: str, since: float
) -> tuple[list[str | None], list[str]]:
    """(metadata.intent or None, request text) of the task's served calls since `since`."""
    known, texts = [], []
    for req, meta in store.served_requests(task, since):
        intent = (meta or {}).get("intent")
        known.append(str(intent) if intent is not None else None)
        texts.append(_user_text(req))
    return known, texts


def intent_shift(
    store: TraceStore,
    task: str,
    dataset_id: str,
    since: float,
    cluster: Callable[[list[str]], list[str]],
) -> float | None:
    """PSI between the intents of the dataset the student learnt and recent traffic. Both sides
    use the callers' metadata.intent when every recent call has one, else one TF-IDF clustering
    of both sides together (so the labels are comparable)."""
    examples = store.dataset_examples(dataset_id, "train")
    known, texts = recent_intents(store, task, since)
    if not examples or not texts:
        return None
    if all(k is not None for k in known):
        return psi([e.intent for e in examples], [k for k in known if k is not None])
    base_texts = [_user_text(e.example) for e in examples]
    labels = cluster(base_texts + texts)
    return psi(labels[: len(base_texts)], labels[len(base_texts) :])


@dataclass(frozen=True, slots=True)
class Drift:
    """`drifted`: retrain. `insufficient`: too few shadow comparisons in the window to tell
    either way (said in `status`, never read as "no drift")."""

    drifted: bool
    reason: str
    detail: dict[str, Any]
    insufficient: bool = False


def check_drift(
    store: TraceStore,
    task_name: str,
    task: TaskConfig,
    dataset_id: str | None,
    cluster: Callable[[list[str]], list[str]],
    now: float | None = None,
) -> Drift:
    """Drift in the task's recent window; `cluster` labels request texts with intents when the
    callers send no metadata.intent (curation's clustering: the composition passes it in)."""
    now = time.time() if now is None else now
    since = now - task.drift.window
    evidence = collect(store, task_name, since)
    threshold = task.drift.agreement if task.drift.agreement is not None else task.gate.agreement
    _, high = rate_interval(evidence.shadow)
    samples = len(evidence.shadow)
    detail: dict[str, Any] = {"shadow_samples": samples, "agreement_upper": high}
    if samples >= task.drift.min_samples and high < threshold:
        return Drift(True, f"shadow agreement {high:.3f} (upper bound) < {threshold}", detail)
    shift = intent_shift(store, task_name, dataset_id, since, cluster) if dataset_id else None
    detail["psi"] = shift
    known, _ = recent_intents(store, task_name, since)
    if shift is not None and len(known) >= task.drift.min_samples and shift > task.drift.max_psi:
        return Drift(
            True, f"intent distribution shifted: PSI {shift:.3f} > {task.drift.max_psi}", detail
        )
    if samples < task.drift.min_samples:
        return Drift(
            False,
            f"insufficient evidence: {samples}/{task.drift.min_samples} shadow comparisons "
            f"in the last {task.drift.window:.0f} s",
            detail,
            insufficient=True,
        )
    return Drift(False, "no drift", detail)
