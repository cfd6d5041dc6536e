"""Tool calls distilled end to end: a teacher on loopback that calls `get_weather(city)` is
captured through the gateway (the official openai SDK, `tools=[...]`), curated into rows that
keep the tools, the calls and the tool results, trained on as Hermes `<tool_call>` blocks by the
tiny Llama of tests/models.py, gated on the holdout with the `tool_call` agreement, and served
back through the gateway as OpenAI `tool_calls`, whole and streamed; shadows and the confidence
fallback work on tool-call answers; and what is refused: arguments that are not JSON.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from stillhouse.answers import agree, answer_text, canonical, format_ok
from stillhouse.config import Config, parse_config
from stillhouse.gateway import create_app
from stillhouse.routing import RoutingTable, TaskRoute
from stillhouse.store import open_store
from stillhouse.toolcalls import ToolCall, ToolCallSplitter, chat_messages, split

from .models import fast_settings, register_tiny_candidate
from .upstream import ServerThread, UpstreamBehaviour, message_text, running_upstream

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city",
        "strict": True,  # the SDK's stream helper parses the arguments of strict tools only
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CITIES = ["Paris", "Berlin", "Tokyo"]
ASKS = [
    "what is the weather in {c}?",
    "is it raining in {c} today",
    "weather for {c} please",
    "how warm is it in {c}",
]
GREETINGS = ["hi", "hello", "hey", "good morning"]
SKY = {"Paris": "sunny", "Berlin": "rainy", "Tokyo": "cloudy"}


def city_in(text: str) -> str:
    return next(c for c in CITIES if c in text)


def teacher_call(body: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The teacher calls get_weather for the city asked about; once the tool has answered
    (the last message is its result), it answers in words instead (`teacher_reply`)."""
    if body["messages"][-1]["role"] == "tool":
        return None
    users = [m for m in body["messages"] if m["role"] == "user"]
    return "get_weather", {"city": city_in(message_text(users[-1]))}


def teacher_reply(body: dict[str, Any]) -> str:
    last = body["messages"][-1]
    return f"It is {message_text(last)} there." if last["role"] == "tool" else "ok"


def question(rng: random.Random, city: str) -> str:
    return f"{rng.choice(GREETINGS)}, {rng.choice(ASKS).format(c=city)} {rng.randint(1, 999)}"


def config_for(folder: Path, teacher_url: str, **models: Any) -> Config:
    """The loopback teacher; dedupe and grouping off (the questions differ by a number: the
    tiny student learns the closed set of cities, as tests/test_lifecycle_e2e.py explains)."""
    task: dict[str, Any] = {
        "teacher": "teacher",
        "curate": {
            "dedupe_threshold": 1.0,
            "group_similarity": 1.0,
            "holdout": 0.2,
            "intents": "metadata",
        },
        "gate": {"metric": "exact", "agreement": 0.7, "kept_agreement": 0.8},
        "routing": {"shadow_rate": 1.0},
    }
    if models:
        task["student"] = "student"
    return parse_config(
        {
            "store": {"url": f"sqlite:///{folder / 'calls.db'}"},
            "models": {
                "teacher": {
                    "provider": "openai-compatible",
                    "base_url": teacher_url,
                    "model": "big",
                    "max_retries": 0,
                },
                **models,
            },
            "tasks": {"support": task},
        },
        folder,
    )


