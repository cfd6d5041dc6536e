"""The gateway's own overhead: `x-stillhouse-overhead-ms` on every answer (whole, streamed, or an
upstream's error) and the `stillhouse_overhead_seconds` histogram; upstream waits are not in it."""

from __future__ import annotations

import httpx
import openai

from .conftest import Gateway

UPSTREAM_WAIT_MS = 300


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)


def overhead_ms(headers: httpx.Headers) -> float:
    value = float(headers["x-stillhouse-overhead-ms"])
    # the upstream waited 300 ms before answering: none of it is the gateway's
    assert 0 <= value < UPSTREAM_WAIT_MS / 2
    return value


def test_every_answer_carries_the_gateways_own_time(gateway: Gateway, upstream) -> None:
    _, behaviour = upstream
    behaviour.latency = UPSTREAM_WAIT_MS / 1000
    messages = [{"role": "user", "content": "one two three"}]
    whole = client(gateway).chat.completions.with_raw_response.create(
        model="support", messages=messages
    )
    overhead_ms(whole.headers)
    with client(gateway).chat.completions.with_streaming_response.create(
        model="support", messages=messages, stream=True
    ) as streamed:
        overhead_ms(streamed.headers)
        text = "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
        assert text == "echo: one two three"
    behaviour.fail(503, times=1)
    behaviour.fail(400, times=1)  # not retried: the client gets it
    failed = httpx.post(
        gateway.base_url + "/chat/completions", json={"model": "support", "messages": messages}
    )
    assert failed.status_code == 400
    overhead_ms(failed.headers)
    metrics = httpx.get(gateway.url + "/metrics").text
    assert 'stillhouse_overhead_seconds_count{task="support"} 3.0' in metrics
