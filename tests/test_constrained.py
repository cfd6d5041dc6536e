"""Constrained decoding for real: a tiny Llama with random weights (unconstrained, it speaks
nonsense) made to answer in a JSON Schema token by token, served by `serve-model`'s app on
loopback and reached with the official openai SDK.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from stillhouse.engine.runtime import Engine
from stillhouse.engine.sequence import SamplingParams
from stillhouse.engine.server import create_model_app

from .upstream import ServerThread

pytest.importorskip("xgrammar")

MODEL = "tiny"
INTENTS = ["refund", "password_reset", "card_stolen", "opening_hours", "delivery_late"]
PRIORITIES = ["high", "medium", "low"]
SCHEMA = {
    "type": "object",
    "properties": {"intent": {"enum": INTENTS}, "priority": {"enum": PRIORITIES}},
    "required": ["intent", "priority"],
}
TRIAGE = [{"role": "user", "content": "I lost my card, please help"}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    import torch

    from stillhouse.engine.tiny import save_tiny_model

    torch.set_num_threads(1)  # the machine is shared: one thread degrades gracefully
    directory = save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    eng = Engine.load(str(directory), name=MODEL, max_batch=8, gather_ms=50)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def client(engine: Engine) -> Iterator[openai.OpenAI]:
    server = ServerThread(create_model_app(engine)).start()
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    server.stop()


def schema_format(schema: dict[str, object]) -> dict[str, object]:
    return {"type": "json_schema", "json_schema": {"name": "triage", "schema": schema}}


def test_an_enum_label_cannot_be_invented(engine: Engine) -> None:
    """Greedy and sampled at several temperatures and seeds, every constrained answer parses
    and names a label from the enum; the same model unconstrained does not."""
    free = engine.generate(TRIAGE, SamplingParams(max_tokens=24))
    with pytest.raises(ValueError):
        json.loads(free.text)  # random weights: without the grammar, no JSON at all

    schema = json.dumps(SCHEMA)
    settings = [SamplingParams(max_tokens=80, json_schema=schema)]
    settings += [
        SamplingParams(max_tokens=80, temperature=t, seed=seed, json_schema=schema)
        for t in (0.7, 1.0, 2.0)
        for seed in range(8)
    ]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: engine.generate(TRIAGE, p), settings))
    for answer in answers:
        assert answer.finish_reason == "stop", answer.text
        parsed = json.loads(answer.text)
        assert set(parsed) == {"intent", "priority"}, answer.text
        assert parsed["intent"] in INTENTS and parsed["priority"] in PRIORITIES
    # sampling explored the enum, so the test would see an invented label if one could appear
    assert len({json.loads(a.text)["intent"] for a in answers}) >= 3


def test_the_schemas_property_order_is_the_answers(engine: Engine) -> None:
    """The grammar keeps the fields in the schema's order, the order the teacher answered in
    and the student was trained on (a schema written as text with sorted keys once forced
    `amount` before `order_id` on a student trained the other way, and it lost the thread)."""
    from stillhouse.engine.grammar import response_schema

    unsorted = {
        "type": "object",
        "properties": {"priority": {"enum": PRIORITIES}, "intent": {"enum": INTENTS}},
        "required": ["priority", "intent"],
    }
    text = response_schema(schema_format(unsorted))
    assert text is not None and text.index('"priority"') < text.index('"intent"')
    answer = engine.generate(TRIAGE, SamplingParams(max_tokens=80, json_schema=text))
    assert list(json.loads(answer.text)) == ["priority", "intent"], answer.text


def test_json_object_mode_answers_a_json_object(client: openai.OpenAI) -> None:
    for temperature in (0.0, 1.0):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=TRIAGE,
            max_tokens=60,
            temperature=temperature,
            seed=3,
            response_format={"type": "json_object"},
        )
        choice = reply.choices[0]
        if choice.finish_reason == "stop":  # `length` may cut an object the model keeps open
            assert isinstance(json.loads(choice.message.content or ""), dict)
        else:
            assert (choice.message.content or "").lstrip().startswith("{")


def test_a_schema_through_the_sdk_parses_and_streams_alike(client: openai.OpenAI) -> None:
    asked = {
        "model": MODEL,
        "messages": TRIAGE,
        "max_tokens": 80,
        "response_format": schema_format(SCHEMA),
    }
    reply = client.chat.completions.create(**asked)  # type: ignore[call-overload]
    text = reply.choices[0].message.content or ""
    assert json.loads(text)["intent"] in INTENTS
    assert reply.model_extra is not None
    assert reply.model_extra["stillhouse"]["confidence"]["json_fields"]["intent"] < 0
    chunks = client.chat.completions.create(**asked, stream=True)  # type: ignore[call-overload]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text


def test_logprobs_are_the_models_own_not_the_masked_ones(client: openai.OpenAI) -> None:
    """The first token is forced to `{`; its reported logprob and alternatives are what the
    model gave them unconstrained, so the confidence still reflects the model."""
    asked = {"model": MODEL, "messages": TRIAGE, "max_tokens": 30, "logprobs": True}
    free = client.chat.completions.create(**asked, top_logprobs=3)  # type: ignore[call-overload]
    forced = client.chat.completions.create(  # type: ignore[call-overload]
        **asked, top_logprobs=3, response_format=schema_format(SCHEMA)
    )
    assert free.choices[0].logprobs and forced.choices[0].logprobs
    first_free = free.choices[0].logprobs.content[0]  # type: ignore[index]
    first_forced = forced.choices[0].logprobs.content[0]  # type: ignore[index]
    assert first_forced.token == "{" and first_free.token != "{"
    top = [(t.token, round(t.logprob, 4)) for t in first_forced.top_logprobs]
    assert top == [(t.token, round(t.logprob, 4)) for t in first_free.top_logprobs]
    assert first_forced.logprob < first_free.logprob  # masked, `{` would have had ~all the mass


@pytest.mark.parametrize(
    ("response_format", "reason"),
    [
        (schema_format({"type": "nonsense"}), "Unsupported type"),
        (schema_format({"type": "string", "pattern": "(("}), "parenthesis"),
        (schema_format({"$ref": "#/definitions/missing"}), "missing"),
        ({"type": "yaml"}, "not supported"),
        ({"type": "json_schema", "json_schema": {"schema": "not an object"}}, "JSON Schema"),
    ],
)
def test_a_schema_the_compiler_refuses_is_a_400_naming_the_reason(
    client: openai.OpenAI, response_format: dict[str, object], reason: str
) -> None:
    for stream in (False, True):  # a stream's errors come before it starts, as a status
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(  # type: ignore[call-overload]
                model=MODEL,
                messages=TRIAGE,
                max_tokens=5,
                response_format=response_format,
                stream=stream,
                timeout=30,
            )
        assert caught.value.status_code == 400
        body = caught.value.body
        assert isinstance(body, dict) and body["param"] == "response_format", body
        assert reason in body["message"], body["message"]


def test_rows_with_and_without_a_grammar_share_a_batch(engine: Engine) -> None:
    """In one batch, constrained rows answer in the schema and free rows answer exactly what
    they answer alone."""
    schema = json.dumps(SCHEMA)
    asks = [
        ([{"role": "user", "content": f"ticket {n}: my parcel is late"}], n % 2 == 0)
        for n in range(6)
    ]

    def ask(item: tuple[list[dict[str, str]], bool]) -> object:
        messages, constrained = item
        return engine.generate(
            messages, SamplingParams(max_tokens=80, json_schema=schema if constrained else None)
        )

    before = sum(n for size, n in engine.stats.batch_sizes.items() if size > 1)
    with ThreadPoolExecutor(len(asks)) as pool:
        together = list(pool.map(ask, asks))
    assert sum(n for size, n in engine.stats.batch_sizes.items() if size > 1) > before
    for (messages, constrained), answer in zip(asks, together, strict=True):
        if constrained:
            assert json.loads(answer.text)["priority"] in PRIORITIES  # type: ignore[attr-defined]
        else:
            alone = engine.generate(messages, SamplingParams(max_tokens=80))
            assert answer.text == alone.text  # type: ignore[attr-defined]
