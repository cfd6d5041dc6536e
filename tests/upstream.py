"""A real HTTP server on loopback that speaks the OpenAI chat-completions wire format.

Tests and benchmarks use it as the teacher/student upstream: it answers deterministically from
the request (by default it echoes the last user message), and can be told to wait, fail with a
status (and Retry-After), stream word by word, return logprobs and tool calls, cut a stream in
the middle, stall in the middle of one or send an error event in it. It records every request
it received.

Run alone (for benchmarks): python tests/upstream.py --port 9100 [--latency-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


@dataclass
class Failure:
    status: int
    message: str = "scripted failure"
    retry_after: float | None = None


def _words(text: str) -> list[str]:
    return text.split()


def message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def default_reply(body: dict[str, Any]) -> str:
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return "echo: " + (message_text(users[-1]) if users else "")


@dataclass
class UpstreamBehaviour:
    latency: float = 0.0  # seconds before answering
    chunk_delay: float = 0.0  # seconds between streamed chunks
    reply: Callable[[dict[str, Any]], str] = default_reply
    # the call to make when the request offers tools: (name, arguments), or None to answer with
    # text; unset, it calls the first tool with {"query": <reply>}
    tool_call: Callable[[dict[str, Any]], tuple[str, dict[str, Any]] | None] | None = None
    failures: list[Failure] = field(default_factory=list)  # consumed one per request
    cut_stream_after: int | None = None  # close the SSE stream after this many chunks
    stall_stream_after: int | None = None  # go silent (for an hour) after this many chunks
    # send `data: {"error": {"message": ...}}` after this many chunks (and end the stream)
    error_stream_after: int | None = None
    stream_error_message: str = "scripted stream error"
    model_name: str = "upstream-model"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def fail(
        self,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        message: str = "scripted failure",
    ) -> None:
        self.failures.extend(Failure(status, message, retry_after) for _ in range(times))


def _logprobs(tokens: list[str], top: int) -> dict[str, Any]:
    content = []
    for i, tok in enumerate(tokens):
        lp = -0.05 * (i % 3)
        entry = {"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": []}
        for k in range(top):
            alt = tok if k == 0 else f"{tok}~{k}"
            entry["top_logprobs"].append(
                {"token": alt, "logprob": lp - k, "bytes": list(alt.encode())}
            )
        content.append(entry)
    return {"content": content, "refusal": None}


def _tool_calls(
    body: dict[str, Any], text: str, behaviour: UpstreamBehaviour
) -> list[dict[str, Any]] | None:
    tools = body.get("tools") or []
    if not tools or body.get("tool_choice") == "none":
        return None
    if behaviour.tool_call is not None:
        chosen = behaviour.tool_call(body)
        if chosen is None:
            return None
        name, arguments = chosen
    else:
        name, arguments = tools[0]["function"]["name"], {"query": text}
    return [
        {
            # a digest, not hash(): the same answer gets the same id in every run
            "id": "call_" + str(zlib.crc32(orjson.dumps([name, arguments, text])) % 10**8),
            "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
        }
    ]


def build_app(behaviour: UpstreamBehaviour) -> Starlette:
    async def chat(request: Request) -> Response:
        try:
            return await answer(request)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            # A request it cannot make sense of is the client's error, as with a real API.
            error = {
                "message": f"invalid request: {type(err).__name__}: {err}",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
            return Response(orjson.dumps({"error": error}), 400, media_type="application/json")

    async def answer(request: Request) -> Response:
        raw = await request.body()
        body = orjson.loads(raw)
        behaviour.requests.append(body)
        behaviour.headers.append(dict(request.headers))
        if behaviour.latency:
            await asyncio.sleep(behaviour.latency)
        if behaviour.failures:
            failure = behaviour.failures.pop(0)
            headers = {}
            if failure.retry_after is not None:
                headers["retry-after"] = str(failure.retry_after)
            error = {
                "message": failure.message,
                "type": "server_error",
                "param": None,
                "code": str(failure.status),
            }
            return Response(
                orjson.dumps({"error": error}),
                failure.status,
                headers,
                media_type="application/json",
            )
        text = behaviour.reply(body)
        tokens = _words(text) or [""]
        prompt_tokens = sum(len(_words(message_text(m))) for m in body.get("messages", []))
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(tokens),
            "total_tokens": prompt_tokens + len(tokens),
        }
        tool_calls = _tool_calls(body, text, behaviour)
        finish = "tool_calls" if tool_calls else "stop"
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        if max_tokens and len(tokens) > max_tokens:
            tokens, finish = tokens[:max_tokens], "length"
            usage["completion_tokens"] = len(tokens)
        want_lp = bool(body.get("logprobs"))
        top = int(body.get("top_logprobs") or 0)
        created = int(time.time())
        cid = f"chatcmpl-{time.time_ns()}"
        if not body.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None if tool_calls else " ".join(tokens),
                "refusal": None,
            }
            if tool_calls:
                message["tool_calls"] = tool_calls
            choice = {
                "index": 0,
                "message": message,
                "finish_reason": finish,
                "logprobs": _logprobs(tokens, top) if want_lp else None,
            }
            payload = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": behaviour.model_name,
                "choices": [choice],
                "usage": usage,
                "system_fingerprint": "fp_test",
            }
            return Response(orjson.dumps(payload), media_type="application/json")

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(
            delta: dict[str, Any],
            finish_reason: str | None = None,
            lp: dict[str, Any] | None = None,
        ) -> bytes:
            c = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": behaviour.model_name,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": lp}
                ],
            }
            return b"data: " + orjson.dumps(c) + b"\n\n"

        async def events() -> Any:
            parts = [chunk({"role": "assistant", "content": ""})]
            if tool_calls:
                parts.append(chunk({"tool_calls": [{"index": 0, **tool_calls[0]}]}))
            else:
                for i, tok in enumerate(tokens):
                    piece = tok if i == 0 else " " + tok
                    parts.append(
                        chunk({"content": piece}, lp=_logprobs([tok], top) if want_lp else None)
                    )
            parts.append(chunk({}, finish))
            if include_usage:
                parts.append(
                    b"data: "
                    + orjson.dumps(
                        {
                            "id": cid,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": behaviour.model_name,
                            "choices": [],
                            "usage": usage,
                        }
                    )
                    + b"\n\n"
                )
            parts.append(b"data: [DONE]\n\n")
            for sent, part in enumerate(parts):
                if behaviour.cut_stream_after is not None and sent >= behaviour.cut_stream_after:
                    raise ConnectionResetError("scripted stream cut")
                if sent == behaviour.error_stream_after:
                    error = {"message": behaviour.stream_error_message, "type": "server_error"}
                    yield b"data: " + orjson.dumps({"error": error}) + b"\n\n"
                    return
                if (
                    behaviour.stall_stream_after is not None
                    and sent >= behaviour.stall_stream_after
                ):
                    await asyncio.sleep(3600)
                if behaviour.chunk_delay and sent:
                    await asyncio.sleep(behaviour.chunk_delay)
                yield part

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        data = {
            "object": "list",
            "data": [
                {"id": behaviour.model_name, "object": "model", "created": 0, "owned_by": "test"}
            ],
        }
        return Response(orjson.dumps(data), media_type="application/json")

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """Run an ASGI app with uvicorn on a loopback port in a background thread."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_upstream(
    behaviour: UpstreamBehaviour | None = None,
) -> Iterator[tuple[str, UpstreamBehaviour]]:
    """Yield (base_url ending in /v1, behaviour) of an upstream running on loopback."""
    behaviour = behaviour or UpstreamBehaviour()
    with ServerThread(build_app(behaviour)) as server:
        yield server.url + "/v1", behaviour


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    behaviour = UpstreamBehaviour(
        latency=args.latency_ms / 1000, chunk_delay=args.chunk_delay_ms / 1000
    )
    behaviour.requests = _Discard()  # type: ignore[assignment]
    behaviour.headers = _Discard()  # type: ignore[assignment]
    uvicorn.run(
        build_app(behaviour),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


class _Discard(list):  # type: ignore[type-arg]
    """A list that forgets: a long benchmark must not grow the upstream's memory."""

    def append(self, item: Any) -> None:
        pass


if __name__ == "__main__":
    main()
