"""The demo's built-in tasks: each generator is seeded and varied, every perfect answer satisfies
the task's schema (and, for extraction, copies what the message says), `--task` writes a config
under the cost tier with no gate key of its own, and triage by default is what it always was.
The real teacher's extraction is measured in docs/benchmarks.md; a whole `demo --task extract`
with tiny models is not run here (a tiny base must first learn to copy: minutes, not seconds)."""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from stillhouse.answers import agree, schema_errors
from stillhouse.cli import main
from stillhouse.config import load_config
from stillhouse.demo import extract
from stillhouse.demo.setup import FAST, FULL, prepare
from stillhouse.demo.tasks import EXTRACT, TASKS, TRIAGE
from stillhouse.demo.tickets import Tickets, label


def test_both_tasks_are_registered_and_triage_is_the_default() -> None:
    assert set(TASKS) == {"triage", "extract"}
    assert TASKS["triage"] is TRIAGE and TASKS["extract"] is EXTRACT


@pytest.mark.parametrize("task", [TRIAGE, EXTRACT], ids=lambda t: t.name)
def test_the_generator_is_seeded_and_every_perfect_answer_fits_the_schema(task) -> None:  # type: ignore[no-untyped-def]
    n = len(task.labels)
    first = task.examples(7, n).next()
    a = task.examples(7, n)
    b = task.examples(7, n)
    run_a = [a.next() for _ in range(200)]
    run_b = [b.next() for _ in range(200)]
    assert run_a == run_b and run_a[0] == first  # the same seed, the same traffic
    other = task.examples(8, n)
    assert [other.next() for _ in range(200)] != run_a
    # round robin over the labels, every one used
    counts = Counter(e.intent for e in run_a)
    assert set(counts) == set(task.labels) and max(counts.values()) - min(counts.values()) <= 1
    schema = task.schema(n)
    for e in run_a:
        assert schema_errors(e.answer, schema) is None, e.answer
        assert e.messages[0]["role"] == "system" and e.messages[-1]["role"] == "user"
    assert len({e.messages[-1]["content"] for e in run_a}) > 150  # varied, not a few strings


def test_triage_by_default_is_the_tickets_it_always_sent() -> None:
    gen = Tickets(3, 8)
    examples = TRIAGE.examples(3, 8)
    for _ in range(50):
        intent, messages = gen.next()
        e = examples.next()
        assert (e.intent, e.messages, e.answer) == (intent, messages, label(intent))


def test_extraction_copies_what_the_message_says_and_leaves_the_rest_null() -> None:
    examples = EXTRACT.examples(0)
    absent: Counter[str] = Counter()
    values: dict[str, set[object]] = {k: set() for k in extract.FIELDS}
    for _ in range(400):
        e = examples.next()
        text = e.messages[-1]["content"]
        fields = json.loads(e.answer)
        assert list(fields) == list(extract.FIELDS)
        for key, value in fields.items():
            values[key].add(value)
            if value is None:
                absent[key] += 1
        if fields["order_id"] is not None:
            assert re.search(rf"\b{fields['order_id']}\b", text)
        if fields["date"] is not None:
            assert fields["date"] in text
        if fields["amount"] is not None:
            number = rf"{int(fields['amount'])}(\.{round(fields['amount'] % 1 * 100):02d})?"
            currency = fields["currency"]
            assert re.search(rf"({currency} {number}|{number} {currency})\b", text), text
        else:
            assert fields["currency"] is None
            assert not any(c in text for c in extract.CURRENCIES), text
        # the templates never name a field they leave out: no bare "order" without its number
        if fields["order_id"] is None:
            assert "order" not in text.lower(), text
    # every field is sometimes missing and takes many values when present
    assert all(absent[k] >= 20 for k in extract.FIELDS), absent
    assert all(absent[k] <= 200 for k in extract.FIELDS), absent
    assert len(values["order_id"]) > 300 and len(values["date"]) > 150
    assert values["currency"] == {*extract.CURRENCIES, None}
    # the metric compares fields, not spelling: 42.50 and 42.5 agree, a wrong field does not
    assert agree("json", '{"amount": 42.5, "date": null}', '{"date": null, "amount": 42.50}')
    assert not agree("json", '{"amount": 42.5, "date": null}', '{"amount": 42.5, "date": "x"}')


