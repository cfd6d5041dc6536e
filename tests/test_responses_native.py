"""POST /v1/responses sent natively to a teacher whose upstream speaks the Responses API (OpenAI,
Azure OpenAI), through the official openai SDK, against a loopback upstream in OpenAI's real wire
format (tests/upstream_responses.py); every other upstream, and every student, still bridged."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from stillhouse.config import Config
from stillhouse.curate.pipeline import curate
from stillhouse.gateway import create_app
from stillhouse.routing import RoutingTable, TaskRoute
from stillhouse.store import open_store

from .conftest import Gateway, make_config, only_call, sdk_client
from .test_responses import EVENTS, WEATHER  # the same requests, native or bridged
from .upstream import ServerThread
from .upstream_responses import ResponsesBehaviour, running_responses_upstream


@pytest.fixture
def fake() -> Iterator[tuple[str, ResponsesBehaviour]]:
    with running_responses_upstream() as up:
        yield up


def teacher_config(tmp_path: Path, root: str, provider: str = "openai", **model: Any) -> Config:
    """A `support` task whose teacher is `provider` on the loopback fake."""
    base_url = root if provider == "azure" else root + "/v1"
    teacher = {"provider": provider, "base_url": base_url, "model": "gpt-4.1", **model}
    return make_config(tmp_path, base_url, models={"teacher": teacher})


@pytest.fixture
def native(tmp_path: Path, fake: tuple[str, ResponsesBehaviour], gateway_factory: Any) -> Gateway:
    root, _ = fake
    return gateway_factory(teacher_config(tmp_path, root))


def test_an_openai_teacher_answers_natively_and_the_call_is_distilled(
    native: Gateway, fake: tuple[str, ResponsesBehaviour]
) -> None:
    _, behaviour = fake
    raw = sdk_client(native).responses.with_raw_response.create(
        model="support",
        instructions="be brief",
        input="where is my parcel",
        metadata={"k": "v"},
        user="customer-7",
    )
    response = raw.parse()
    assert behaviour.paths == ["/v1/responses"]  # not /chat/completions
    (sent,) = behaviour.requests
    assert sent["model"] == "gpt-4.1" and sent["input"] == "where is my parcel"
    assert sent["instructions"] == "be brief" and sent["metadata"] == {"k": "v"}
    assert sent["store"] is False  # the conversation is kept here, not upstream
    # the upstream's Response, under the gateway's id
    assert response.id.startswith("resp_") and response.output_text == "echo: where is my parcel"
    assert response.model == "gpt-upstream-2025" and response.store is True
    assert response.usage is not None and response.usage.output_tokens == 5
    call = only_call(native)
    assert call.id == raw.headers["x-stillhouse-call-id"]
    assert (call.role, call.provider, call.status) == ("teacher", "openai", "ok")
    assert call.metadata["response"] == {"id": response.id, "store": True, "native": True}
    # stored in the chat form every later step reads
    assert call.request["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "where is my parcel"},
    ]
    (choice,) = call.response["choices"]
    assert choice["message"]["content"] == "echo: where is my parcel"
    assert choice["finish_reason"] == "stop"
    assert (call.input_tokens, call.output_tokens) == (4, 5) and call.cost > 0
    with native.store() as store:
        report = curate(store, native.config, "support")
    (example,) = report.examples
    assert example.example["messages"][-1] == {
        "role": "assistant",
        "content": "echo: where is my parcel",
    }
    assert sdk_client(native).responses.retrieve(response.id).model_dump() == response.model_dump()


def test_a_native_stream_relays_the_upstreams_events(
    native: Gateway, fake: tuple[str, ResponsesBehaviour]
) -> None:
    _, behaviour = fake
    events = list(
        sdk_client(native).responses.create(model="support", input="one two", stream=True)
    )
    assert [e.type for e in events] == EVENTS
    assert [e.sequence_number for e in events] == list(range(len(EVENTS)))
    assert [e.delta for e in events if e.type == "response.output_text.delta"] == [
        "echo:",
        " one",
        " two",
    ]
    completed = events[-1].response
    assert events[0].response.id == completed.id and completed.output_text == "echo: one two"
    assert behaviour.paths == ["/v1/responses"] and behaviour.requests[0]["stream"] is True
    assert sdk_client(native).responses.retrieve(completed.id).output_text == "echo: one two"
    call = only_call(native)
    assert call.stream and call.status == "ok" and call.ttft_ms is not None
    assert call.response["choices"][0]["message"]["content"] == "echo: one two"
    assert (call.input_tokens, call.output_tokens) == (2, 3)
    assert call.metadata["response"]["id"] == completed.id
    with sdk_client(native).responses.stream(model="support", input="a b c") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == "echo: a b c" == final.output_text


def test_previous_response_id_sends_the_kept_conversation(
    native: Gateway, fake: tuple[str, ResponsesBehaviour]
) -> None:
    _, behaviour = fake
    sdk = sdk_client(native)
    first = sdk.responses.create(model="support", instructions="be brief", input="my name is Ada")
    second = sdk.responses.create(
        model="support", instructions="be kind", previous_response_id=first.id, input="who am I"
    )
    assert second.previous_response_id == first.id and second.output_text == "echo: who am I"
    sent = behaviour.requests[1]
    assert "previous_response_id" not in sent and sent["store"] is False
    assert sent["instructions"] == "be kind"
    assert sent["input"] == [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "echo: my name is Ada"},
        {"role": "user", "content": "who am I"},
    ]
    streamed = list(
        sdk.responses.create(
            model="support", previous_response_id=second.id, input="bye", stream=True
        )
    )
    assert len(behaviour.requests[2]["input"]) == 5
    assert streamed[-1].response.previous_response_id == second.id
    native.flush()
    with native.store() as store:
        calls = sorted(store.list_calls(task="support"), key=lambda c: c.created_at)
    assert calls[1].request["messages"] == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "echo: my name is Ada"},
        {"role": "user", "content": "who am I"},
    ]


def test_a_native_function_call_and_its_output(
    native: Gateway, fake: tuple[str, ResponsesBehaviour]
) -> None:
    _, behaviour = fake
    sdk = sdk_client(native)
    first = sdk.responses.create(model="support", input="weather in Oslo", tools=[WEATHER])
    (item,) = first.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert behaviour.requests[0]["tools"] == [WEATHER]  # as sent: not the chat form
    second = sdk.responses.create(
        model="support",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": item.call_id, "output": "sunny"}],
    )
    assert second.output_text == "echo: weather in Oslo"
    assert behaviour.requests[1]["input"] == [
        {"role": "user", "content": "weather in Oslo"},
        {
            "type": "function_call",
            "call_id": item.call_id,
            "name": "get_weather",
            "arguments": item.arguments,
        },
        {"type": "function_call_output", "call_id": item.call_id, "output": "sunny"},
    ]
    streamed = list(
        sdk.responses.create(model="support", input="weather", tools=[WEATHER], stream=True)
    )
    assert streamed[-1].response.output[0].type == "function_call"
    native.flush()
    with native.store() as store:
        calls = sorted(store.list_calls(task="support"), key=lambda c: c.created_at)
    for call in (calls[0], calls[2]):
        choice = call.response["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        (tool_call,) = choice["message"]["tool_calls"]
        assert tool_call["function"]["name"] == "get_weather"
        assert orjson.loads(tool_call["function"]["arguments"])["query"].startswith("echo:")
    assert calls[1].request["messages"][2]["role"] == "tool"


def test_upstream_errors_are_openai_shaped_and_captured(
    native: Gateway, fake: tuple[str, ResponsesBehaviour]
) -> None:
    _, behaviour = fake
    behaviour.fail(400, message="input is not allowed")
    with pytest.raises(openai.BadRequestError) as err:
        sdk_client(native).responses.create(model="support", input="hi")
    assert err.value.body["message"] == "input is not allowed"
    call = only_call(native)
    assert (call.status, call.http_status, call.error) == ("error", 400, "input is not allowed")
    assert call.request["messages"] == [{"role": "user", "content": "hi"}]
    behaviour.error_stream_after = 4
    events = list(sdk_client(native).responses.create(model="support", input="a b c", stream=True))
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    failed = events[-1].response
    assert failed.status == "failed" and events[-2].message == "scripted stream error"
    with pytest.raises(openai.NotFoundError):
        sdk_client(native).responses.retrieve(failed.id)
    native.flush()
    with native.store() as store:
        streamed = [c for c in store.list_calls(task="support") if c.stream]
    assert [(c.status, c.error) for c in streamed] == [("error", "scripted stream error")]


def test_a_native_stream_cut_midway_keeps_its_partial_answer(
    native: Gateway, fake: tuple[str, ResponsesBehaviour]
) -> None:
    _, behaviour = fake
    behaviour.cut_stream_after = 6  # after two text deltas
    events = list(
        sdk_client(native).responses.create(model="support", input="one two", stream=True)
    )
    assert [e.type for e in events][-2:] == ["error", "response.failed"]
    call = only_call(native)
    assert call.status == "error" and "broke off" in (call.error or "")
    assert call.response["choices"][0]["message"]["content"] == "echo: one"


def test_an_azure_teacher_is_sent_to_its_v1_responses_with_its_deployment(
    tmp_path: Path, fake: tuple[str, ResponsesBehaviour], gateway_factory: Any
) -> None:
    root, behaviour = fake
    config = teacher_config(
        tmp_path, root, "azure", deployment="my-deploy", api_key="azure-secret-key"
    )
    gw = gateway_factory(config)
    assert sdk_client(gw).responses.create(model="support", input="hi").output_text == "echo: hi"
    assert behaviour.paths == ["/openai/v1/responses"]
    assert behaviour.requests[0]["model"] == "my-deploy"
    assert behaviour.headers[0]["api-key"] == "azure-secret-key"


def test_an_openai_compatible_teacher_is_still_bridged(
    tmp_path: Path, fake: tuple[str, ResponsesBehaviour], gateway_factory: Any
) -> None:
    root, behaviour = fake
    gw = gateway_factory(teacher_config(tmp_path, root, "openai-compatible"))
    response = sdk_client(gw).responses.create(model="support", input="hello")
    assert response.output_text == "echo: hello" and response.model == "support"
    list(sdk_client(gw).responses.create(model="support", input="again", stream=True))
    assert behaviour.paths == ["/v1/chat/completions"] * 2
    assert "response" in only_call_of(gw, "hello").metadata
    assert "native" not in only_call_of(gw, "hello").metadata["response"]


def only_call_of(gw: Gateway, text: str) -> Any:
    gw.flush()
    with gw.store() as store:
        (call,) = [
            c
            for c in store.list_calls(task="support")
            if c.request["messages"][-1]["content"] == text
        ]
    return call


def test_an_openai_student_is_bridged(tmp_path: Path, fake: tuple[str, ResponsesBehaviour]) -> None:
    """A student's answer must be a chat completion (its confidence, shadows, constraints)."""
    root, behaviour = fake
    config = make_config(
        tmp_path,
        root + "/v1",
        models={"small": {"provider": "openai", "base_url": root + "/v1", "model": "ft:small"}},
        tasks={
            "support": {
                "teacher": "teacher",
                "student": "small",
                "mode": "student",
                "routing": {"shadow_rate": 0.0},
            }
        },
    )
    app = create_app(
        config, routing=RoutingTable({"support": TaskRoute(state="serving", share=1.0)})
    )
    server = ServerThread(app).start()
    try:
        sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        raw = sdk.responses.with_raw_response.create(model="support", input="hello student")
        assert raw.headers["x-stillhouse-route"] == "student"
        assert raw.parse().output_text == "echo: hello student"
        assert behaviour.paths == ["/v1/chat/completions"]
        assert app.state.writer.flush(10)
    finally:
        server.stop()
    with open_store(config.store.url) as store:
        (call,) = store.list_calls(task="support")
    assert call.role == "student" and "native" not in call.metadata["response"]


