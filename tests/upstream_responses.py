"""A real HTTP server on loopback that speaks OpenAI's Responses API in its real wire format,
beside the chat completions of tests/upstream.py (same behaviour: replies, failures, stream
errors, latency).

POST /v1/responses (OpenAI) and /openai/v1/responses (Azure's v1 surface) answer a Response
object, or, streamed, the server-sent events OpenAI sends, each an `event:` line naming its type
and a `data:` line: response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta..., response.output_text.done,
response.content_part.done, response.output_item.done, response.completed (a function call:
output_item.added, function_call_arguments.delta, .done, output_item.done), every event numbered
by `sequence_number`. It reads `input` on its own (not with the gateway's converters), and
records every request's path, so a test tells a native request from a bridged one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .upstream import ServerThread, UpstreamBehaviour, build_app


@dataclass
class ResponsesBehaviour(UpstreamBehaviour):
    model_name: str = "gpt-upstream-2025"
    paths: list[str] = field(default_factory=list)  # every request's, chat ones too


class RecordPaths:
    def __init__(self, app: Any, paths: list[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.paths.append(scope["path"])
        await self.app(scope, receive, send)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(p.get("text", "") for p in content or () if isinstance(p, dict))


def turns(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's input as role/content turns, for the behaviour's reply."""
    given = body["input"]
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    out = []
    for item in given:
        kind = item.get("type", "message")
        if kind == "message":
            out.append({"role": item["role"], "content": _text(item.get("content"))})
        elif kind == "function_call_output":
            out.append({"role": "tool", "content": _text(item.get("output"))})
    return out


def _error(status: int, message: str) -> Response:
    error = {"message": message, "type": "server_error", "param": None, "code": str(status)}
    return Response(orjson.dumps({"error": error}), status, media_type="application/json")


def build_responses_app(behaviour: ResponsesBehaviour) -> Starlette:
    async def responses(request: Request) -> Response:
        body = orjson.loads(await request.body())
        behaviour.requests.append(body)
        behaviour.headers.append(dict(request.headers))
        if behaviour.latency:
            await asyncio.sleep(behaviour.latency)
        if behaviour.failures:
            failure = behaviour.failures.pop(0)
            return _error(failure.status, failure.message)
        said = turns(body)
        text = behaviour.reply({"messages": said})
        tokens = text.split() or [""]
        status, incomplete = "completed", None
        limit = body.get("max_output_tokens")
        if limit and len(tokens) > limit:
            tokens, status, incomplete = (
                tokens[:limit],
                "incomplete",
                {"reason": "max_output_tokens"},
            )
        stamp = time.time_ns()
        tools = [t for t in body.get("tools") or () if t.get("type") == "function"]
        calls = tools and body.get("tool_choice") != "none"
        if calls:
            item = {
                "id": f"fc_{stamp}",
                "type": "function_call",
                "status": "completed",
                "arguments": orjson.dumps({"query": text}).decode(),
                "call_id": f"call_{stamp % 10**8}",
                "name": tools[0]["name"],
            }
        else:
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
            part["text"] = " ".join(tokens)
            item = {
                "id": f"msg_{stamp}",
                "type": "message",
                "status": "completed",
                "content": [part],
                "role": "assistant",
            }
        words_in = sum(len(_text(t["content"]).split()) for t in said)
        response: dict[str, Any] = {
            "id": f"resp_{stamp}",
            "object": "response",
            "created_at": int(time.time()),
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": incomplete,
            "instructions": body.get("instructions"),
            "max_output_tokens": limit,
            "model": behaviour.model_name,
            "output": [item],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": None, "summary": None},
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "top_p": body.get("top_p", 1.0),
            "truncation": "disabled",
            "usage": {
                "input_tokens": words_in,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": len(tokens),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": words_in + len(tokens),
            },
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }
        if not body.get("stream"):
            return Response(orjson.dumps(response), media_type="application/json")
        started = {**response, "status": "in_progress", "output": [], "usage": None}
        started["incomplete_details"] = None
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": started},
            {"type": "response.in_progress", "response": started},
        ]
        where = {"item_id": item["id"], "output_index": 0}
        if calls:
            opened = {**item, "status": "in_progress", "arguments": ""}
            events += [
                {"type": "response.output_item.added", "output_index": 0, "item": opened},
                {"type": "response.function_call_arguments.delta", **where, "delta": ""},
                {"type": "response.function_call_arguments.done", **where, "arguments": ""},
            ]
            events[-2]["delta"] = events[-1]["arguments"] = item["arguments"]
        else:
            part = item["content"][0]
            empty = {**part, "text": ""}
            at = {**where, "content_index": 0}
            events += [
                {
                    "type": "response.output_item.added",
                    "output_index": 0,
                    "item": {**item, "status": "in_progress", "content": []},
                },
                {"type": "response.content_part.added", **at, "part": empty},
            ]
            for i, token in enumerate(tokens):
                delta = token if i == 0 else " " + token
                events.append(
                    {"type": "response.output_text.delta", **at, "delta": delta, "logprobs": []}
                )
            events += [
                {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []},
                {"type": "response.content_part.done", **at, "part": part},
            ]
        events.append({"type": "response.output_item.done", "output_index": 0, "item": item})
        done = "response.completed" if status == "completed" else "response.incomplete"
        events.append({"type": done, "response": response})

        async def stream() -> Any:
            for n, event in enumerate(events):
                if behaviour.cut_stream_after is not None and n >= behaviour.cut_stream_after:
                    raise ConnectionResetError("scripted stream cut")
                if n == behaviour.error_stream_after:
                    error = {
                        "type": "error",
                        "code": "server_error",
                        "message": behaviour.stream_error_message,
                        "param": None,
                        "sequence_number": n,
                    }
                    yield b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"
                    return
                if behaviour.chunk_delay and n:
                    await asyncio.sleep(behaviour.chunk_delay)
                numbered = {"type": event["type"], "sequence_number": n, **event}
                yield f"event: {event['type']}\ndata: ".encode() + orjson.dumps(numbered) + b"\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    return Starlette(
        routes=[
            *build_app(behaviour).routes,
            Route("/v1/responses", responses, methods=["POST"]),
            Route("/openai/v1/responses", responses, methods=["POST"]),
        ],
        middleware=[Middleware(RecordPaths, paths=behaviour.paths)],
    )


@contextlib.contextmanager
def running_responses_upstream(
    behaviour: ResponsesBehaviour | None = None,
) -> Iterator[tuple[str, ResponsesBehaviour]]:
    """Yield (server root, behaviour): OpenAI's base_url is the root + "/v1", Azure's the root."""
    behaviour = behaviour or ResponsesBehaviour()
    with ServerThread(build_responses_app(behaviour)) as server:
        yield server.url, behaviour
