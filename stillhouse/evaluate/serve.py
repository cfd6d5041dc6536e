"""Serve a holdout through a model for real and time it: a local adapter runs in this process
through the engine (the `local` provider), a remote model through its provider over HTTP.

Latency is measured per request from send to answer with `concurrency` requests in flight, the
way the gateway would load it. A failed request is an answer with an error, never an exception:
one bad call must not lose the whole evaluation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..answers import answer_text, confidence_of, token_logprobs
from ..config import ModelConfig


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    finish_reason: str | None
    latency_ms: float
    confidence: dict[str, Any] | None  # `stillhouse.confidence`, or computed from logprobs
    input_tokens: int | None = None
    output_tokens: int | None = None
    error: str | None = None
    logprobs: tuple[float, ...] = ()  # each generated token's, when the model returned them


def _answer(reply: dict[str, Any], latency_ms: float) -> Answer:
    choice = (reply.get("choices") or [{}])[0]
    text = answer_text(reply)  # tool calls included, as `<tool_call>` blocks agreement reads
    confidence = confidence_of(reply)  # the engine's own, or a remote model's logprobs reduced
    usage = reply.get("usage") or {}
    return Answer(
        text=text,
        finish_reason=choice.get("finish_reason"),
        latency_ms=latency_ms,
        confidence=confidence,
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        logprobs=tuple(token_logprobs(reply)),
    )


async def serve_async(
    name: str, model: ModelConfig, bodies: Sequence[dict[str, Any]], concurrency: int = 8
) -> list[Answer]:
    """Each body (an OpenAI chat request) answered by `model`, in order."""
    from ..errors import StillhouseError
    from ..providers import SharedSession, build_provider

    session = SharedSession()
    await session.open()
    provider = build_provider(name, model, session)
    gate = asyncio.Semaphore(concurrency)

    async def one(body: dict[str, Any]) -> Answer:
        async with gate:
            started = time.perf_counter()
            try:
                reply = await provider.complete({"model": model.model, **body})
            except StillhouseError as err:
                ms = (time.perf_counter() - started) * 1000
                return Answer("", None, ms, None, error=str(err)[:500])
            return _answer(reply, (time.perf_counter() - started) * 1000)

    try:
        if bodies:
            # Untimed: a local model loads on its first request, which is not serving latency.
            await one(bodies[0])
        return list(await asyncio.gather(*(one(b) for b in bodies)))
    finally:
        await session.close()
        await provider.aclose()  # a local model's worker thread: do not leave it behind


def serve(
    name: str, model: ModelConfig, bodies: Sequence[dict[str, Any]], concurrency: int = 8
) -> list[Answer]:
    return asyncio.run(serve_async(name, model, bodies, concurrency))