# -- the converters, pure ------------------------------------------------------------------------


def test_kept_turns_go_upstream_as_items_that_read_back_as_the_same_turns() -> None:
    from stillhouse.openai.responses import input_messages
    from stillhouse.openai.responses_native import history_items

    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    image = {"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}}
    turns = [
        {"role": "developer", "content": "be kind"},
        {"role": "user", "content": [{"type": "text", "text": "what is this"}, image]},
        {"role": "assistant", "content": "a cat"},
        {"role": "user", "content": "check"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
    ]
    items = history_items(turns)
    assert not any("id" in item for item in items)  # the upstream keeps nothing to refer to
    assert items[1]["content"][1] == {
        "type": "input_image",
        "image_url": "https://x/cat.png",
        "detail": "low",
    }
    assert input_messages(items) == turns


def test_a_response_reads_as_the_chat_completion_a_chat_upstream_would_answer() -> None:
    from stillhouse.openai.responses_native import completion_of

    response = {
        "id": "resp_up",
        "created_at": 7,
        "model": "gpt-x",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            {
                "type": "message",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "half ", "annotations": []},
                    {"type": "refusal", "refusal": "no more"},
                ],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        ],
        "usage": {"input_tokens": 3, "output_tokens": 2, "output_tokens_details": {}},
    }
    completion = completion_of(response)
    (choice,) = completion["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"] == {
        "role": "assistant",
        "content": "half ",
        "refusal": "no more",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }
    assert completion["usage"]["prompt_tokens"] == 3
    assert completion["usage"]["completion_tokens"] == 2
    assert (completion["id"], completion["model"], completion["created"]) == ("resp_up", "gpt-x", 7)
