"""Which captured calls may become training data, and why the others may not.

Each filter is a predicate with a name; a call is removed by the first filter it fails, and every
removal is counted under that name. Filters never change a call: they only keep or drop it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..config import TaskConfig
from ..store.records import Call, Score
from ..toolcalls import message_calls
from .normalize import answer_message, content_text

# Score labels that mean "this answer was bad" (Langfuse categorical scores, thumbs widgets).
NEGATIVE_LABELS = frozenset(
    {"negative", "bad", "thumbs_down", "thumbs-down", "down", "wrong", "incorrect", "unhelpful"}
)
# Score names that flag a hallucination when their value is > 0 or their label is truthy.
HALLUCINATION_NAMES = frozenset({"hallucination", "hallucinated", "flag", "flagged"})
TRUTHY_LABELS = frozenset({"true", "yes", "1", "hallucination", "flagged"})

# Order matters: a call is counted under the first filter it fails.
FILTER_NAMES = (
    "not_teacher",
    "error",
    "incomplete",
    "truncated",
    "flagged",
    "invalid_schema",
    "too_long",
)


@dataclass(frozen=True, slots=True)
class FilterContext:
    task: TaskConfig
    scores: Mapping[str, Sequence[Score]] = field(default_factory=dict)


def _not_teacher(call: Call, ctx: FilterContext) -> bool:
    # Students learn from the teacher only; a student's own answers would teach it its mistakes.
    return call.role != "teacher"


def _error(call: Call, ctx: FilterContext) -> bool:
    return call.status != "ok" or call.error is not None or call.http_status >= 400


def _incomplete(call: Call, ctx: FilterContext) -> bool:
    messages = call.request.get("messages")
    if not isinstance(messages, list) or not messages:
        return True
    if not any(isinstance(m, dict) and m.get("role") == "user" for m in messages):
        return True
    answer = answer_message(call)
    if answer is None:
        return True
    if any(not isinstance(args, dict) for _, args in message_calls(answer)):
        return True  # a call whose arguments are no JSON object would teach a broken call
    return not content_text(answer.get("content")).strip() and not answer.get("tool_calls")


def _finish_reason(call: Call) -> str | None:
    if call.finish_reason:
        return call.finish_reason
    choices = (call.response or {}).get("choices") or [{}]
    return choices[0].get("finish_reason") if isinstance(choices[0], dict) else None


def _truncated(call: Call, ctx: FilterContext) -> bool:
    return _finish_reason(call) == "length"


def is_flagged(call: Call, scores: Iterable[Score]) -> bool:
    """Negative feedback or a hallucination flag, from scores or the call's metadata."""
    meta = call.metadata if isinstance(call.metadata, dict) else {}
    if meta.get("flagged") or meta.get("hallucination"):
        return True
    for s in scores:
        label = (s.label or "").strip().lower()
        if label in NEGATIVE_LABELS or (s.value is not None and s.value < 0):
            return True
        if s.name.lower() in HALLUCINATION_NAMES and (
            (s.value is not None and s.value > 0) or label in TRUTHY_LABELS
        ):
            return True
    return False


def _flagged(call: Call, ctx: FilterContext) -> bool:
    return is_flagged(call, ctx.scores.get(call.id, ()))


def _invalid_schema(call: Call, ctx: FilterContext) -> bool:
    from ..answers import breaks_schema

    return breaks_schema(answer_message(call), ctx.task.response_schema)


def estimate_tokens(call: Call) -> int:
    """Recorded usage when the call has it, else about four characters per token."""
    if call.input_tokens is not None and call.output_tokens is not None:
        return call.input_tokens + call.output_tokens
    text = orjson.dumps(call.request.get("messages", [])) + orjson.dumps(answer_message(call))
    return len(text) // 4 + 1


def _too_long(call: Call, ctx: FilterContext) -> bool:
    limit = ctx.task.curate.max_tokens
    return limit is not None and estimate_tokens(call) > limit


FILTERS: tuple[tuple[str, Callable[[Call, FilterContext], bool]], ...] = (
    ("not_teacher", _not_teacher),
    ("error", _error),
    ("incomplete", _incomplete),
    ("truncated", _truncated),
    ("flagged", _flagged),
    ("invalid_schema", _invalid_schema),
    ("too_long", _too_long),
)
assert tuple(name for name, _ in FILTERS) == FILTER_NAMES


def rejection(call: Call, ctx: FilterContext) -> str | None:
    """The name of the first filter the call fails, or None when it may be trained on."""
    for name, fails in FILTERS:
        if fails(call, ctx):
            return name
    return None


@dataclass(frozen=True, slots=True)
class FilterResult:
    kept: tuple[Call, ...]
    removed: dict[str, int]  # every filter name, zero included


def apply_filters(
    calls: Iterable[Call], task: TaskConfig, scores: Mapping[str, Sequence[Score]] | None = None
) -> FilterResult:
    ctx = FilterContext(task=task, scores=scores or {})
    removed = dict.fromkeys(FILTER_NAMES, 0)
    kept = []
    for call in calls:
        reason = rejection(call, ctx)
        if reason is None:
            kept.append(call)
        else:
            removed[reason] += 1
    return FilterResult(kept=tuple(kept), removed=removed)


def describe(task: TaskConfig) -> dict[str, Any]:
    """The filter configuration recorded with a snapshot."""
    return {
        "filters": list(FILTER_NAMES),
        "max_tokens": task.curate.max_tokens,
        "response_schema": task.response_schema,
    }
