"""OpenAI chat completions answered by a local Engine: request -> sampling parameters, engine
events -> `chat.completion` and `chat.completion.chunk` dicts, confidence attached. When the
request offers tools, the `<tool_call>` blocks the model writes (toolcalls.py) come back as
OpenAI `tool_calls`, whole or as stream deltas.

Shared by the in-process `local` provider and the `serve-model` server, so both speak exactly the
same wire format. Generation runs on the engine's worker thread; nothing here blocks the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from ..errors import BadRequest
from ..openai.protocol import ChatCompletionRequest
from ..toolcalls import ToolCall, ToolCallSplitter, split
from .confidence import confidence
from .grammar import response_schema
from .sequence import (
    DEFAULT_MAX_TOKENS,
    Delta,
    Event,
    Finished,
    Request,
    Runtime,
    SamplingParams,
    TokenLogprob,
)


def sampling_params(request: ChatCompletionRequest) -> SamplingParams:
    """The request's decoding settings. Greedy unless `temperature` > 0 is given explicitly:
    a distilled student should answer the same way every time (OpenAI's default is 1)."""
    if request.n not in (None, 1):
        raise BadRequest(
            "only n=1 is supported by local models", param="n", code="unsupported_value"
        )
    stop = request.stop
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    if len(stops) > 4 or any(not s for s in stops):
        raise BadRequest("stop: up to 4 non-empty strings", param="stop", code="invalid_value")
    return SamplingParams(
        max_tokens=request.max_completion_tokens or request.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=request.temperature or 0.0,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_logprobs=(request.top_logprobs or 0) if request.logprobs else 0,
        stop=stops,
        seed=request.seed,
        json_schema=response_schema(request.response_format),
    )


def _messages(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    out = []
    for m in request.messages:
        content = m.content
        if isinstance(content, list):
            # Text parts only: these models read no images or audio.
            content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
        message: dict[str, Any] = {"role": m.role, "content": content or ""}
        if m.tool_calls:
            message["tool_calls"] = [c.model_dump(exclude_none=True) for c in m.tool_calls]
        if m.function_call:
            message["function_call"] = m.function_call.model_dump(exclude_none=True)
        out.append(message)
    return out


def _calls_tools(request: ChatCompletionRequest) -> bool:
    """Whether the answer is read for tool calls: the request offers tools and allows them."""
    return bool(request.tools) and request.tool_choice != "none"


def _message(text: str, request: ChatCompletionRequest) -> dict[str, Any]:
    """The answer's message: its text, or the calls in it and what text is left."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if _calls_tools(request):
        content, calls = split(text)
        if calls:
            message.update(content=content, tool_calls=[c.openai() for c in calls])
    return message


def _finish_reason(finished: str, calls: int) -> str:
    """`tool_calls` for an answer that ended by itself after calling; a cut one stays `length`."""
    return "tool_calls" if calls and finished == "stop" else finished


def _entry(token: TokenLogprob) -> dict[str, Any]:
    return {
        "token": token.token,
        "logprob": token.logprob,
        "bytes": list(token.token.encode()),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in token.top
        ],
    }


def _logprobs(tokens: tuple[TokenLogprob, ...]) -> dict[str, Any]:
    return {"content": [_entry(t) for t in tokens], "refusal": None}


def _usage(done: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def extension(done: Finished) -> dict[str, Any]:
    """The `stillhouse` field of a response: what only a local model can tell."""
    return {"confidence": confidence(done.text, done.token_ends, [t.logprob for t in done.tokens])}


class LocalCompletions:
    """Chat completions on an engine that is loaded on first use (in a worker thread)."""

    def __init__(self, load: Callable[[], Runtime], model_name: str) -> None:
        self._load = load
        self.model_name = model_name
        self._engine: Runtime | None = None
        self._loading: asyncio.Lock | None = None

    @classmethod
    def of(cls, engine: Runtime, model_name: str | None = None) -> LocalCompletions:
        completions = cls(lambda: engine, model_name or engine.name)
        completions._engine = engine
        return completions

    def close(self) -> None:
        """Stop the engine's worker thread, when it was loaded (the next request loads again)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    async def engine(self) -> Runtime:
        if self._engine is None:
            self._loading = self._loading or asyncio.Lock()
            async with self._loading:
                if self._engine is None:
                    self._engine = await asyncio.to_thread(self._load)
        return self._engine

    async def _submit(self, request: ChatCompletionRequest) -> tuple[Request, asyncio.Queue[Event]]:
        """Queue the request on the engine; bad input raises here, before any answer starts."""
        params = sampling_params(request)
        engine = await self.engine()
        prompt = await asyncio.to_thread(engine.prompt_ids, _messages(request), request.tools)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(event: Event) -> None:
            # RuntimeError: the loop is gone, so nobody is waiting for this answer any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(events.put_nowait, event)

        # in a thread: submitting compiles the request's grammar, if it has one
        return await asyncio.to_thread(engine.submit, prompt, params, emit), events

    @staticmethod
    async def _follow(handle: Request, events: asyncio.Queue[Event]) -> AsyncIterator[Event]:
        try:
            while True:
                event = await events.get()
                if isinstance(event, BaseException):
                    raise event
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            handle.cancel()

    def _base(self, kind: str, cid: str, created: int) -> dict[str, Any]:
        return {"id": cid, "object": kind, "created": created, "model": self.model_name}

    async def complete(self, request: ChatCompletionRequest) -> dict[str, Any]:
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        async for event in self._follow(*await self._submit(request)):
            if isinstance(event, Finished):
                message = _message(event.text, request)
                choice = {
                    "index": 0,
                    "message": message,
                    "logprobs": _logprobs(event.tokens) if request.logprobs else None,
                    "finish_reason": _finish_reason(
                        event.finish_reason, len(message.get("tool_calls") or ())
                    ),
                }
                return {
                    **self._base("chat.completion", cid, created),
                    "choices": [choice],
                    "usage": _usage(event),
                    "stillhouse": extension(event),
                }
        raise AssertionError("the engine ended a request without finishing it")

    async def stream(self, request: ChatCompletionRequest) -> AsyncGenerator[dict[str, Any], None]:
        """Chunks: the role, one per text delta (or tool call), the finish reason (with
        `stillhouse`), then usage when stream_options.include_usage is set."""
        cid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        base = self._base("chat.completion.chunk", cid, created)
        splitter = ToolCallSplitter() if _calls_tools(request) else None
        held: list[TokenLogprob] = []  # tokens of text held back until it is known to be a call
        calls = 0

        def chunk(delta: dict[str, Any], finish: str | None = None, lp: Any = None) -> Any:
            choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}
            return {**base, "choices": [choice]}

        def pieces(found: list[str | ToolCall]) -> list[dict[str, Any]]:
            """A chunk per piece; the held tokens' logprobs go with the first."""
            nonlocal calls
            out = []
            for piece in found:
                lp = _logprobs(tuple(held)) if request.logprobs and held else None
                held.clear()
                if isinstance(piece, ToolCall):
                    out.append(chunk({"tool_calls": [piece.openai(calls)]}, lp=lp))
                    calls += 1
                else:
                    out.append(chunk({"content": piece}, lp=lp))
            return out

        submitted = await self._submit(request)
        try:
            yield chunk({"role": "assistant", "content": ""})
            async for event in self._follow(*submitted):
                if isinstance(event, Delta) and splitter is not None:
                    held.extend(event.tokens)
                    for shown in pieces(splitter.feed(event.text)):
                        yield shown
                elif isinstance(event, Delta):
                    lp = _logprobs(event.tokens) if request.logprobs else None
                    yield chunk({"content": event.text}, lp=lp)
                elif isinstance(event, Finished):
                    if splitter is not None:
                        for shown in pieces(splitter.finish()):
                            yield shown
                    finish = _finish_reason(event.finish_reason, calls)
                    lp = _logprobs(tuple(held)) if request.logprobs and held else None
                    yield {**chunk({}, finish, lp), "stillhouse": extension(event)}
                    if (request.stream_options or {}).get("include_usage"):
                        yield {**base, "choices": [], "usage": _usage(event)}
        finally:
            submitted[0].cancel()  # the client may leave before the engine finishes
