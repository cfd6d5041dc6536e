"""POST /v1/chat/completions: route, call the upstream, answer, capture.

The handler never waits on the store: capture is `CaptureWriter.submit`, a non-blocking put. Every
request that reaches an upstream is captured exactly once, whether it succeeded, failed upstream,
or was cut off by the client mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..config import Config
from ..errors import NotFound, PayloadTooLarge, UpstreamError
from ..pricing import call_cost
from ..providers import Chunk, Provider
from ..routing import Route, choose_route
from ..store.records import Call, new_id
from ..store.writer import CaptureWriter
from .metrics import GatewayMetrics
from .protocol import ChatCompletionRequest, parse_request, session_of, task_of, upstream_body
from .stream import StreamAccumulator

log = logging.getLogger("stillhouse.gateway")

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_response(err: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(err.to_body()), err.status, headers, "application/json")


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is over the {limit}-byte limit", code="body_too_large")
    parts, size = [], 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(
                f"request body is over the {limit}-byte limit", code="body_too_large"
            )
        parts.append(part)
    return b"".join(parts)


def _usage(response: dict[str, Any] | None) -> tuple[int | None, int | None, int]:
    usage = (response or {}).get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return (
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        details.get("cached_tokens") or 0,
    )


def _confidence(response: dict[str, Any] | None) -> float | None:
    """The low-quantile token confidence a local model reports in its `stillhouse` field."""
    own = (response or {}).get("stillhouse")
    value = (own.get("confidence") or {}).get("p10") if isinstance(own, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _estimate_input_tokens(body: dict[str, Any]) -> int:
    """About four characters a token, when the upstream reports no usage."""
    return max(1, len(orjson.dumps(body.get("messages", []))) // 4)


class ChatCompletions:
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        writer: CaptureWriter,
        metrics: GatewayMetrics,
    ) -> None:
        self.config = config
        self.providers = providers
        self.writer = writer
        self.metrics = metrics

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        created_at = time.time()
        raw = await read_body(request, self.config.gateway.max_body_bytes)
        body, checked = parse_request(raw)
        task_name = task_of(checked, request.headers)
        task = self.config.tasks.get(task_name)
        if task is None:
            known = ", ".join(sorted(self.config.tasks)) or "none configured"
            raise NotFound(
                f"unknown task '{task_name}' (tasks: {known}); name the task in `model`, "
                "the X-Stillhouse-Task header or metadata.task",
                param="model",
                code="model_not_found",
            )
        route = choose_route(task)
        model = self.config.models[route.model]
        call = Call(
            id=new_id("call"),
            task=task_name,
            request=body,
            role=route.role,
            model=route.model,
            provider=model.provider,
            upstream_model=model.model,
            route_reason=route.reason,
            stream=bool(checked.stream),
            created_at=created_at,
            session_key=session_of(checked, request.headers),
            metadata=dict(checked.metadata or {}),
        )
        headers = {
            "x-stillhouse-call-id": call.id,
            "x-stillhouse-task": task_name,
            "x-stillhouse-route": route.role,
        }
        forward = upstream_body(body, model.model)
        provider = self.providers[route.model]
        if checked.stream:
            return await self._stream(call, route, provider, forward, checked, started, headers)
        try:
            response = await provider.complete(forward)
        except UpstreamError as err:
            self._capture_error(call, err, started)
            return error_response(err, headers)
        self._capture(call, response, started, ttft_ms=None)
        return Response(orjson.dumps(response), 200, headers, "application/json")

    # -- streaming -------------------------------------------------------------------------
    async def _stream(
        self,
        call: Call,
        route: Route,
        provider: Provider,
        forward: dict[str, Any],
        checked: ChatCompletionRequest,
        started: float,
        headers: dict[str, str],
    ) -> Response:
        wants_usage = bool((checked.stream_options or {}).get("include_usage"))
        forward["stream_options"] = {**(checked.stream_options or {}), "include_usage": True}
        chunks = provider.stream(forward)
        acc = StreamAccumulator(started)
        try:
            first: Chunk | None = await anext(chunks)
        except StopAsyncIteration:
            first = None
        except UpstreamError as err:
            # Nothing sent yet: the client gets a proper HTTP error status.
            self._capture_error(call, err, started)
            return error_response(err, headers)

        async def events() -> AsyncIterator[bytes]:
            # The call is captured before the stream's last event goes out, so a client that has
            # the whole answer can count on it being journaled.
            captured = False

            def capture(error: str | None = None, http_status: int = 200) -> None:
                nonlocal captured
                if not captured:
                    captured = True
                    self._capture_stream(call, acc, started, error, http_status)

            try:
                pending = [first] if first is not None else []
                while True:
                    if pending:
                        chunk = pending.pop()
                    else:
                        try:
                            chunk = await anext(chunks)
                        except StopAsyncIteration:
                            break
                    acc.add(chunk)
                    if wants_usage or chunk.get("choices"):
                        yield sse(chunk)
                capture()
                yield DONE
            except UpstreamError as err:
                self.metrics.upstream_errors.labels(call.model).inc()
                capture(err.message, err.status)
                yield sse(err.to_body())
            except (asyncio.CancelledError, GeneratorExit):
                capture("client disconnected before the stream ended", 499)
                raise
            finally:
                capture("the stream ended unexpectedly", 500)  # no-op when captured above
                # Cancelled mid-close (client gone): nothing is left to free.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await chunks.aclose()  # type: ignore[attr-defined]

        return StreamingResponse(events(), 200, headers, media_type="text/event-stream")

    # -- capture -----------------------------------------------------------------------------
    def _finish(self, call: Call, started: float, **fields: Any) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        final = dataclasses.replace(call, latency_ms=latency_ms, **fields)
        self.writer.submit(final)
        self.metrics.requests.labels(call.task, call.role, str(final.http_status)).inc()
        self.metrics.latency.labels(call.task, call.role).observe(latency_ms / 1000)

    def _capture(
        self, call: Call, response: dict[str, Any], started: float, ttft_ms: float | None
    ) -> None:
        tokens_in, tokens_out, cached = _usage(response)
        choices = response.get("choices") or [{}]
        self._finish(
            call,
            started,
            response=response,
            ttft_ms=ttft_ms,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost=call_cost(self.config.models[call.model].price, tokens_in, tokens_out, cached),
            finish_reason=choices[0].get("finish_reason"),
            confidence=_confidence(response),
        )

    def _capture_error(self, call: Call, err: UpstreamError, started: float) -> None:
        self.metrics.upstream_errors.labels(call.model).inc()
        self._finish(call, started, status="error", http_status=err.status, error=err.message)

    def _capture_stream(
        self,
        call: Call,
        acc: StreamAccumulator,
        started: float,
        error: str | None,
        http_status: int,
    ) -> None:
        response = acc.response()
        tokens_in, tokens_out, cached = _usage(response)
        metadata = call.metadata
        if tokens_out is None:
            tokens_in = _estimate_input_tokens(call.request)
            tokens_out = acc.content_chunks
            metadata = {**metadata, "usage_estimated": True}
        self._finish(
            call,
            started,
            response=response if acc.chunks else None,
            status="error" if error else "ok",
            http_status=http_status,
            error=error,
            ttft_ms=acc.ttft_ms,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost=call_cost(self.config.models[call.model].price, tokens_in, tokens_out, cached),
            finish_reason=acc.finish_reason,
            metadata=metadata,
            confidence=_confidence(response),
        )
