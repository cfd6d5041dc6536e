"""When the upstream fails, the client gets an OpenAI-shaped error with the upstream's status,
retries happen where they should, and the failed call is captured with its outcome."""

from __future__ import annotations

import time

import openai
import pytest

from stillhouse.config import Secret

from .conftest import Gateway, make_config, only_call, sdk_client
from .upstream import free_port

MESSAGES = [{"role": "user", "content": "hello"}]


def test_429_with_retry_after_is_retried(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    behaviour.fail(429, times=1, retry_after=0.2)
    started = time.monotonic()
    reply = sdk_client(gateway).chat.completions.create(model="support", messages=MESSAGES)
    assert reply.choices[0].message.content == "echo: hello"
    assert time.monotonic() - started >= 0.2  # honoured Retry-After
    assert len(behaviour.requests) == 2
    assert only_call(gateway).status == "ok"


def test_persistent_500_reaches_the_client_and_is_captured(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    behaviour.fail(500, times=3)  # max_retries = 2: three attempts, all fail
    with pytest.raises(openai.InternalServerError) as info:
        sdk_client(gateway).chat.completions.create(model="support", messages=MESSAGES)
    assert info.value.status_code == 500
    assert info.value.body["message"] == "scripted failure"
    assert len(behaviour.requests) == 3
    call = only_call(gateway)
    assert (call.status, call.http_status, call.error) == ("error", 500, "scripted failure")
    assert call.response is None


def test_400_is_not_retried(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    behaviour.fail(400)
    with pytest.raises(openai.BadRequestError):
        sdk_client(gateway).chat.completions.create(model="support", messages=MESSAGES)
    assert len(behaviour.requests) == 1


def test_refused_connection_is_a_502_and_captured(tmp_path, gateway_factory) -> None:
    """The 502 says what failed, not where: the upstream's host and port inside the operator's
    network are no business of the caller's (the log keeps them)."""
    port = free_port()
    dead = f"http://127.0.0.1:{port}/v1"
    gw = gateway_factory(make_config(tmp_path, dead))
    with pytest.raises(openai.APIStatusError) as info:
        sdk_client(gw).chat.completions.create(model="support", messages=MESSAGES)
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_unreachable"
    message = info.value.body["message"]
    assert message == "upstream model 'teacher' unreachable: Connection refused"
    assert str(port) not in info.value.response.text and "127.0.0.1" not in info.value.message
    call = only_call(gw)
    assert call.status == "error" and call.http_status == 502


def test_a_stalled_upstream_times_out_with_504(tmp_path, upstream, gateway_factory) -> None:
    base_url, behaviour = upstream
    config = make_config(tmp_path, base_url)
    teacher = config.models["teacher"].model_copy(update={"timeout": 0.3, "max_retries": 0})
    config = config.model_copy(update={"models": {"teacher": teacher}})
    gw = gateway_factory(config)
    behaviour.latency = 2.0
    with pytest.raises(openai.APIStatusError) as info:
        sdk_client(gw).chat.completions.create(model="support", messages=MESSAGES)
    assert info.value.status_code == 504
    assert only_call(gw).http_status == 504


def test_stream_failing_before_the_first_chunk_gets_an_http_error(
    gateway: Gateway, upstream
) -> None:
    _, behaviour = upstream
    behaviour.fail(503, times=3)
    with pytest.raises(openai.APIStatusError) as info:
        list(
            sdk_client(gateway).chat.completions.create(
                model="support", messages=MESSAGES, stream=True
            )
        )
    assert info.value.status_code == 503
    call = only_call(gateway)
    assert call.stream and call.status == "error" and call.http_status == 503


def test_stream_cut_midway_ends_with_an_error_and_is_captured(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    behaviour.cut_stream_after = 2
    stream = sdk_client(gateway).chat.completions.create(
        model="support",
        stream=True,
        messages=[{"role": "user", "content": "one two three four five"}],
    )
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            received.append(chunk)
    assert received  # the first chunks did arrive
    call = only_call(gateway)
    assert call.status == "error"
    assert "stream" in call.error
    assert call.response is not None  # the partial answer is kept


def test_missing_upstream_key_is_a_clear_error(
    tmp_path, upstream, gateway_factory, monkeypatch
) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_SET", raising=False)
    config = make_config(tmp_path, upstream[0])
    teacher = config.models["teacher"].model_copy(
        update={"api_key": Secret("env::NO_SUCH_KEY_SET")}
    )
    gw = gateway_factory(config.model_copy(update={"models": {"teacher": teacher}}))
    with pytest.raises(openai.InternalServerError) as info:
        sdk_client(gw).chat.completions.create(model="support", messages=MESSAGES)
    assert "NO_SUCH_KEY_SET is not set" in info.value.message
    assert upstream[1].requests == []
