"""Anthropic's Messages API behind the gateway's OpenAI chat-completions face.

Requests are translated to `/v1/messages` and replies (whole or streamed) back to OpenAI shape,
here and nowhere else. A field Anthropic has no equivalent for is dropped, never forwarded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from ..config import ModelConfig
from ..errors import UpstreamError
from .base import (
    Chunk,
    Remote,
    SharedSession,
    bad_reply,
    error_from_response,
    post,
    read_json,
    redacted,
    secret_header,
    sse_data,
    timeouts,
    with_retries,
)

ANTHROPIC_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI callers often leave it out

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(str(stop_reason), "stop")


TOOL_CHOICES = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"}}


def _unsupported(message: str, param: str) -> UpstreamError:
    return UpstreamError(
        message, status=400, type="invalid_request_error", code="unsupported_parameter", param=param
    )


# -- requests ------------------------------------------------------------------------------------
def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any, param: str) -> list[dict[str, Any]]:
    """OpenAI content (a string or parts) as Anthropic content blocks; empty text is left out
    because Anthropic refuses empty text blocks."""
    if not isinstance(content, list):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            image = part.get("image_url")
            blocks.append(_image(image["url"] if isinstance(image, dict) else str(image)))
        else:
            raise _unsupported(
                f"content part type '{kind}' is not supported by Anthropic", f"{param}[{i}].type"
            )
    return blocks


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    fn = call.get("function") or {}
    try:
        arguments = orjson.loads(fn.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        # Anthropic's input must be an object; keep what the model said rather than lose it.
        arguments = {"arguments": fn.get("arguments")}
    return {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": arguments}


def _messages(body: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(body.get("messages") or ()):
        role, content = message.get("role"), message.get("content")
        param = f"messages[{i}].content"
        if role in ("system", "developer"):
            system.append(_text_of(content))
            continue
        if role == "tool":
            role = "user"
            blocks = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id"),
                    "content": _blocks(content, param),
                }
            ]
        elif role in ("user", "assistant"):
            blocks = _blocks(content, param)
            blocks += [_tool_use(call) for call in message.get("tool_calls") or ()]
        else:
            raise _unsupported(
                f"messages with role '{role}' are not supported by Anthropic", f"messages[{i}].role"
            )
        if not blocks:
            continue
        # Anthropic wants user and assistant turns to alternate: runs of one role become one turn
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    return system, messages


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = []
    for i, tool in enumerate(body.get("tools") or ()):
        if tool.get("type", "function") != "function":
            raise _unsupported(
                f"tool type '{tool.get('type')}' is not supported by Anthropic", f"tools[{i}].type"
            )
        fn = tool.get("function") or {}
        out = {
            "name": fn.get("name"),
            "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
        }
        if fn.get("description"):
            out["description"] = fn["description"]
        tools.append(out)
    return tools


def _tool_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    out: dict[str, Any] | None
    if isinstance(choice, dict):
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    elif choice is None:
        out = {"type": "auto"} if body.get("parallel_tool_calls") is False else None
    elif choice in TOOL_CHOICES:
        out = dict(TOOL_CHOICES[choice])
    else:
        raise _unsupported(f"tool_choice '{choice}' is not supported by Anthropic", "tool_choice")
    if out and out["type"] != "none" and body.get("parallel_tool_calls") is False:
        out["disable_parallel_tool_use"] = True
    return out


def to_anthropic_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat-completions request as an Anthropic Messages request (without `stream`).

    `n` above 1 is refused with a 400 rather than silently answered once. Fields with no
    Anthropic equivalent (seed, logprobs, response_format, penalties...) are dropped.
    """
    if (body.get("n") or 1) > 1:
        raise _unsupported("Anthropic returns one choice per request; n must be 1", "n")
    system, messages = _messages(body)
    out: dict[str, Any] = {
        "model": body.get("model"),
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or DEFAULT_MAX_TOKENS,
    }
    if any(system):
        out["system"] = "\n\n".join(s for s in system if s)
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    tools = _tools(body)
    if tools:
        out["tools"] = tools
    choice = _tool_choice(body)
    if choice and (tools or choice["type"] == "none"):
        out["tool_choice"] = choice
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    return out


# -- replies -------------------------------------------------------------------------------------
def to_openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    """Anthropic counts cached input apart from input_tokens; OpenAI's prompt_tokens includes it."""
    cached = usage.get("cache_read_input_tokens") or 0
    prompt = (
        (usage.get("input_tokens") or 0) + cached + (usage.get("cache_creation_input_tokens") or 0)
    )
    completion = usage.get("output_tokens") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


