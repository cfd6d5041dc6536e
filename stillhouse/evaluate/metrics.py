"""Offline scoring of a holdout: each example's 0/1 agreement (the answers kernel's `agree`, so
validation measures what live gates measure) with the detail a report shows (a json answer's share
of matching fields, a cosine), the judge (the teacher grades), and hallucination against a
reference. Nothing here calls a model except `judge`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..answers import (
    Metric,
    agree,
    agreements,
    flatten,
    normalise,
    parse_json,
    similarity_method,
    tool_calls_agree,
)


@dataclass(frozen=True, slots=True)
class Scored:
    """One example's verdict: agree (0/1, from `answers.agree`) and, for json, the share of the
    teacher's fields the student matched; `detail` says why (a parse error, a cosine, the judge's
    words)."""

    agree: float
    fields: float | None = None
    detail: str = ""


def json_fields(student: str, teacher: str) -> Scored:
    """`answers.agree` under json, with partial credit: `fields` is the share of the union of
    fields that match (reported, never gated)."""
    verdict = float(agree("json", teacher, student))
    ok_t, value_t = parse_json(teacher)
    if not ok_t:  # the teacher did not answer JSON: compared as text, no fields to count
        return Scored(verdict)
    ok_s, value_s = parse_json(student)
    if not ok_s:
        return Scored(verdict, 0.0, "not JSON")
    a, b = flatten(value_s), flatten(value_t)
    keys = set(a) | set(b)
    same = sum(1 for k in keys if k in a and k in b and a[k] == b[k])
    return Scored(verdict, same / len(keys) if keys else 1.0)


def similarity(students: Sequence[str], teachers: Sequence[str]) -> tuple[list[Scored], str]:
    """`answers.agreements` under similarity, with each cosine in the detail."""
    verdicts, values = agreements("similarity", teachers, students)
    out = [
        Scored(float(v), None, "identical" if c is None else f"cosine {c:.3f}")
        for v, c in zip(verdicts, values, strict=True)
    ]
    return out, similarity_method()


JUDGE_RUBRIC = (
    "You grade a candidate answer against a reference answer to the same request. "
    "Reply with one JSON object and nothing else: "
    '{"verdict": "agree"} when the candidate says the same thing as the reference '
    "(same facts, same decision, same format; wording may differ), or "
    '{"verdict": "disagree", "why": "..."} when it contradicts, omits or adds facts.'
)


def judge_messages(request: str, student: str, teacher: str) -> list[dict[str, str]]:
    user = f"Request:\n{request}\n\nReference answer:\n{teacher}\n\nCandidate answer:\n{student}"
    return [{"role": "system", "content": JUDGE_RUBRIC}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> Scored:
    """The judge's reply as a score; anything unreadable counts as disagreement (a judge that
    cannot follow the rubric must not let a student through)."""
    ok, value = parse_json(text)
    if ok and isinstance(value, dict) and isinstance(value.get("verdict"), str):
        verdict = value["verdict"].strip().lower()
        return Scored(float(verdict == "agree"), None, str(value.get("why") or verdict))
    words = normalise(text)
    if words.startswith(("agree", "yes")):
        return Scored(1.0, None, words[:80])
    return Scored(0.0, None, f"unreadable verdict: {text[:80]!r}")


async def judge(
    complete: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]],
    requests: Sequence[str],
    students: Sequence[str],
    teachers: Sequence[str],
) -> list[Scored]:
    """The teacher grades each student answer against its own, through `complete` (a provider's
    chat completion), one call per example, greedy."""
    out = []
    for request, student, teacher in zip(requests, students, teachers, strict=True):
        calls = tool_calls_agree(teacher, student)
        if calls is not None:  # a tool call is graded as one: no judge needed to compare calls
            out.append(Scored(float(calls), None, "tool call"))
            continue
        if normalise(student) == normalise(teacher):
            out.append(Scored(1.0, None, "identical"))  # no call needed to grade a copy
            continue
        body = {
            "messages": judge_messages(request, student, teacher),
            "temperature": 0,
            "max_tokens": 200,
        }
        reply = await complete(body)
        text = ((reply.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
        out.append(parse_verdict(text))
    return out


def score(metric: Metric, students: Sequence[str], teachers: Sequence[str]) -> list[Scored]:
    """Scores for the metrics that need no model call (exact, json, similarity, tool_call)."""
    if metric in ("exact", "tool_call"):
        return [Scored(float(agree(metric, t, s))) for s, t in zip(students, teachers, strict=True)]
    if metric == "json":
        return [json_fields(s, t) for s, t in zip(students, teachers, strict=True)]
    if metric == "similarity":
        return similarity(students, teachers)[0]
    raise ValueError("the judge metric needs the teacher: use metrics.judge")
