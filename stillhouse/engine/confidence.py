"""The local engine's `stillhouse.confidence` object: the answers kernel's token confidence plus
each JSON field value's lowest token logprob (which needs the tokens' offsets in the text).

Pure functions over floats and strings (no torch). A low quantile, not the mean, is the number to
route on (answers.token_confidence): the mean is length-biased.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..answers import token_confidence


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _string_end(text: str, i: int) -> int:
    """Index just past the JSON string starting with the quote at `i`."""
    i += 1
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            return i + 1
        i += 1
    raise ValueError("unterminated string")


def value_spans(text: str) -> list[tuple[str, int, int]]:
    """(path, start, end) of every scalar value in a JSON document, keys excluded.

    Paths read like `intent`, `items[0].sku`. The text must already be valid JSON: this walks
    it only to find where each value sits, which `json.loads` does not say.
    """
    spans: list[tuple[str, int, int]] = []

    def walk(i: int, path: str) -> int:
        i = _skip_ws(text, i)
        ch = text[i]
        if ch == "{":
            i = _skip_ws(text, i + 1)
            if text[i] == "}":
                return i + 1
            while True:
                key_end = _string_end(text, i)
                key = json.loads(text[i:key_end])
                i = _skip_ws(text, key_end) + 1  # past ':'
                i = _skip_ws(text, walk(i, f"{path}.{key}" if path else key))
                if text[i] == "}":
                    return i + 1
                i = _skip_ws(text, i + 1)  # past ','
        if ch == "[":
            i = _skip_ws(text, i + 1)
            if text[i] == "]":
                return i + 1
            n = 0
            while True:
                i = _skip_ws(text, walk(i, f"{path}[{n}]"))
                n += 1
                if text[i] == "]":
                    return i + 1
                i = _skip_ws(text, i + 1)
        if ch == '"':
            end = _string_end(text, i)
        else:
            end = i
            while end < len(text) and text[end] not in ",]} \t\r\n":
                end += 1
        spans.append((path, i, end))
        return end

    walk(0, "")
    return spans


def _json_body(text: str) -> tuple[int, str] | None:
    """(offset, JSON text) for an answer that is a JSON object or array, possibly fenced."""
    stripped = text.strip()
    for opener, closer in (("{", "}"), ("[", "]")):
        start, end = text.find(opener), text.rfind(closer)
        if start == -1 or end < start:
            continue
        body = text[start : end + 1]
        # Only text around the document that is whitespace or a code fence is tolerated.
        outside = (text[:start] + text[end + 1 :]).replace("```json", "").replace("```", "")
        if outside.strip() and body != stripped:
            continue
        try:
            json.loads(body)
        except ValueError:
            continue
        return start, body
    return None


def json_field_confidence(
    text: str, token_ends: Sequence[int], logprobs: Sequence[float]
) -> dict[str, float] | None:
    """Each JSON field value's lowest token logprob, or None when `text` is not JSON.

    `token_ends[k]` is where token k's text ends in `text` (token k spans
    token_ends[k-1]..token_ends[k]); a token belongs to a value when their spans overlap.
    """
    found = _json_body(text)
    if found is None:
        return None
    offset, body = found
    fields: dict[str, float] = {}
    for path, start, end in value_spans(body):
        start, end = start + offset, end + offset
        worst: float | None = None
        begin = 0
        for tok_end, lp in zip(token_ends, logprobs, strict=True):
            if begin < end and tok_end > start:
                worst = lp if worst is None else min(worst, lp)
            begin = tok_end
        if worst is not None:
            fields[path or "$"] = worst
    return fields


def confidence(text: str, token_ends: Sequence[int], logprobs: Sequence[float]) -> dict[str, Any]:
    """The `stillhouse.confidence` object of a response: min, mean, p10, json_fields_min."""
    out: dict[str, Any] = token_confidence(logprobs)
    fields = json_field_confidence(text, token_ends, logprobs)
    out["json_fields_min"] = min(fields.values()) if fields else None
    if fields:
        out["json_fields"] = fields
    return out