def to_openai_response(message: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages reply as an OpenAI `chat.completion`."""
    texts = [b.get("text", "") for b in message.get("content") or () if b.get("type") == "text"]
    calls = [
        {
            "id": b.get("id"),
            "type": "function",
            "function": {
                "name": b.get("name"),
                "arguments": orjson.dumps(b.get("input", {})).decode(),
            },
        }
        for b in message.get("content") or ()
        if b.get("type") == "tool_use"
    ]
    reply: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        reply["tool_calls"] = calls
    finish = _finish_reason(message.get("stop_reason"))
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply, "logprobs": None, "finish_reason": finish}],
        "usage": to_openai_usage(message.get("usage") or {}),
    }


class _StreamTranslator:
    """Anthropic stream events in, OpenAI chunks out; `done` once message_stop arrived."""

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool_calls index
        self.done = False

    def chunk(self, delta: dict[str, Any] | None, finish: str | None = None) -> Chunk:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [] if delta is None else [choice],
        }

    def feed(self, event: dict[str, Any]) -> Chunk | None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id, self.model = message.get("id"), message.get("model")
            self.usage = dict(message.get("usage") or {})
            return self.chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                return self.chunk({"content": block["text"]})
            if block.get("type") == "tool_use":
                index = self.tool_index[event.get("index", 0)] = len(self.tool_index)
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return self.chunk({"tool_calls": [call]})
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self.chunk({"content": delta.get("text", "")})
            if delta.get("type") == "input_json_delta" and event.get("index") in self.tool_index:
                call = {
                    "index": self.tool_index[event["index"]],
                    "function": {"arguments": delta.get("partial_json", "")},
                }
                return self.chunk({"tool_calls": [call]})
        elif kind == "message_delta":
            # message_delta's usage is cumulative and final: it overrides message_start's
            self.usage.update(
                {k: v for k, v in (event.get("usage") or {}).items() if v is not None}
            )
            return self.chunk({}, _finish_reason((event.get("delta") or {}).get("stop_reason")))
        elif kind == "message_stop":
            self.done = True
            return {**self.chunk(None), "usage": to_openai_usage(self.usage)}
        elif kind == "error":
            raise error_from_response(502, orjson.dumps(event))
        # ping, content_block_stop, thinking deltas and event types added later carry nothing
        return None


class Anthropic(Remote):
    """POST {base_url}/v1/messages with an `x-api-key` header."""

    name = "anthropic"

    def __init__(self, model_name: str, config: ModelConfig, client: SharedSession) -> None:
        self.model_name = model_name
        self.config = config
        self.client = client
        self.timeout, self.stream_timeout = timeouts(config)

    @property
    def url(self) -> str:
        base = (self.config.base_url or ANTHROPIC_BASE_URL).rstrip("/")
        # accept a base_url given with or without the /v1 suffix
        return base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    def headers(self) -> dict[str, str]:
        headers = {
            "content-type": "application/json",
            "anthropic-version": ANTHROPIC_VERSION,
            **self.config.headers,
        }
        key = secret_header(self.config, self.model_name)
        if key:
            headers["x-api-key"] = key
        return headers

    async def _send(self, payload: bytes, stream: bool) -> aiohttp.ClientResponse:
        timeout = self.stream_timeout if stream else self.timeout
        return await post(
            self.client.session,
            self.url,
            payload,
            self.headers(),
            timeout,
            model_name=self.model_name,
        )

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        payload = orjson.dumps({**to_anthropic_request(body), "stream": False})

        async def attempt() -> dict[str, Any]:
            data = await read_json(await self._send(payload, stream=False), self.model_name)
            if not isinstance(data, dict) or not isinstance(data.get("content"), list):
                raise bad_reply(self.model_name, "answered without content")
            return to_openai_response(data)

        return await with_retries(attempt, self.config.max_retries)

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        payload = orjson.dumps({**to_anthropic_request(body), "stream": True})
        response = await with_retries(
            lambda: self._send(payload, stream=True), self.config.max_retries
        )
        translator = _StreamTranslator()
        # Anthropic sends each event as `event: <type>` plus one `data:` line whose JSON repeats
        # the type, so the data lines alone carry everything.
        sent = self.headers()
        async with contextlib.aclosing(sse_data(response, self.model_name)) as events:
            async for event in events:
                try:
                    chunk = translator.feed(event) if event is not None else None
                except UpstreamError as err:  # an `error` event may quote the key it was sent
                    raise redacted(err, sent) from None
                if chunk is not None:
                    yield chunk
                if translator.done:
                    break
        if not translator.done:
            raise UpstreamError(
                f"upstream model '{self.model_name}' ended the stream before message_stop",
                code="upstream_stream_cut",
            )
