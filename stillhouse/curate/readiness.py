"""Grace-period readiness: has a task seen enough conversations, intents or days to curate?

Read-only: counts come from the store (and the newest dataset's intents when callers send no
`metadata.intent`). It never changes a task's state; the lifecycle decides what to do with it.
"""

from __future__ import annotations

import time
from typing import Any

from ..config import Config
from ..store.base import TraceStore


def grace_readiness(
    store: TraceStore, config: Config, now: float | None = None
) -> dict[str, dict[str, Any]]:
    """Per configured task: conversations, unique intents, days since the first call, and which
    of min_conversations / min_unique_intents / max_days is met (`ready`: the first two, or
    max_days)."""
    now = time.time() if now is None else now
    seen = store.task_readiness()
    out: dict[str, dict[str, Any]] = {}
    for name, task in sorted(config.tasks.items()):
        row = seen.get(name, {})
        intents = int(row.get("intents", 0))
        latest = store.list_datasets(name)[:1]
        if latest:  # clustered intents of the newest snapshot count when metadata has none
            intents = max(intents, latest[0].intents_count)
        first = row.get("first_call_at")
        days = round((now - first) / 86400, 2) if first is not None else None
        conversations = int(row.get("conversations", 0))
        met = {
            "min_conversations": conversations >= task.grace.min_conversations,
            "min_unique_intents": intents >= task.grace.min_unique_intents,
            "max_days": days is not None and days >= task.grace.max_days,
        }
        out[name] = {
            "conversations": conversations,
            "unique_intents": intents,
            "days": days,
            "met": met,
            "ready": (met["min_conversations"] and met["min_unique_intents"]) or met["max_days"],
        }
    return out
