"""The Anthropic provider: the official openai SDK talks to the gateway, whose teacher is a
loopback server speaking Anthropic's Messages wire format; and the translation functions alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from stillhouse.errors import UpstreamError
from stillhouse.providers.anthropic import to_anthropic_request, to_openai_response

from .anthropic_upstream import AnthropicBehaviour, running_anthropic
from .conftest import Gateway, make_config, only_call, sdk_client

KEY_ENV = "STILLHOUSE_TEST_ANTHROPIC_KEY"
KEY = "sk-ant-test-0123"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Find an order",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


@pytest.fixture
def anthropic() -> Iterator[tuple[str, AnthropicBehaviour]]:
    with running_anthropic(AnthropicBehaviour(api_key=KEY)) as up:
        yield up


@pytest.fixture
def gw(
    tmp_path: Path,
    anthropic: tuple[str, AnthropicBehaviour],
    gateway_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Gateway:
    monkeypatch.setenv(KEY_ENV, KEY)
    teacher = {
        "provider": "anthropic",
        "base_url": anthropic[0],
        "model": "claude-sonnet-4-5",
        "api_key": f"env::{KEY_ENV}",
        "max_retries": 2,
        "timeout": 5,
        "price": {"input_per_mtok": 3.0, "cached_input_per_mtok": 0.3, "output_per_mtok": 15.0},
    }
    return gateway_factory(make_config(tmp_path, anthropic[0], models={"teacher": teacher}))


# -- through the gateway -------------------------------------------------------------------------
def test_answer_comes_back_in_openai_shape_and_is_captured(gw: Gateway, anthropic) -> None:
    _, behaviour = anthropic
    reply = sdk_client(gw).chat.completions.create(
        model="support",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "answer in English"},
            {"role": "user", "content": "where is"},
            {"role": "user", "content": [{"type": "text", "text": "my parcel"}]},
        ],
        user="customer-7",
    )
    assert reply.object == "chat.completion" and reply.id.startswith("msg_")
    assert reply.model == "claude-test"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "echo: where is my parcel"
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (9, 5)
    assert reply.usage.total_tokens == 14

    (sent,) = behaviour.requests
    assert sent == {
        "model": "claude-sonnet-4-5",
        "system": "be brief\n\nanswer in English",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "where is"},
                    {"type": "text", "text": "my parcel"},
                ],
            }
        ],
        "max_tokens": 4096,
        "metadata": {"user_id": "customer-7"},
        "stream": False,
    }
    headers = behaviour.headers[0]
    assert headers["x-api-key"] == KEY
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["content-type"] == "application/json"
    assert "authorization" not in headers

    call = only_call(gw)
    assert call.provider == "anthropic" and call.upstream_model == "claude-sonnet-4-5"
    assert call.status == "ok" and call.session_key == "customer-7"
    assert (call.input_tokens, call.output_tokens, call.finish_reason) == (9, 5, "stop")
    assert call.cost == pytest.approx((9 * 3.0 + 5 * 15.0) / 1e6)
    assert call.response["choices"][0]["message"]["content"] == "echo: where is my parcel"


def test_options_are_translated_and_unknown_ones_dropped(gw: Gateway, anthropic) -> None:
    _, behaviour = anthropic
    reply = sdk_client(gw).chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "one two three END four"}],
        max_completion_tokens=50,
        temperature=0.2,
        top_p=0.9,
        stop="END",
        seed=7,
        n=1,
        logprobs=True,
        top_logprobs=2,
        response_format={"type": "text"},
        presence_penalty=0.5,
        extra_body={"vendor_option": {"a": 1}},
    )
    assert reply.choices[0].message.content == "echo: one two three "
    assert reply.choices[0].finish_reason == "stop"
    # the stand-in refuses unknown fields as Anthropic does, so the request went through clean
    (sent,) = behaviour.requests
    assert {k: v for k, v in sent.items() if k != "messages"} == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 50,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": False,
    }


def test_max_tokens_cuts_the_answer_and_reads_as_length(gw: Gateway, anthropic) -> None:
    reply = sdk_client(gw).chat.completions.create(
        model="support", messages=[{"role": "user", "content": "a b c d"}], max_tokens=2
    )
    assert anthropic[1].requests[0]["max_tokens"] == 2
    assert reply.choices[0].message.content == "echo: a"
    assert reply.choices[0].finish_reason == "length"


def test_tools_are_translated_and_tool_use_comes_back_as_tool_calls(gw: Gateway, anthropic) -> None:
    _, behaviour = anthropic
    reply = sdk_client(gw).chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "find order 42"}],
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
    )
    sent = behaviour.requests[0]
    assert sent["tools"] == [
        {
            "name": "lookup",
            "description": "Find an order",
            "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
        }
    ]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    message = reply.choices[0].message
    assert message.content == "Let me look that up."
    (call,) = message.tool_calls
    assert call.type == "function" and call.id.startswith("toolu_")
    assert call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"query": "find order 42"}
    assert reply.choices[0].finish_reason == "tool_calls"


def test_a_tool_conversation_round_trips(gw: Gateway, anthropic) -> None:
    _, behaviour = anthropic
    c = sdk_client(gw)
    messages: list[Any] = [{"role": "user", "content": "find order 42"}]
    first = c.chat.completions.create(model="support", messages=messages, tools=TOOLS)
    (tool_call,) = first.choices[0].message.tool_calls
    messages += [
        {
            "role": "assistant",
            "content": first.choices[0].message.content,
            "tool_calls": [tool_call.model_dump()],
        },
        {"role": "tool", "tool_call_id": tool_call.id, "content": "order 42 ships Monday"},
    ]
    second = c.chat.completions.create(model="support", messages=messages, tools=TOOLS)
    assert second.choices[0].message.content == "echo: order 42 ships Monday"
    assert second.choices[0].finish_reason == "stop"
    assert behaviour.requests[1]["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "find order 42"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me look that up."},
                {
                    "type": "tool_use",
                    "id": tool_call.id,
                    "name": "lookup",
                    "input": {"query": "find order 42"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": tool_call.id,
                    "content": [{"type": "text", "text": "order 42 ships Monday"}],
                }
            ],
        },
    ]


def test_streaming_text_arrives_in_deltas_and_is_captured_whole(gw: Gateway, anthropic) -> None:
    _, behaviour = anthropic
    behaviour.cache_read_tokens = 4
    stream = sdk_client(gw).chat.completions.create(
        model="support",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "one two three"}],
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    assert pieces == ["echo:", " one", " two", " three"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 3 + 4
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 4
    assert chunks[-1].usage.completion_tokens == 4
    sent = behaviour.requests[0]
    assert sent["stream"] is True and "stream_options" not in sent

    call = only_call(gw)
    assert call.stream and call.status == "ok"
    assert call.response["choices"][0]["message"]["content"] == "echo: one two three"
    assert (call.input_tokens, call.output_tokens, call.finish_reason) == (7, 4, "stop")
    assert call.cost == pytest.approx((3 * 3.0 + 4 * 0.3 + 4 * 15.0) / 1e6)
    assert "usage_estimated" not in call.metadata


async def test_async_client_streams_tool_calls_and_answers_plainly(gw: Gateway, anthropic) -> None:
    aclient = openai.AsyncOpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    reply = await aclient.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content == "echo: hello"
    stream = await aclient.chat.completions.create(
        model="support",
        stream=True,
        messages=[{"role": "user", "content": "find order 42"}],
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "lookup"}},
    )
    text, calls, finish = "", [], None
    async for chunk in stream:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            calls += choice.delta.tool_calls or []
            finish = choice.finish_reason or finish
    await aclient.close()
    assert anthropic[1].requests[1]["tool_choice"] == {"type": "tool", "name": "lookup"}
    assert text == "Let me look that up." and finish == "tool_calls"
    # the first delta names the call; the arguments follow in fragments, all at index 0
    assert calls[0].id.startswith("toolu_") and calls[0].function.name == "lookup"
    assert len(calls) == 4 and {c.index for c in calls} == {0}
    arguments = "".join(c.function.arguments or "" for c in calls)
    assert json.loads(arguments) == {"query": "find order 42"}

    gw.flush()
    with gw.store() as store:
        streamed = next(c for c in store.list_calls() if c.stream)
    (captured,) = streamed.response["choices"][0]["message"]["tool_calls"]
    assert captured["id"] == calls[0].id and json.loads(captured["function"]["arguments"]) == {
        "query": "find order 42"
    }
    assert streamed.finish_reason == "tool_calls" and streamed.output_tokens is not None


@pytest.mark.parametrize("stream", [False, True])
def test_overloaded_529_is_retried(gw: Gateway, anthropic, stream: bool) -> None:
    _, behaviour = anthropic
    behaviour.fail(529, "Overloaded")
    reply = sdk_client(gw).chat.completions.create(
        model="support", stream=stream, messages=[{"role": "user", "content": "hi"}]
    )
    text = (
        "".join(c.choices[0].delta.content or "" for c in reply if c.choices)
        if stream
        else reply.choices[0].message.content
    )
    assert text == "echo: hi"
    assert len(behaviour.requests) == 2
    assert only_call(gw).status == "ok"


def test_a_400_reaches_the_client_with_anthropics_message(gw: Gateway, anthropic) -> None:
    _, behaviour = anthropic
    behaviour.fail(400, "messages.0.content: prompt is too long")
    with pytest.raises(openai.BadRequestError) as info:
        sdk_client(gw).chat.completions.create(
            model="support", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.body["message"] == "messages.0.content: prompt is too long"
    assert info.value.body["type"] == "invalid_request_error"
    assert len(behaviour.requests) == 1  # a 400 is not retried
    call = only_call(gw)
    assert (call.status, call.http_status) == ("error", 400)


def test_n_above_one_is_refused_before_anthropic_is_called(gw: Gateway, anthropic) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk_client(gw).chat.completions.create(
            model="support", messages=[{"role": "user", "content": "hi"}], n=2
        )
    assert "n must be 1" in info.value.message and info.value.param == "n"
    assert anthropic[1].requests == []


def test_a_missing_key_is_a_clear_error(gw: Gateway, anthropic, monkeypatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(openai.InternalServerError) as info:
        sdk_client(gw).chat.completions.create(
            model="support", messages=[{"role": "user", "content": "hi"}]
        )
    assert KEY_ENV in info.value.message
    assert anthropic[1].requests == []


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("cut_stream_after", "broke off the stream"),
        ("end_stream_after", "ended the stream before message_stop"),
        ("error_event_after", "Overloaded"),
    ],
)
def test_a_broken_stream_ends_in_an_error_and_is_captured(
    gw: Gateway, anthropic, setting: str, message: str
) -> None:
    _, behaviour = anthropic
    # after message_start, content_block_start, ping and the first two text deltas
    setattr(behaviour, setting, 5)
    stream = sdk_client(gw).chat.completions.create(
        model="support", stream=True, messages=[{"role": "user", "content": "one two three"}]
    )
    pieces = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            pieces += [c.delta.content for c in chunk.choices if c.delta.content]
    assert pieces == ["echo:", " one"]
    assert message in info.value.message
    call = only_call(gw)
    assert call.status == "error" and message in call.error
    assert call.response["choices"][0]["message"]["content"] == "echo: one"
    assert call.finish_reason is None


def test_an_error_event_quoting_the_key_reaches_no_one_with_it(gw: Gateway, anthropic) -> None:
    """Anthropic's mid-stream `error` event went to the client and the store unredacted."""
    _, behaviour = anthropic
    behaviour.error_event_after = 5
    behaviour.error_event_message = f"rate limited for key {KEY}"
    stream = sdk_client(gw).chat.completions.create(
        model="support", stream=True, messages=[{"role": "user", "content": "one two three"}]
    )
    with pytest.raises(openai.APIError) as info:
        list(stream)
    assert info.value.message == "rate limited for key ***"
    call = only_call(gw)
    assert call.status == "error" and call.error == "rate limited for key ***"


