"""POST /v1/responses and GET /v1/responses/{id} through the official openai SDK, as its users
call it: bridged onto chat completions for a chat upstream, captured as a call of the task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from stillhouse.gateway import create_app
from stillhouse.routing import RoutingTable, TaskRoute
from stillhouse.store import open_store

from .conftest import Gateway, make_config, sdk_client
from .upstream import ServerThread, running_upstream

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"query": {"type": "string"}},
        "required": ["query"],
    },
}


def test_a_string_input_with_instructions_is_answered_and_captured(
    gateway: Gateway, upstream
) -> None:
    _, behaviour = upstream
    raw = sdk_client(gateway).responses.with_raw_response.create(
        model="support", instructions="be brief", input="where is my parcel", user="customer-7"
    )
    response = raw.parse()
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "support"
    assert response.output_text == "echo: where is my parcel"
    (item,) = response.output
    assert item.type == "message" and item.role == "assistant"
    assert item.content[0].type == "output_text"
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (6, 5)
    assert response.instructions == "be brief"
    sent = behaviour.requests[0]
    assert sent["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "where is my parcel"},
    ]
    assert sent["model"] == "upstream-model" and "input" not in sent
    gateway.flush()
    with gateway.store() as store:
        (call,) = store.list_calls(task="support")
    assert call.id == raw.headers["x-stillhouse-call-id"]
    assert call.role == "teacher" and call.status == "ok" and call.session_key == "customer-7"
    assert call.request["messages"] == sent["messages"]  # the chat form: curation distils it
    assert call.response["choices"][0]["message"]["content"] == "echo: where is my parcel"
    assert call.metadata["response"] == {"id": response.id, "store": True}


def test_input_items_become_chat_turns(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    response = sdk_client(gateway).responses.create(
        model="support",
        input=[
            {"role": "developer", "content": "answer in English"},
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "hi, how can I help?"}],
            },
            {"type": "message", "role": "user", "content": "my order is late"},
        ],
    )
    assert response.output_text == "echo: my order is late"
    assert behaviour.requests[0]["messages"] == [
        {"role": "developer", "content": "answer in English"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi, how can I help?"},
        {"role": "user", "content": "my order is late"},
    ]


EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_a_streamed_response_sends_the_sdks_event_sequence(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    events = list(
        sdk_client(gateway).responses.create(model="support", input="one two", stream=True)
    )
    assert [e.type for e in events] == EVENTS
    assert [e.sequence_number for e in events] == list(range(len(EVENTS)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert deltas == ["echo:", " one", " two"]
    completed = events[-1].response
    assert completed.status == "completed" and completed.output_text == "echo: one two"
    assert completed.usage is not None and completed.usage.output_tokens == 3
    assert events[0].response.id == completed.id and events[0].response.status == "in_progress"
    assert behaviour.requests[0]["stream"] is True
    # the streamed response is kept like a whole one
    again = sdk_client(gateway).responses.retrieve(completed.id)
    assert again.output_text == "echo: one two"
    gateway.flush()
    with gateway.store() as store:
        (call,) = store.list_calls(task="support")
    assert call.stream and call.status == "ok" and call.metadata["response"]["id"] == completed.id


def test_the_stream_helper_gives_the_final_response(gateway: Gateway) -> None:
    with sdk_client(gateway).responses.stream(model="support", input="a b c") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == "echo: a b c" == final.output_text


def test_tools_give_a_function_call_and_its_output_continues(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    sdk = sdk_client(gateway)
    first = sdk.responses.create(model="support", input="weather in Oslo", tools=[WEATHER])
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"query": "echo: weather in Oslo"}
    assert behaviour.requests[0]["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "The weather in a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    second = sdk.responses.create(
        model="support",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
    )
    assert second.previous_response_id == first.id
    turns = behaviour.requests[1]["messages"]
    assert turns[0] == {"role": "user", "content": "weather in Oslo"}
    assert turns[1]["role"] == "assistant"
    assert turns[1]["tool_calls"][0]["id"] == call.call_id
    assert turns[1]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert turns[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


def test_a_streamed_function_call(gateway: Gateway) -> None:
    events = list(
        sdk_client(gateway).responses.create(
            model="support", input="weather", tools=[WEATHER], stream=True
        )
    )
    kinds = [e.type for e in events]
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    (item,) = events[-1].response.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert orjson.loads(item.arguments) == {"query": "echo: weather"}


def test_previous_response_id_continues_the_conversation(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    sdk = sdk_client(gateway)
    first = sdk.responses.create(model="support", instructions="be brief", input="my name is Ada")
    second = sdk.responses.create(
        model="support", instructions="be kind", previous_response_id=first.id, input="who am I"
    )
    assert second.output_text == "echo: who am I"
    # the earlier turns are sent; the earlier instructions are not (as with OpenAI)
    assert behaviour.requests[1]["messages"] == [
        {"role": "system", "content": "be kind"},
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "echo: my name is Ada"},
        {"role": "user", "content": "who am I"},
    ]
    third = sdk.responses.create(model="support", previous_response_id=second.id, input="bye")
    assert len(behaviour.requests[2]["messages"]) == 5 and third.status == "completed"


def test_a_response_is_retrieved_by_id_also_from_the_store(
    tmp_path: Path, upstream, gateway_factory: Any
) -> None:
    base_url, _ = upstream
    config = make_config(tmp_path, base_url)
    gw = gateway_factory(config)
    created = sdk_client(gw).responses.create(model="support", input="keep me", metadata={"k": "v"})
    assert sdk_client(gw).responses.retrieve(created.id).model_dump() == created.model_dump()
    gw.flush()
    gw.stop()
    # a new gateway on the same store: the response comes from the store, and continues
    later = gateway_factory(config)
    again = sdk_client(later).responses.retrieve(created.id)
    assert again.output_text == "echo: keep me" and again.metadata == {"k": "v"}
    follow = sdk_client(later).responses.create(
        model="support", previous_response_id=created.id, input="more"
    )
    assert follow.status == "completed"


def test_store_false_is_answered_and_captured_but_not_kept(gateway: Gateway) -> None:
    sdk = sdk_client(gateway)
    response = sdk.responses.create(model="support", input="forget me", store=False)
    assert response.output_text == "echo: forget me" and response.store is False
    with pytest.raises(openai.NotFoundError) as err:
        sdk.responses.retrieve(response.id)
    assert err.value.body["code"] == "response_not_found"
    gateway.flush()
    with gateway.store() as store:
        (call,) = store.list_calls(task="support")
        assert store.get_response(response.id) is None
    assert call.metadata["response"] == {"id": response.id, "store": False}


def test_text_format_json_schema_becomes_the_chat_response_format(
    gateway: Gateway, upstream
) -> None:
    _, behaviour = upstream
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    response = sdk_client(gateway).responses.create(
        model="support",
        input="x",
        text={"format": {"type": "json_schema", "name": "thing", "schema": schema}},
        max_output_tokens=1,
    )
    assert behaviour.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "thing", "schema": schema},
    }
    assert behaviour.requests[0]["max_tokens"] == 1
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"


def test_an_unknown_item_type_is_a_400_and_nothing_is_sent_or_stored(
    gateway: Gateway, upstream
) -> None:
    _, behaviour = upstream
    with pytest.raises(openai.BadRequestError) as err:
        sdk_client(gateway).responses.create(
            model="support",
            input=[{"role": "user", "content": "hi"}, {"type": "telepathy", "thought": "x"}],
        )
    assert err.value.status_code == 400
    assert err.value.body["param"] == "input[1].type"
    assert "telepathy" in err.value.body["message"]
    with pytest.raises(openai.BadRequestError) as err:
        sdk_client(gateway).responses.create(
            model="support", input="hi", tools=[{"type": "web_search_preview"}]
        )
    assert err.value.body["param"] == "tools[0].type"
    assert behaviour.requests == []
    gateway.flush()
    with gateway.store() as store:
        assert store.list_calls() == []


def test_an_unknown_previous_response_id_is_a_404(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    with pytest.raises(openai.NotFoundError) as err:
        sdk_client(gateway).responses.create(
            model="support", previous_response_id="resp_nope", input="hi"
        )
    assert err.value.body["param"] == "previous_response_id"
    assert err.value.body["code"] == "previous_response_not_found"
    assert "resp_nope" in err.value.body["message"]
    assert behaviour.requests == []
    gateway.flush()
    with gateway.store() as store:
        assert store.list_calls() == []


def test_a_student_route_answers_a_responses_request(tmp_path: Path, upstream) -> None:
    teacher_url, teacher = upstream
    with running_upstream() as (student_url, student):
        student.model_name = "student-model"
        config = make_config(
            tmp_path,
            teacher_url,
            models={
                "small": {
                    "provider": "openai-compatible",
                    "base_url": student_url,
                    "model": "student-model",
                }
            },
            # mode student with no shadows: the teacher must see nothing (a 5% shadow sample of
            # an auto task would reach it now and then)
            tasks={
                "support": {
                    "teacher": "teacher",
                    "student": "small",
                    "mode": "student",
                    "routing": {"shadow_rate": 0.0},
                }
            },
        )
        table = RoutingTable({"support": TaskRoute(state="serving", share=1.0)})
        app = create_app(config, routing=table)
        server = ServerThread(app).start()
        try:
            sdk = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
            raw = sdk.responses.with_raw_response.create(model="support", input="hello student")
            assert raw.headers["x-stillhouse-route"] == "student"
            assert raw.parse().output_text == "echo: hello student"
            streamed = list(sdk.responses.create(model="support", input="again", stream=True))
            assert streamed[-1].response.output_text == "echo: again"
            assert len(student.requests) == 2 and teacher.requests == []
            assert app.state.writer.flush(10)
        finally:
            server.stop()
    with open_store(config.store.url) as store:
        calls = store.list_calls(task="support")
    assert {c.role for c in calls} == {"student"} and len(calls) == 2
    assert all(c.metadata["response"]["store"] for c in calls)


def test_a_kept_response_survives_the_journal_round_trip() -> None:
    from stillhouse.store.records import StoredResponse
    from stillhouse.store.writer import decode, encode

    kept = StoredResponse(
        id="resp_1",
        task="support",
        call_id="call_1",
        conversation=[{"role": "user", "content": "hi"}],
        response={"id": "resp_1", "object": "response"},
    )
    assert decode(encode(kept)) == kept


def test_a_stream_that_fails_midway_ends_failed_and_keeps_nothing(
    gateway: Gateway, upstream
) -> None:
    _, behaviour = upstream
    behaviour.error_stream_after = 2
    events = list(sdk_client(gateway).responses.create(model="support", input="a b c", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-2:] == ["error", "response.failed"]
    assert events[-2].message == "scripted stream error"
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    with pytest.raises(openai.NotFoundError):
        sdk_client(gateway).responses.retrieve(failed.id)
    gateway.flush()
    with gateway.store() as store:
        (call,) = store.list_calls(task="support")
        assert store.get_response(failed.id) is None
    assert call.status == "error" and call.metadata["response"]["id"] == failed.id
