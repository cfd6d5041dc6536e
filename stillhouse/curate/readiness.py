"""Grace-period readiness: has a task seen enough conversations, intents or days to curate, and,
after a failed gate, enough new distinct requests to curate again?

Intents are counted the way curation will find them: the newest captured teacher requests,
deduplicated and given intents by the task's `curate.intents` method and seed (the caller's
`metadata.intent`, else clusters). A `GraceCounter` keeps the counts between the controller's
ticks and counts again only when new calls arrived. Read-only: it never changes a task's state.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ..config import Config, TaskConfig
from ..store.base import TraceStore
from .dedupe import content_key, dedupe, words
from .intents import assign_intents, default_clusters
from .normalize import dedupe_text, request_messages, user_text

SAMPLE = 20_000  # the newest teacher calls grace gives intents to (k-means finds up to 100)
LOOKBACK = 100_000  # the earlier calls a request must differ from to count as new


@dataclass(frozen=True, slots=True)
class Request:
    """A captured request as curation will see it, before the teacher's answer."""

    created_at: float
    text: str  # the turns without the system prompt: what dedupe compares
    user: str  # the user turns: what intents are clustered on
    intent: str | None  # metadata.intent when the caller sent one

    @classmethod
    def of(cls, created_at: float, request: Any, metadata: Any) -> Request:
        messages = request_messages(request)
        meta = metadata if isinstance(metadata, dict) else {}
        intent = meta.get("intent")
        return cls(
            created_at=created_at,
            text=dedupe_text(messages),
            user=user_text(messages),
            intent=str(intent) if intent not in (None, "") else None,
        )

    def key(self) -> bytes:
        return content_key(words(self.text))


def count_intents(task: TaskConfig, requests: list[Request]) -> tuple[int, str]:
    """(distinct intents, the method) curation would give these requests: duplicates removed
    as dedupe removes them, then `curate.intents` with the task's seed."""
    if not requests:
        return 0, "none"
    kept = dedupe(
        [r.text for r in requests],
        [r.created_at for r in requests],
        [str(i) for i in range(len(requests))],
        threshold=task.curate.dedupe_threshold,
    ).kept
    found, method = assign_intents(
        [requests[i].intent for i in kept],
        [requests[i].user or requests[i].text for i in kept],
        method=task.curate.intents,
        seed=task.curate.seed,
    )
    return len(set(found)), method


class GraceCounter:
    """What grace counts, kept between ticks: a task's intents until its call count changes,
    the requests before a wait began (they never change) and the new distinct ones since."""

    def __init__(self) -> None:
        self._intents: dict[str, tuple[Any, tuple[int, str]]] = {}
        self._before: dict[str, tuple[float, set[bytes]]] = {}
        self._fresh: dict[str, tuple[tuple[float, int], int]] = {}

    def intents(
        self, store: TraceStore, name: str, task: TaskConfig, calls: int
    ) -> tuple[int, str]:
        """(intents, method) among the task's newest SAMPLE teacher calls; `calls`: how many it
        has (the cache key, with the settings that change the answer)."""
        cfg = task.curate
        key = (calls, cfg.intents, cfg.seed, cfg.dedupe_threshold)
        cached = self._intents.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        rows = store.teacher_requests(name, limit=SAMPLE)
        counted = count_intents(task, [Request.of(*row) for row in rows])
        self._intents[name] = (key, counted)
        return counted

    def new_distinct(self, store: TraceStore, name: str, since: float) -> int:
        """Distinct requests (dedupe's exact key) among the task's teacher calls since `since`
        that none of its LOOKBACK calls before `since` made."""
        calls = store.new_teacher_calls(name, since)
        cached = self._fresh.get(name)
        if cached is not None and cached[0] == (since, calls):
            return cached[1]
        before = self._before.get(name)
        if before is None or before[0] != since:
            rows = store.teacher_requests(name, before=since, limit=LOOKBACK)
            before = (since, {Request.of(*row).key() for row in rows})
            self._before[name] = before
        fresh = {Request.of(*row).key() for row in store.teacher_requests(name, since=since)}
        count = len(fresh - before[1])
        self._fresh[name] = ((since, calls), count)
        return count


def intents_needed(task: TaskConfig, method: str) -> int:
    """The intents grace waits for. Caller-given intents (`metadata`): `min_unique_intents`.
    Clustered ones: k-means makes k = round(sqrt(n / 2)) clusters of n distinct requests, so
    their count says how many distinct requests there were, not how varied they are; grace asks
    of it at most what `min_conversations` distinct requests make (300: 12), else a task whose
    callers send no `metadata.intent` would wait for ~5,000 distinct requests (the default 50)."""
    wanted = task.grace.min_unique_intents
    if method not in ("tfidf", "embeddings"):  # the callers' own, or nothing seen yet
        return wanted
    return min(wanted, default_clusters(task.grace.min_conversations))


def grace_readiness(
    store: TraceStore,
    config: Config,
    now: float | None = None,
    counter: GraceCounter | None = None,
) -> dict[str, dict[str, Any]]:
    """Per configured task: conversations, unique intents (as curation will find them) and
    how many grace needs (`intents_needed`), days since the first call, and which of
    min_conversations / min_unique_intents / max_days is met (`ready`: the first two, or
    max_days). `counter` keeps counts between calls."""
    now = time.time() if now is None else now
    counter = counter or GraceCounter()
    seen = store.task_readiness()
    out: dict[str, dict[str, Any]] = {}
    for name, task in sorted(config.tasks.items()):
        row = seen.get(name, {})
        intents, method = counter.intents(store, name, task, int(row.get("calls", 0)))
        latest = store.list_datasets(name)[:1]
        if latest:  # what the newest snapshot found, when more than the sample shows
            intents = max(intents, latest[0].intents_count)
        first = row.get("first_call_at")
        days = round((now - first) / 86400, 2) if first is not None else None
        conversations = int(row.get("conversations", 0))
        needed = intents_needed(task, method)
        met = {
            "min_conversations": conversations >= task.grace.min_conversations,
            "min_unique_intents": intents >= needed,
            "max_days": days is not None and days >= task.grace.max_days,
        }
        out[name] = {
            "conversations": conversations,
            "unique_intents": intents,
            "intents_needed": needed,
            "intent_method": method,
            "days": days,
            "met": met,
            "ready": (met["min_conversations"] and met["min_unique_intents"]) or met["max_days"],
        }
    return out