# -- the translation alone -----------------------------------------------------------------------
def test_request_translation_of_content_parts_and_tool_results() -> None:
    body = {
        "model": "claude",
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "rules"}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
                    {"type": "image_url", "image_url": {"url": "https://x.test/cat.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "a", "type": "function", "function": {"name": "f", "arguments": ""}},
                    {"id": "b", "type": "function", "function": {"name": "g", "arguments": "[1]"}},
                ],
            },
            {"role": "tool", "tool_call_id": "a", "content": "A"},
            {"role": "tool", "tool_call_id": "b", "content": ""},
            {"role": "user", "content": "thanks"},
        ],
        "max_tokens": 10,
        "stop": ["x", "y"],
        "stream_options": {"include_usage": True},
        "logit_bias": {"1": 2},
    }
    out = to_anthropic_request(body)
    assert out["system"] == "rules" and out["stop_sequences"] == ["x", "y"]
    assert set(out) == {"model", "system", "messages", "max_tokens", "stop_sequences"}
    user, assistant, results = out["messages"]
    assert user["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.png"}},
    ]
    assert [b["input"] for b in assistant["content"]] == [{}, {"arguments": "[1]"}]
    # both tool results and the user's next words make one user turn, results first
    assert results == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "a", "content": [{"type": "text", "text": "A"}]},
            {"type": "tool_result", "tool_use_id": "b", "content": []},
            {"type": "text", "text": "thanks"},
        ],
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "lookup"}}, {"type": "tool", "name": "lookup"}),
    ],
)
def test_tool_choice_translation(choice: Any, expected: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": TOOLS}
    assert to_anthropic_request({**body, "tool_choice": choice})["tool_choice"] == expected


def test_unsupported_input_is_a_400_naming_the_field() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}
    with pytest.raises(UpstreamError) as info:
        to_anthropic_request({"model": "m", "messages": [{"role": "user", "content": [audio]}]})
    assert info.value.status == 400 and info.value.param == "messages[0].content[0].type"


def test_reply_translation_of_tool_only_answers_stop_reasons_and_cached_usage() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 100,
            "output_tokens": 7,
        },
    }
    out = to_openai_response(message)
    (choice,) = out["choices"]
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    ]
    assert choice["finish_reason"] == "tool_calls"
    assert out["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 7,
        "total_tokens": 122,
        "prompt_tokens_details": {"cached_tokens": 100},
    }
    for reason, finish in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ]:
        assert (
            to_openai_response({**message, "stop_reason": reason})["choices"][0]["finish_reason"]
            == finish
        )