def client_of(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


@dataclass
class Weather:
    """The task captured, curated and trained on, once for the module."""

    folder: Path
    teacher_url: str
    teacher: UpstreamBehaviour
    config: Config
    dataset_id: str
    adapter: Path
    base: Path

    def asked(self, city: str) -> list[dict[str, Any]]:
        """A question about `city` the student was trained on (the holdout measures how it does
        on new ones: this tiny student gets about nine in ten of those right)."""
        with open_store(self.config.store.url) as store:
            rows = [e.example for e in store.dataset_examples(self.dataset_id, "train")]
        return next(
            r["messages"][:1]
            for r in rows
            if len(r["messages"]) == 2 and city in r["messages"][0]["content"]
        )

    def serve(self, threshold: float) -> tuple[Any, ServerThread, Config]:
        """The gateway with the trained student serving every session in auto mode; a student
        answer whose confidence is under `threshold` falls back on the teacher."""
        student = {"provider": "local", "model": str(self.base), "adapter": str(self.adapter)}
        folder = self.folder / f"serve-{time.monotonic_ns()}"
        folder.mkdir()
        config = config_for(folder, self.teacher_url, student=student)
        table = RoutingTable(
            {"support": TaskRoute(state="serving", share=1.0, threshold=threshold)}
        )
        app = create_app(config, routing=table)
        return app, ServerThread(app).start(), config


@pytest.fixture(scope="module")
def weather(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Weather]:
    from stillhouse.curate.pipeline import curate
    from stillhouse.engine.tiny import save_tiny_model
    from stillhouse.train.lora import train

    folder = tmp_path_factory.mktemp("weather")
    # tests/models.py's tiny base with room for the tools prompt, a call and its result (the
    # byte-level tokenizer spends ~440 tokens on the prompt alone; that base has 512)
    tiny_base = save_tiny_model(folder / "base", max_positions=1024)
    behaviour = UpstreamBehaviour(reply=teacher_reply, tool_call=teacher_call)
    with running_upstream(behaviour) as (teacher_url, _):
        config = config_for(folder, teacher_url)
        app = create_app(config)
        server = ServerThread(app).start()
        client, rng = client_of(server), random.Random(5)
        try:
            for i in range(150):
                city = CITIES[i % len(CITIES)]
                messages: list[Any] = [{"role": "user", "content": question(rng, city)}]
                first = client.chat.completions.create(
                    model="support", messages=messages, tools=[WEATHER], metadata={"intent": city}
                )
                if i % 11 == 0:  # the app runs the tool and sends its result back
                    (call,) = first.choices[0].message.tool_calls
                    messages += [
                        first.choices[0].message.model_dump(exclude_none=True),
                        {"role": "tool", "tool_call_id": call.id, "content": SKY[city]},
                    ]
                    client.chat.completions.create(
                        model="support",
                        messages=messages,
                        tools=[WEATHER],
                        metadata={"intent": city},
                    )
            assert app.state.writer.flush(10)
        finally:
            server.stop()
        with open_store(config.store.url) as store:
            dataset = curate(store, config, "support").dataset
            rows = [e.example for e in store.dataset_examples(dataset.id, "train")]
            held = [e.example for e in store.dataset_examples(dataset.id, "holdout")]
        # copying the city from the question into the call's arguments takes the random tiny
        # base more than a label does: a larger step and more epochs (~20 s; 30/30 right when
        # tried, where the intent task's settings got 18-24)
        settings = fast_settings(tiny_base, epochs=12, learning_rate=1e-2)
        result = train(settings, rows, held, folder / "run", progress=False)
        assert result.validation_loss < result.initial_validation_loss / 10
        yield Weather(
            folder, teacher_url, behaviour, config, dataset.id, result.adapter_dir, tiny_base
        )


# -- one rendering, one parser ------------------------------------------------------------------
CONVERSATION = [
    {"role": "system", "content": "You answer about the weather."},
    {"role": "user", "content": "Weather in Paris and Tokyo?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_b",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Tokyo"}'},
            },
        ],
    },
    {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
    {"role": "tool", "tool_call_id": "call_b", "content": "cloudy"},
    {"role": "assistant", "content": "Sunny in Paris, cloudy in Tokyo."},
]


def test_tools_calls_and_results_render_as_qwen25s_hermes_blocks() -> None:
    """What Qwen2.5's own template writes for tools, through a plain ChatML template that knows
    nothing of them: the tools in the system prompt, the calls as blocks, the two results in
    one user turn."""
    from stillhouse.engine.tiny import train_tokenizer

    tools = [WEATHER]
    text = train_tokenizer().apply_chat_template(chat_messages(CONVERSATION, tools), tokenize=False)
    assert text == (
        "<|im_start|>system\nYou answer about the weather.\n\n# Tools\n\n"
        "You may call one or more functions to assist with the user query.\n\n"
        "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
        + json.dumps(WEATHER)
        + "\n</tools>\n\nFor each function call, return a json object with function name and "
        "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\nWeather in Paris and Tokyo?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Tokyo"}}\n</tool_call>'
        "<|im_end|>\n"
        "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>\n"
        "<tool_response>\ncloudy\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nSunny in Paris, cloudy in Tokyo.<|im_end|>\n"
    )
    plain = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert chat_messages(plain) == plain  # a task without tools renders as it always did


