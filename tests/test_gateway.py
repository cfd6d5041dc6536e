"""The gateway through the official openai SDK, as an application would use it."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import Gateway


def client(gw: Gateway, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0, **kwargs)


def test_chat_completion_is_answered_and_captured_once(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    reply = client(gateway).chat.completions.create(
        model="support",
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "where is my parcel"},
        ],
        user="customer-7",
    )
    assert reply.choices[0].message.content == "echo: where is my parcel"
    assert behaviour.requests[0]["model"] == "upstream-model"
    gateway.flush()
    with gateway.store() as store:
        calls = store.list_calls(task="support")
    assert len(calls) == 1
    call = calls[0]
    assert call.role == "teacher" and call.route_reason == "no-student"
    assert call.status == "ok" and call.http_status == 200
    assert call.session_key == "customer-7"
    assert (call.input_tokens, call.output_tokens) == (6, 5)
    assert call.cost == pytest.approx((6 * 2.0 + 5 * 8.0) / 1e6)
    assert call.finish_reason == "stop"
    assert call.latency_ms is not None and call.latency_ms > 0
    assert call.response["choices"][0]["message"]["content"] == "echo: where is my parcel"
    assert call.request["model"] == "support"


def test_streaming_passes_chunks_through_and_captures_the_whole_answer(
    gateway: Gateway, upstream
) -> None:
    _, behaviour = upstream
    stream = client(gateway).chat.completions.create(
        model="support",
        stream=True,
        messages=[{"role": "user", "content": "one two three"}],
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert pieces == ["echo:", " one", " two", " three"]
    # the gateway asks the upstream for usage even though the client did not
    assert behaviour.requests[0]["stream_options"] == {"include_usage": True}
    gateway.flush()
    with gateway.store() as store:
        (call,) = store.list_calls(task="support")
    assert call.stream and call.status == "ok"
    assert call.response["choices"][0]["message"]["content"] == "echo: one two three"
    assert (call.input_tokens, call.output_tokens) == (3, 4)
    assert call.ttft_ms is not None and 0 < call.ttft_ms <= call.latency_ms
    assert call.finish_reason == "stop"


def test_streaming_usage_reaches_the_client_when_asked(gateway: Gateway) -> None:
    stream = client(gateway).chat.completions.create(
        model="support",
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "a b"}],
    )
    usages = [c.usage for c in stream if c.usage is not None]
    assert len(usages) == 1 and usages[0].completion_tokens == 3


async def test_async_client_streaming_and_not(gateway: Gateway) -> None:
    aclient = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="x", max_retries=0)
    reply = await aclient.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content == "echo: hello"
    stream = await aclient.chat.completions.create(
        model="support", stream=True, messages=[{"role": "user", "content": "hi there"}]
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "echo: hi there"
    await aclient.close()
    gateway.flush()
    with gateway.store() as store:
        assert sorted(c.stream for c in store.list_calls()) == [False, True]


def test_task_and_session_from_header_and_metadata(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    c = client(gateway)
    c.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "x"}],
        extra_headers={"X-Stillhouse-Task": "support", "X-Stillhouse-Session": "s-1"},
    )
    c.chat.completions.create(
        model="gpt-4.1",
        messages=[{"role": "user", "content": "y"}],
        metadata={"task": "support", "session_id": "s-2", "tenant": "acme"},
    )
    # our metadata keys stay here; the user's own pass through
    assert "metadata" not in behaviour.requests[0]
    assert behaviour.requests[1]["metadata"] == {"tenant": "acme"}
    gateway.flush()
    with gateway.store() as store:
        sessions = sorted(c.session_key for c in store.list_calls(task="support"))
    assert sessions == ["s-1", "s-2"]


def test_unknown_fields_tools_and_options_pass_through(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            },
        }
    ]
    reply = client(gateway).chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "find order 42"}],
        tools=tools,
        tool_choice="auto",
        response_format={"type": "text"},
        n=1,
        seed=7,
        stop=["\n\n"],
        logprobs=True,
        top_logprobs=2,
        extra_body={"vendor_option": {"a": 1}},
    )
    sent = behaviour.requests[0]
    for key in (
        "tools",
        "tool_choice",
        "response_format",
        "n",
        "seed",
        "stop",
        "logprobs",
        "top_logprobs",
        "vendor_option",
    ):
        assert key in sent, key
    assert sent["vendor_option"] == {"a": 1}
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.name == "lookup" and "find order 42" in call.function.arguments
    assert reply.choices[0].finish_reason == "tool_calls"


def test_logprobs_come_back_in_openai_shape(gateway: Gateway) -> None:
    reply = client(gateway).chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "a b"}],
        logprobs=True,
        top_logprobs=2,
    )
    content = reply.choices[0].logprobs.content
    assert [t.token for t in content] == ["echo:", "a", "b"]
    assert len(content[0].top_logprobs) == 2


def test_models_lists_the_tasks(gateway: Gateway) -> None:
    models = client(gateway).models.list()
    assert [m.id for m in models.data] == ["support"]


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"model": "support"}', 400, "messages"),
        (b'{"model": "support", "messages": []}', 400, "messages"),
        (b'{"model": 5, "messages": [{"role": "user", "content": "x"}]}', 400, "model"),
        (
            b'{"model": "support", "messages": [{"role": "robot", "content": "x"}]}',
            400,
            "messages[0].role",
        ),
        (
            b'{"model": "support", "messages": [{"role": "user", "content": "x"}], '
            b'"temperature": "hot"}',
            400,
            "temperature",
        ),
        (b'{"model": "nope", "messages": [{"role": "user", "content": "x"}]}', 404, "model"),
    ],
)
def test_bad_input_gets_an_openai_shaped_error(
    gateway: Gateway, body: bytes, status: int, param: str | None
) -> None:
    r = httpx.post(
        gateway.base_url + "/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == status
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param


def test_body_over_the_limit_is_refused(tmp_path, upstream, gateway_factory) -> None:
    from .conftest import make_config

    gw = gateway_factory(make_config(tmp_path, upstream[0], gateway={"max_body_bytes": 2048}))
    big = "x" * 5000
    r = httpx.post(
        gw.base_url + "/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": big}]},
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"


def test_openai_sdk_sees_errors_as_its_own_exceptions(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(gateway).chat.completions.create(
            model="unknown-task", messages=[{"role": "user", "content": "x"}]
        )
    assert "unknown task 'unknown-task'" in info.value.message


def test_health_and_metrics(gateway: Gateway) -> None:
    client(gateway).chat.completions.create(
        model="support", messages=[{"role": "user", "content": "x"}]
    )
    assert httpx.get(gateway.url + "/healthz").json()["status"] == "ok"
    text = httpx.get(gateway.url + "/metrics").text
    assert 'stillhouse_requests_total{role="teacher",status="200",task="support"} 1.0' in text
    assert "stillhouse_captures_dropped_total 0.0" in text
    r = httpx.get(gateway.url + "/nowhere")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
