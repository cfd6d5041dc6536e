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

import orjson

from .answers import agree, answer_text
from .config import Config, TaskConfig
from .errors import StillhouseError
from .store.base import TraceStore
from .store.records import Call, Score, new_id

Verdict = Literal["right", "wrong"]
COLUMNS = (
    "id",
    "call_id",
    "task",
    "created_at",
    "reason",
    "status",
    "correction",
    "reviewer",
    "reviewed_at",
)
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


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _write(store: TraceStore, sql: str, rows: list[tuple[Any, ...]]) -> None:
    store._begin_write()
    try:
        cur = store.conn.cursor()
        cur.executemany(store._sql(sql), rows)
        store.conn.commit()
    except Exception:
        store.conn.rollback()
        raise


def _to_review(store: TraceStore, name: str, task: TaskConfig, since: float) -> list[tuple]:
    rows = store.query(
        "SELECT id, role, route_reason, created_at, response, metadata FROM calls "
        "WHERE task = ? AND created_at >= ? AND status = 'ok' "
        "AND (role = 'student' OR route_reason = 'fallback') ORDER BY created_at",
        (name, since),
    )
    replacement = {}  # student call id -> the teacher's answer that replaced it
    for _, role, reason, _, response, metadata in rows:
        if role == "teacher" and reason == "fallback":
            of = (_json(metadata) or {}).get("fallback_of")
            if of:
                replacement[of] = answer_text(_json(response))
    out = []
    for call_id, role, reason, created_at, response, _ in rows:
        if role != "student":
            continue
        if reason == "fallback:replaced":
            if not task.review.fallbacks or call_id not in replacement:
                continue  # its teacher answer is not stored yet: the next scan looks again
            mine = answer_text(_json(response))
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
            _write(
                store,
                "INSERT INTO review_items (id, call_id, task, created_at, reason, status) "
                "VALUES (?, ?, ?, ?, ?, 'pending') ON CONFLICT (call_id) DO NOTHING",
                [(new_id("rev"), call_id, name, now, reason) for call_id, reason, _ in found],
            )
            offered += len(found)
        target = int(max(since, now - LAG) * 1000)
        if target > since * 1000:
            store.add_counter(cursor, target - int(since * 1000))
    return offered


def _item(row: tuple[Any, ...]) -> ReviewItem:
    data = dict(zip(COLUMNS, row, strict=True))
    data["created_at"] = float(data["created_at"])
    if data["reviewed_at"] is not None:
        data["reviewed_at"] = float(data["reviewed_at"])
    return ReviewItem(**data)


def get(store: TraceStore, item_id: str) -> ReviewItem | None:
    rows = store.query(f"SELECT {', '.join(COLUMNS)} FROM review_items WHERE id = ?", (item_id,))
    return _item(rows[0]) if rows else None


def items(
    store: TraceStore, task: str | None = None, status: str | None = "pending", limit: int = 50
) -> list[ReviewItem]:
    """Queue rows, oldest first (pending by default; status None: every row)."""
    where, params = [], []
    if task is not None:
        where.append("task = ?")
        params.append(task)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    sql = f"SELECT {', '.join(COLUMNS)} FROM review_items"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = store.query(sql + " ORDER BY created_at, id LIMIT ?", (*params, limit))
    return [_item(r) for r in rows]


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
        rows = store.query(
            "SELECT response, metadata FROM calls WHERE task = ? AND route_reason = 'fallback' "
            "AND created_at >= ?",
            (item.task, call.created_at),
        )
        for response, metadata in rows:
            if (_json(metadata) or {}).get("fallback_of") == item.call_id:
                doc["teacher_answer"] = answer_text(_json(response))
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
    _write(
        store,
        "UPDATE review_items SET status = ?, correction = ?, reviewer = ?, reviewed_at = ? "
        "WHERE id = ? AND status = 'pending'",
        [(status, correction, reviewer, now, item_id)],
    )
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
    rows = store.query(
        "SELECT call_id, correction FROM review_items WHERE task = ? AND status = 'corrected' "
        "ORDER BY reviewed_at, id",
        (task,),
    )
    out = []
    for call_id, correction in rows:
        call = store.get_call(call_id)
        if call is not None and correction:
            out.append((call, str(correction)))
    return out
