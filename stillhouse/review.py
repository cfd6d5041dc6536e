"""The human review queue: a sample of student answers and every fallback disagreement wait here
for a person to mark right or wrong, or to correct.

A verdict is stored once, on the queue's row and as scores on the call: `review` (1 right, 0
wrong; label right | wrong | corrected) and `shadow_agreement` from source `review`, so the
rollout gates and the drift monitor count a person's verdict like a comparison with the teacher.
Corrections become training data (see `corrections`, used by curation). Nothing here runs on the
request path: the queue is filled from stored calls by the controller's tick or by the CLI.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Literal

from .answers import agree, answer_text
from .config import Config, TaskConfig
from .errors import StillhouseError
from .store.base import TraceStore
from .store.records import Call, Score, new_id
from .store.review import REVIEW_COLUMNS as COLUMNS

Verdict = Literal["right", "wrong"]
LAG = 600.0  # seconds the scan looks back past its cursor: captures arrive a little late


@dataclass(frozen=True, slots=True)
class ReviewItem:
    id: str
    call_id: str
    task: str
    created_at: float
    reason: str  # sample | fallback
    status: str  # pending | right | wrong | corrected
    correction: str | None = None
    reviewer: str | None = None
    reviewed_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


def sampled(rate: float, call_id: str) -> bool:
    """Whether a student answer is sampled for review (a hash of its id: stable, no state)."""
    digest = hashlib.blake2b(f"review\x1f{call_id}".encode(), digest_size=8).digest()
    return rate > 0 and int.from_bytes(digest, "big") / 2**64 < rate


def _to_review(store: TraceStore, name: str, task: TaskConfig, since: float) -> list[tuple]:
    rows = store.reviewable_calls(name, since)
    replacement = {}  # student call id -> the teacher's answer that replaced it
    for _, role, reason, _, response, metadata in rows:
        if role == "teacher" and reason == "fallback":
            of = (metadata or {}).get("fallback_of")
            if of:
                replacement[of] = answer_text(response)
    out = []
    for call_id, role, reason, created_at, response, _ in rows:
        if role != "student":
            continue
        if reason == "fallback:replaced":
            if not task.review.fallbacks or call_id not in replacement:
                continue  # its teacher answer is not stored yet: the next scan looks again
            mine = answer_text(response)
            if agree(task.gate.metric, replacement[call_id], mine):
                continue
            out.append((call_id, "fallback", float(created_at)))
        elif sampled(task.review.rate, call_id):
            out.append((call_id, "sample", float(created_at)))
    return out


def enqueue(store: TraceStore, config: Config, now: float | None = None) -> int:
    """Add the calls due for review since the last scan; returns how many rows were offered
    (a call already queued is left alone)."""
    now = time.time() if now is None else now
    offered = 0
    for name, task in sorted(config.tasks.items()):
        if task.review.rate <= 0 and not task.review.fallbacks:
            continue
        cursor = f"review_cursor:{name}"
        since = store.counter(cursor) / 1000
        found = _to_review(store, name, task, since)
        if found:
            store.add_review_items(
                [(new_id("rev"), call_id, name, now, reason) for call_id, reason, _ in found]
            )
            offered += len(found)
        target = int(max(since, now - LAG) * 1000)
        if target > since * 1000:
            store.add_counter(cursor, target - int(since * 1000))
    return offered


def _item(data: dict[str, Any]) -> ReviewItem:
    data["created_at"] = float(data["created_at"])
    if data["reviewed_at"] is not None:
        data["reviewed_at"] = float(data["reviewed_at"])
    return ReviewItem(**data)


def get(store: TraceStore, item_id: str) -> ReviewItem | None:
    row = store.review_item(item_id)
    return _item(row) if row is not None else None


def items(
    store: TraceStore, task: str | None = None, status: str | None = "pending", limit: int = 50
) -> list[ReviewItem]:
    """Queue rows, oldest first (pending by default; status None: every row)."""
    return [_item(r) for r in store.review_items(task, status, limit)]


def show(store: TraceStore, item: ReviewItem) -> dict[str, Any]:
    """What a person needs to judge an item: the question, the student's answer and, for a
    fallback, the teacher's answer that replaced it."""
    call = store.get_call(item.call_id)
    doc: dict[str, Any] = {**item.to_json(), "messages": [], "answer": "", "teacher_answer": None}
    if call is None:
        return doc
    doc["messages"] = [
        {"role": m.get("role"), "content": m.get("content")}
        for m in (call.request or {}).get("messages", [])
    ]
    doc["answer"] = answer_text(call.response)
    if item.reason == "fallback":
        for response, metadata in store.fallback_calls(item.task, call.created_at):
            if (metadata or {}).get("fallback_of") == item.call_id:
                doc["teacher_answer"] = answer_text(response)
    return doc


def mark(
    store: TraceStore,
    item_id: str,
    verdict: Verdict,
    correction: str | None = None,
    reviewer: str | None = None,
) -> ReviewItem:
    """Store a person's verdict (once). A correction means the answer was wrong, and becomes
    training data for the task's next dataset."""
    if verdict not in ("right", "wrong"):
        raise StillhouseError(f"verdict must be right or wrong, not {verdict!r}")
    correction = (correction or "").strip() or None
    if correction is not None and verdict == "right":
        raise StillhouseError("a correction goes with --verdict wrong")
    item = get(store, item_id)
    if item is None:
        raise StillhouseError(f"no review item {item_id!r} (see `stillhouse review --json`)")
    if item.status != "pending":
        raise StillhouseError(f"review item {item_id} was already marked {item.status}")
    status = "corrected" if correction else verdict
    now = time.time()
    store.mark_review_item(item_id, status, correction, reviewer, now)
    value = 1.0 if verdict == "right" else 0.0
    store.insert_scores(
        [
            Score(new_id("score"), item.call_id, "review", value, status, "review", correction),
            Score(new_id("score"), item.call_id, "shadow_agreement", value, status, "review"),
        ]
    )
    marked = get(store, item_id)
    assert marked is not None
    return marked


def corrections(store: TraceStore, task: str) -> list[tuple[Call, str]]:
    """The task's corrected calls with their corrections, oldest first, for curation."""
    out = []
    for call_id, correction in store.review_corrections(task):
        call = store.get_call(call_id)
        if call is not None and correction:
            out.append((call, str(correction)))
    return out