def test_extract_schema_rejects_invented_shapes() -> None:
    schema = extract.schema()
    good = {"order_id": "48213", "amount": 42.5, "currency": "EUR", "date": "2026-03-14"}
    assert schema_errors(json.dumps(good), schema) is None
    for bad in (
        {**good, "currency": "euro"},
        {**good, "date": "14 March"},
        {**good, "amount": "42.50"},
        {**good, "order_id": "#48213"},
        {**good, "note": "extra"},
        {k: v for k, v in good.items() if k != "date"},
    ):
        assert schema_errors(json.dumps(bad), schema) is not None, bad


@pytest.mark.parametrize("profile", [FAST, FULL], ids=lambda p: p.name)
def test_extract_writes_a_cost_tier_config_with_no_gate_key(tmp_path: Path, profile) -> None:  # type: ignore[no-untyped-def]
    path = prepare(tmp_path / "demo", profile, task=EXTRACT)
    raw = tomllib.loads(path.read_text())
    table = raw["tasks"]["extract"]
    assert set(raw["tasks"]) == {"extract"}
    assert table["tier"] == "cost" and "gate" not in table
    assert "max_latency_ratio" not in table["rollout"]
    task = load_config(path).tasks["extract"]
    assert task.response_schema == extract.schema()  # the null alternative survives TOML
    assert task.gate.metric == "json"  # a schema makes the metric json, unasked
    sources = {k: v["source"] for k, v in task.settings().items()}
    assert not [k for k, s in sources.items() if s == "toml"], sources
    # the kinds a profile asks for are capped at the task's, and grace waits for all of them
    assert task.grace.min_unique_intents == min(profile.intents, len(EXTRACT.labels))
    assert task.train.max_length == EXTRACT.max_length


def test_triage_config_is_unchanged_by_default(tmp_path: Path) -> None:
    raw = tomllib.loads(prepare(tmp_path / "demo", FAST).read_text())
    table = raw["tasks"]["triage"]
    assert table["tier"] == "cost" and "gate" not in table
    assert table["train"]["max_length"] == 256
    assert table["response_schema"]["properties"]["intent"]["enum"] == list(TRIAGE.labels[:8])


def test_an_unknown_task_is_a_usage_error(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    result = CliRunner().invoke(main, ["demo", "--task", "nope", "--dir", str(folder)])
    assert result.exit_code == 2
    assert "'nope' is not one of" in result.output and "extract" in result.output
    result = CliRunner().invoke(main, ["demo", "--task", "extract", "--intents", "12"])
    assert result.exit_code == 2 and "the extract task has 8" in result.output
    assert not folder.exists()


def test_the_extract_schema_constrains_a_local_model(tmp_path: Path) -> None:
    """Served constrained (the student, at evaluation and in serving), even random weights
    answer the extract schema: the engine's grammar compiles its patterns and its anyOf."""
    import torch

    from stillhouse.engine.runtime import Engine
    from stillhouse.engine.sequence import SamplingParams
    from stillhouse.engine.tiny import save_tiny_model

    torch.set_num_threads(1)
    engine = Engine.load(str(save_tiny_model(tmp_path / "model")), name="tiny")
    try:
        # the message alone: the tiny model's context (512 byte-level tokens) has no room for
        # the task's system prompt
        messages = EXTRACT.examples(0).next().messages[-1:]
        schema = json.dumps(extract.schema())
        finished = 0
        for seed in range(6):
            params = SamplingParams(max_tokens=160, temperature=1.0, seed=seed, json_schema=schema)
            answer = engine.generate(messages, params)
            if answer.finish_reason == "stop":  # random weights may write digits till the end
                finished += 1
                assert schema_errors(answer.text, extract.schema()) is None, answer.text
        assert finished >= 2
    finally:
        engine.close()
