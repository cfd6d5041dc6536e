"""Confidence from token logprobs: pure functions, checked against hand-computed values."""

from __future__ import annotations

import json
import math

import pytest

from stillhouse.answers import token_confidence
from stillhouse.engine.confidence import confidence, json_field_confidence, value_spans
from stillhouse.stats import percentile


def test_the_one_percentile_matches_numpy_linear_interpolation() -> None:
    values = [-3.0, -0.1, -0.2, -1.0, -0.05]
    # numpy.percentile(values, 10) == -2.2 (sorted: -3, -1, -0.2, -0.1, -0.05; pos 0.4)
    assert percentile(values, 10) == pytest.approx(-2.2)
    assert percentile(values, 0) == -3.0 and percentile(values, 100) == -0.05
    assert percentile([-0.5], 10) == -0.5
    assert percentile([], 10) is None


def test_token_confidence_min_mean_p10() -> None:
    c = token_confidence([-0.1, -0.1, -2.0, -0.1])
    assert c["min"] == -2.0
    assert c["mean"] == pytest.approx(-0.575)
    assert c["min"] <= c["p10"] <= c["mean"]
    assert token_confidence([]) == {"min": None, "mean": None, "p10": None}


def test_value_spans_name_every_scalar_value_and_skip_keys() -> None:
    text = '{"intent": "card_lost", "n": 42, "ok": true, "items": [{"sku": "a\\"b"}, null]}'
    spans = value_spans(text)
    assert [p for p, _, _ in spans] == ["intent", "n", "ok", "items[0].sku", "items[1]"]
    assert [text[s:e] for _, s, e in spans] == ['"card_lost"', "42", "true", '"a\\"b"', "null"]


def _tokens(pieces: list[str]) -> list[int]:
    ends, total = [], 0
    for piece in pieces:
        total += len(piece)
        ends.append(total)
    return ends


def test_json_fields_take_the_lowest_logprob_of_their_value_tokens() -> None:
    pieces = ['{"', "intent", '":', ' "', "card", "_lost", '",', ' "urgency', '":', ' "high', '"}']
    logprobs = [-0.01, -0.02, -0.01, -0.3, -0.05, -1.5, -0.02, -0.9, -0.01, -0.4, -0.02]
    text = "".join(pieces)
    json.loads(text)
    fields = json_field_confidence(text, _tokens(pieces), logprobs)
    # `intent`'s value spans ' "', card, _lost, '",' ; the key tokens (-0.9) do not count
    assert fields == {"intent": -1.5, "urgency": pytest.approx(-0.4)}
    full = confidence(text, _tokens(pieces), logprobs)
    assert full["json_fields_min"] == -1.5 and full["min"] == -1.5
    assert full["json_fields"] == fields


def test_fenced_json_is_read_and_prose_is_not_json() -> None:
    text = '```json\n{"a": 1}\n```'
    ends = _tokens(["```json\n", '{"a": ', "1", "}\n```"])
    assert json_field_confidence(text, ends, [-0.1, -0.2, -0.7, -0.1]) == {"a": -0.7}
    prose = "The answer is {not json}."
    assert json_field_confidence(prose, [len(prose)], [-0.1]) is None
    out = confidence(prose, [len(prose)], [-0.1])
    assert out["json_fields_min"] is None and "json_fields" not in out
    assert math.isclose(out["p10"], -0.1)
