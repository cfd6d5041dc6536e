"""How well a student's answer agrees with the teacher's on one request, in [0, 1].

Used by the gateway's shadow comparisons (in the background, never on the user's path) and by
the drift monitor. The metric is the task's `gate.metric`; `judge` has no cheap online form and
is scored as `similarity` here.
"""

from __future__ import annotations

import difflib
from typing import Any

import orjson


def first_message(response: dict[str, Any] | None) -> dict[str, Any]:
    """The first choice's message ({} when there is none)."""
    choices = (response or {}).get("choices") or []
    return (choices[0].get("message") or {}) if choices else {}


def answer_text(response: dict[str, Any] | None) -> str:
    """The first choice's text (tool calls as their JSON), '' when there is none."""
    message = first_message(response)
    content = message.get("content")
    if message.get("tool_calls"):
        calls = [
            (c.get("function") or {}).get("name", "")
            + (c.get("function") or {}).get("arguments", "")
            for c in message["tool_calls"]
        ]
        content = (content or "") + "".join(calls)
    return content if isinstance(content, str) else ""


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def agreement(metric: str, student: str, teacher: str) -> float:
    """exact: 1 when the stripped texts are equal; json: 1 when both parse to equal values (else
    exact); similarity/judge: difflib's ratio of the two texts."""
    if metric == "json":
        a, b = _json(student), _json(teacher)
        if a is not None or b is not None:
            return float(a == b)
    if metric in ("similarity", "judge"):
        return difflib.SequenceMatcher(None, student, teacher, autojunk=False).ratio()
    return float(student.strip() == teacher.strip())
