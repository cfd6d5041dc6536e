"""A stand-in for Anthropic's Messages API on loopback, since the real one cannot be reached here.

It speaks the real wire format (POST /v1/messages, `x-api-key` and `anthropic-version` headers,
`{"type": "error", "error": {...}}` errors, and SSE streams with the real event names and shapes)
and refuses what Anthropic refuses: unknown fields, a missing max_tokens, roles that do not
alternate, empty text blocks, tool results that answer no tool use. It echoes the last user text,
answers with a tool_use block when given tools, records every request and its headers, and can
fail with a status, cut a stream, end one early or send an `error` event.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .upstream import ServerThread

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "system",
    "metadata",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "tools",
    "tool_choice",
    "thinking",
}


@dataclass
class AnthropicBehaviour:
    api_key: str | None = None  # when set, any other x-api-key is refused with 401
    failures: list[tuple[int, str]] = field(default_factory=list)  # consumed one per request
    cut_stream_after: int | None = None  # drop the connection after this many events
    end_stream_after: int | None = None  # close cleanly after this many events, no message_stop
    error_event_after: int | None = None  # send an `error` event after this many events
    error_event_message: str = "Overloaded"
    cache_read_tokens: int = 0
    model_name: str = "claude-test"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def fail(self, status: int, message: str = "scripted failure", times: int = 1) -> None:
        self.failures.extend((status, message) for _ in range(times))


def error(status: int, message: str) -> Response:
    body = {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(status, "api_error"), "message": message},
    }
    return Response(orjson.dumps(body), status, {"request-id": "req_test"}, "application/json")


def block_text(block: dict[str, Any]) -> str:
    if block.get("type") == "text":
        return block["text"]
    if block.get("type") == "tool_result":
        content = block.get("content") or ""
        return content if isinstance(content, str) else " ".join(map(block_text, content))
    return ""


def blocks_of(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def invalid(body: dict[str, Any]) -> str | None:
    """What Anthropic would answer 400 to, in its words; None when the request is valid."""
    for key in body:
        if key not in FIELDS:
            return f"{key}: Extra inputs are not permitted"
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    if not 0 <= body.get("temperature", 0) <= 1:
        return "temperature: Input should be less than or equal to 1"
    previous_role, tool_uses = None, set()
    for i, message in enumerate(body.get("messages") or ()):
        role, blocks = message.get("role"), blocks_of(message)
        if role not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        if role == previous_role:
            return (
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if tool_uses - results:
            return (
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(tool_uses - results))}"
            )
        for j, block in enumerate(blocks):
            if block.get("type") == "text" and not block.get("text"):
                return f"messages.{i}.content.{j}: text content blocks must be non-empty"
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in tool_uses:
                return (
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                    "blocks. Each `tool_result` block must have a corresponding `tool_use` "
                    "block in the previous message."
                )
        previous_role = role
        tool_uses = {b["id"] for b in blocks if b.get("type") == "tool_use"}
    return None


def answer(body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str | None]:
    """The content blocks, stop_reason and stop_sequence for a request."""
    last = blocks_of(body["messages"][-1])
    heard = " ".join(t for t in map(block_text, last) if t)
    tools, choice = body.get("tools"), body.get("tool_choice") or {"type": "auto"}
    answered_tool = any(b.get("type") == "tool_result" for b in last)
    if tools and choice["type"] != "none" and not answered_tool:
        name = choice.get("name") or tools[0]["name"]
        use = {
            "type": "tool_use",
            "id": f"toolu_{time.time_ns()}",
            "name": name,
            "input": {"query": heard},
        }
        return [{"type": "text", "text": "Let me look that up."}, use], "tool_use", None
    text, reason, sequence = "echo: " + heard, "end_turn", None
    for stop in body.get("stop_sequences") or ():
        if stop in text:
            text, reason, sequence = text[: text.index(stop)], "stop_sequence", stop
    words = text.split()
    if len(words) > body["max_tokens"]:
        text, reason = " ".join(words[: body["max_tokens"]]), "max_tokens"
    return [{"type": "text", "text": text}], reason, sequence


def usage(body: dict[str, Any], blocks: list[dict[str, Any]], cached: int) -> dict[str, int]:
    system = body.get("system") or ""
    heard = [block_text(b) for m in body["messages"] for b in blocks_of(m)]
    said = [b["text"] if b["type"] == "text" else orjson.dumps(b["input"]).decode() for b in blocks]
    return {
        "input_tokens": len(" ".join([system, *heard]).split()),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": cached,
        "output_tokens": len(" ".join(said).split()),
    }


def events(body: dict[str, Any], message: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The stream Anthropic sends for `message`, event by event."""
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    yield {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
            if index == 0:
                yield {"type": "ping"}
            for i, word in enumerate(block["text"].split()):
                delta = {"type": "text_delta", "text": word if i == 0 else " " + word}
                yield {"type": "content_block_delta", "index": index, "delta": delta}
        else:
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {**block, "input": {}},
            }
            raw = orjson.dumps(block["input"]).decode()
            third = max(1, len(raw) // 3)
            for piece in (raw[:third], raw[third : 2 * third], raw[2 * third :]):
                delta = {"type": "input_json_delta", "partial_json": piece}
                yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
        "usage": {"output_tokens": message["usage"]["output_tokens"]},
    }
    yield {"type": "message_stop"}


def build_app(behaviour: AnthropicBehaviour) -> Starlette:
    async def messages(request: Request) -> Response:
        body = orjson.loads(await request.body())
        behaviour.requests.append(body)
        behaviour.headers.append(dict(request.headers))
        key = request.headers.get("x-api-key")
        if not key:
            return error(401, "x-api-key header is required")
        if behaviour.api_key is not None and key != behaviour.api_key:
            return error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return error(400, "anthropic-version: header is required")
        if behaviour.failures:
            return error(*behaviour.failures.pop(0))
        problem = invalid(body)
        if problem:
            return error(400, problem)
        blocks, reason, sequence = answer(body)
        message = {
            "id": f"msg_{time.time_ns()}",
            "type": "message",
            "role": "assistant",
            "model": behaviour.model_name,
            "content": blocks,
            "stop_reason": reason,
            "stop_sequence": sequence,
            "usage": usage(body, blocks, behaviour.cache_read_tokens),
        }
        if not body.get("stream"):
            return Response(orjson.dumps(message), media_type="application/json")

        async def sse() -> AsyncIterator[bytes]:
            for sent, event in enumerate(events(body, message)):
                if sent == behaviour.cut_stream_after:
                    raise ConnectionResetError("scripted stream cut")
                if sent == behaviour.end_stream_after:
                    return
                if sent == behaviour.error_event_after:
                    event = {
                        "type": "error",
                        "error": {
                            "type": "overloaded_error",
                            "message": behaviour.error_event_message,
                        },
                    }
                yield f"event: {event['type']}\ndata: ".encode() + orjson.dumps(event) + b"\n\n"
                if event["type"] == "error":
                    return

        return StreamingResponse(sse(), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


@contextlib.contextmanager
def running_anthropic(
    behaviour: AnthropicBehaviour | None = None,
) -> Iterator[tuple[str, AnthropicBehaviour]]:
    """Yield (base_url, behaviour); like https://api.anthropic.com, base_url has no /v1."""
    behaviour = behaviour or AnthropicBehaviour()
    with ServerThread(build_app(behaviour)) as server:
        yield server.url, behaviour