def test_a_student_answer_splits_the_same_whole_or_streamed_token_by_token() -> None:
    text = (
        "Let me look.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": "{\\"city\\": \\"Lima\\"}"}\n'
        "</tool_call>\n Done. "
    )
    calls = [ToolCall("get_weather", {"city": "Paris"}), ToolCall("get_weather", {"city": "Lima"})]
    assert split(text) == ("Let me look.\nDone.", calls)
    for size in (1, 2, 3, 7, 50):
        splitter, pieces = ToolCallSplitter(), []
        for start in range(0, len(text), size):
            pieces += splitter.feed(text[start : start + size])
        pieces += splitter.finish()
        assert "".join(p for p in pieces if isinstance(p, str)) == "Let me look.\nDone."
        assert [p for p in pieces if isinstance(p, ToolCall)] == calls
    # arguments that are not JSON: the text is the answer, never a broken call
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {city: Paris}}\n</tool_call>'
    assert split(broken) == (broken, [])
    assert split("a < b, and <tool") == ("a < b, and <tool", [])
    # a model may stop right after the JSON, before the closing tag
    assert split('<tool_call>\n{"name": "f", "arguments": {}}') == (None, [ToolCall("f", {})])


def test_tool_call_agreement_compares_names_and_parsed_arguments() -> None:
    def said(*calls: tuple[str, str], content: str | None = None) -> str:
        tool_calls = [
            {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": a}}
            for i, (n, a) in enumerate(calls)
        ]
        message = {"role": "assistant", "content": content, "tool_calls": tool_calls}
        return answer_text({"choices": [{"message": message}]})

    teacher = said(("get_weather", '{"city": "Paris", "unit": "C"}'))
    assert agree("tool_call", teacher, said(("get_weather", '{"unit":"C","city":"Paris"}')))
    assert not agree("tool_call", teacher, said(("get_weather", '{"city": "paris", "unit": "C"}')))
    assert not agree("tool_call", teacher, said(("get_time", '{"city": "Paris", "unit": "C"}')))
    assert not agree("tool_call", teacher, said(("get_weather", '{"city": "Paris"}')))
    both = said(("a", "{}"), ("b", '{"x": 1}'))
    assert agree("tool_call", both, said(("b", '{"x": 1.0}'), ("a", "{}")))  # any order
    assert not agree("tool_call", both, said(("a", "{}")))
    # whatever the task's text metric, a tool call is compared as one, and never equals text
    for metric in ("exact", "json", "similarity", "judge"):
        assert agree(metric, teacher, said(("get_weather", '{"unit": "C", "city": "Paris"}')))
        assert not agree(metric, teacher, "Paris, in C")
        assert not agree(metric, "It is sunny.", said(("get_weather", '{"city": "Paris"}')))
    assert agree("tool_call", "It is sunny.", "it is sunny")  # no calls: texts, as exact
    # what a text answer is as text has not changed
    assert answer_text({"choices": [{"message": {"content": "hi"}}]}) == "hi"
    # the majority baseline counts equal calls as one answer; a call is well-formed
    same = said(("get_weather", '{"unit": "C", "city": "Paris"}'))
    assert canonical("json", teacher) == canonical("json", same)
    assert format_ok(teacher, "stop", "json", {"type": "object", "required": ["intent"]})


# -- bad input ----------------------------------------------------------------------------------
def test_arguments_that_are_not_json_in_history_are_a_400_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    with running_upstream() as (url, behaviour):
        config = config_for(tmp_path, url)
        app = create_app(config)
        server = ServerThread(app).start()
        try:
            with pytest.raises(openai.BadRequestError) as caught:
                client_of(server).chat.completions.create(
                    model="support",
                    tools=[WEATHER],
                    messages=[
                        {"role": "user", "content": "weather in Paris?"},
                        {
                            "role": "assistant",
                            "tool_calls": [
                                {
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {
                                        "name": "get_weather",
                                        "arguments": "{city: Paris",
                                    },
                                }
                            ],
                        },
                        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                    ],
                )
            assert app.state.writer.flush(10)
        finally:
            server.stop()
    error = caught.value
    assert error.status_code == 400 and error.body["type"] == "invalid_request_error"
    assert error.body["param"] == "messages[1].tool_calls[0].function.arguments"
    assert "not valid JSON" in error.body["message"]
    assert behaviour.requests == []  # never sent upstream ...
    with open_store(config.store.url) as store:
        assert store.list_calls(task="support", limit=10) == []  # ... and never stored


# -- end to end ---------------------------------------------------------------------------------
def test_captured_tool_calls_and_results_stay_in_the_rows_and_the_training_text(
    weather: Weather,
) -> None:
    from transformers import AutoTokenizer

    from stillhouse.engine.runtime import Engine
    from stillhouse.train.data import IGNORE, encode

    with open_store(weather.config.store.url) as store:
        rows = [e.example for e in store.dataset_examples(weather.dataset_id, "train")]
    calls = [r for r in rows if r["messages"][-1].get("tool_calls")]
    answered = [r for r in rows if any(m["role"] == "tool" for m in r["messages"])]
    assert len(calls) > 80 and answered and len(calls) + len(answered) == len(rows)
    row = calls[0]
    assert row["tools"] == [WEATHER]
    (call,) = row["messages"][-1]["tool_calls"]
    city = city_in(row["messages"][0]["content"])
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": city}
    tool = answered[0]["messages"][-2]
    assert tool["role"] == "tool" and tool["content"] in SKY.values() and tool["tool_call_id"]

    tokenizer = AutoTokenizer.from_pretrained(weather.base)
    encoded = encode(tokenizer, row, max_length=1024)
    assert encoded is not None
    first = next(i for i, label in enumerate(encoded.labels) if label != IGNORE)
    learned = tokenizer.decode([t for t in encoded.labels if t != IGNORE])
    assert learned == (
        f'<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n'
        "</tool_call><|im_end|>\n"
    )
    # the student is prompted with exactly the tokens it was trained after
    engine = Engine.load(str(weather.base))
    try:
        prompt = engine.prompt_ids(row["messages"][:-1], row["tools"])
    finally:
        engine.close()
    assert prompt == encoded.input_ids[:first]
    with_result = encode(tokenizer, answered[0], max_length=1024)
    assert with_result is not None
    text = tokenizer.decode(with_result.input_ids)
    assert f"<|im_start|>user\n<tool_response>\n{tool['content']}\n</tool_response><|im_end|>" in (
        text
    )


def test_the_holdout_gates_tool_call_answers_with_the_tool_call_agreement(
    weather: Weather,
) -> None:
    from stillhouse.evaluate.run import evaluate

    with open_store(weather.config.store.url) as store:
        held = store.dataset_examples(weather.dataset_id, "holdout")
        candidate = register_tiny_candidate(
            store, weather.dataset_id, weather.base, "tools", weather.adapter, weather.folder
        )
        doc = evaluate(store, weather.config, "support", candidate, progress=False)
    assert doc["n"] == len(held)  # none dropped for being a tool call
    rows = [json.loads(line) for line in Path(doc["report"]["answers"]).read_text().splitlines()]
    calls = [r for r in rows if r["teacher"].startswith("<tool_call>")]
    assert len(calls) >= 15
    assert sum(r["agreement"] for r in calls) / len(calls) >= 0.8
    assert all(r["format_ok"] for r in calls)
    assert doc["passed"], doc["reason"]


def test_the_trained_student_calls_the_tool_through_the_gateway_plain_and_streamed(
    weather: Weather,
) -> None:
    app, server, config = weather.serve(threshold=-1e9)  # under any confidence: the student answers
    client = client_of(server)
    try:
        for city in CITIES:
            asked = weather.asked(city)
            raw = client.chat.completions.with_raw_response.create(
                model="support", messages=asked, tools=[WEATHER]
            )
            assert raw.headers["x-stillhouse-route"] == "student"
            reply = raw.parse()
            (call,) = reply.choices[0].message.tool_calls
            assert reply.choices[0].finish_reason == "tool_calls"
            assert call.type == "function" and call.id.startswith("call_")
            assert call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": city}
            assert not reply.choices[0].message.content

            # streamed: deltas as the SDK's own stream helper accumulates them
            with client.chat.completions.stream(
                model="support", messages=asked, tools=[WEATHER]
            ) as stream:
                deltas = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
                final = stream.get_final_completion()
            (done,) = deltas
            assert done.name == "get_weather" and done.parsed_arguments == {"city": city}
            (streamed,) = final.choices[0].message.tool_calls
            assert final.choices[0].finish_reason == "tool_calls"
            assert streamed.function.parsed_arguments == {"city": city}
            assert streamed.id.startswith("call_")

        # a plain stream, read chunk by chunk as users do
        chunks = list(
            client.chat.completions.create(
                model="support",
                messages=weather.asked("Tokyo"),
                tools=[WEATHER],
                stream=True,
            )
        )
        pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
        assert [(p.index, p.function.name) for p in pieces] == [(0, "get_weather")]
        assert json.loads(pieces[0].function.arguments) == {"city": "Tokyo"}
        assert chunks[-1].choices[0].finish_reason == "tool_calls"

        # the student's calls are captured as calls, and each shadow agreed with the teacher's
        assert app.state.writer.flush(10)
        deadline = time.monotonic() + 20
        while True:
            with open_store(config.store.url) as store:
                calls = store.list_calls(task="support", limit=100)
                students = [c for c in calls if c.role == "student"]
                scores = [s for c in students for s in store.scores_for(c.id)]
            if len(scores) >= len(students) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
            assert app.state.writer.flush(10)
    finally:
        server.stop()
    assert len(students) == 7 and len(scores) == 7
    assert {(s.name, s.value) for s in scores} == {("shadow_agreement", 1.0)}
    for c in students:
        (captured,) = c.response["choices"][0]["message"]["tool_calls"]
        assert captured["function"]["name"] == "get_weather"


def test_an_unsure_tool_call_falls_back_on_the_teachers_plain_and_streamed(
    weather: Weather,
) -> None:
    # confidences are log-probabilities (<= 0): just over 0 is over any, so always unsure
    app, server, config = weather.serve(threshold=1e-9)  # (a fallback is never shadowed)
    client = client_of(server)
    asked = weather.asked("Berlin")
    try:
        raw = client.chat.completions.with_raw_response.create(
            model="support", messages=asked, tools=[WEATHER]
        )
        assert raw.headers["x-stillhouse-route"] == "fallback"
        (call,) = raw.parse().choices[0].message.tool_calls
        assert json.loads(call.function.arguments) == {"city": "Berlin"}
        with client.chat.completions.stream(
            model="support", messages=asked, tools=[WEATHER]
        ) as stream:
            final = stream.get_final_completion()
        (streamed,) = final.choices[0].message.tool_calls
        assert streamed.function.parsed_arguments == {"city": "Berlin"}
        assert app.state.writer.flush(10)
        with open_store(config.store.url) as store:
            calls = store.list_calls(task="support", limit=100)
    finally:
        server.stop()
    reasons = sorted(c.route_reason for c in calls)
    assert reasons == ["fallback", "fallback", "fallback:replaced", "fallback:replaced"]
    for c in calls:  # the student's unsure call is kept too, as a call
        (captured,) = c.response["choices"][0]["message"]["tool_calls"]
        assert json.loads(captured["function"]["arguments"]) == {"city": "Berlin"}


# -- the llama.cpp engine -----------------------------------------------------------------------
def test_llama_cpp_renders_the_same_blocks_and_answers_a_tool_request(tmp_path: Path) -> None:
    """The packaged SmolLM2 GGUF under `serve-model`: its prompt carries the same Hermes blocks
    as training writes, and what it answers to a tool request comes back whole and streamed
    without a broken call (this 135M base writes no call of its own: its `<tool_response>`
    guess is text, and stays content)."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("llama-cpp-python is missing: make install builds it (the cpu extra)")
        pytest.skip("llama-cpp-python not installed (pip install 'stillhouse[cpu]')")
    from stillhouse.engine.llamacpp import LlamaCppEngine
    from stillhouse.engine.server import create_model_app

    engine = LlamaCppEngine.load("smollm2-135m-instruct", threads=1)
    history: list[dict[str, Any]] = []
    for i, city in enumerate(["Paris", "Berlin"]):
        arguments = json.dumps({"city": city})
        call = {"id": f"c{i}", "type": "function"}
        call["function"] = {"name": "get_weather", "arguments": arguments}
        history += [
            {"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": SKY[city]},
            {"role": "assistant", "content": f"It is {SKY[city]} in {city}."},
        ]
    history.append({"role": "user", "content": "What is the weather in Tokyo?"})
    prompt = engine._tokenizer.decode(engine.prompt_ids(history, [WEATHER]))
    assert "<tools>\n" + json.dumps(WEATHER) + "\n</tools>" in prompt
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": '
        '{"city": "Berlin"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nrainy\n</tool_response><|im_end|>\n"
    ) in prompt
    server = ServerThread(create_model_app(engine, "smol", owns_engine=True)).start()
    try:
        client = client_of(server)
        reply = client.chat.completions.create(
            model="smol", messages=history, tools=[WEATHER], max_tokens=24
        )
        chunks = list(
            client.chat.completions.create(
                model="smol", messages=history, tools=[WEATHER], max_tokens=24, stream=True
            )
        )
    finally:
        server.stop()
    message = reply.choices[0].message
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert not message.tool_calls and not calls
    assert message.content.startswith("<tool_response>") and message.content == streamed
    assert reply.choices[0].finish_reason == chunks[-1].choices[0].finish_reason == "stop"
