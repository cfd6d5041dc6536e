"""A Responses request answered natively by a teacher whose upstream speaks the Responses API
(OpenAI, Azure OpenAI): the body goes as the client sent it, the conversation so far expanded
from our store; the Response, or its stream events, come back as the upstream sent them, under
our id. Every other upstream, and every student, is bridged onto chat (responses.py).

Captured like a bridged call, in the chat form curation reads (openai/responses_native.py); an
upstream failure is captured, never lost. Never waits on the store.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response, StreamingResponse

from ..errors import UpstreamError
from ..openai.http import error_response, json_response
from ..openai.responses import conversation
from ..openai.responses_native import (
    ChatChunks,
    answer_message,
    completion_of,
    history_items,
    input_items,
)
from ..openai.responses_stream import ResponseEvents, sse_event
from ..openai.stream import StreamAccumulator
from ..providers import ResponsesUpstream
from ..store.records import StoredResponse
from .capture import Capture
from .overhead import stamp, stamped
from .plan import Exchange
from .protocol import upstream_body

FINISHED = ("response.completed", "response.incomplete")


def native_upstream(x: Exchange) -> ResponsesUpstream | None:
    """The teacher's provider when its upstream speaks the Responses API, else None (bridged). A
    student is always bridged: its confidence fallback, shadows, constrained decoding and prompt
    candidates all read and write chat completions."""
    if x.route.role == "teacher" and isinstance(x.provider, ResponsesUpstream):
        return x.provider
    return None


@dataclass(frozen=True, slots=True)
class NativeRequest:
    """What goes upstream, and what the client's Response says of itself."""

    body: dict[str, Any]
    response_id: str  # ours: `previous_response_id` and GET /v1/responses/{id} read our store
    previous_response_id: str | None
    store: bool

    @classmethod
    def of(
        cls,
        raw: dict[str, Any],
        upstream_model: str,
        history: list[dict[str, Any]],
        response_id: str,
    ) -> NativeRequest:
        """The client's body for the upstream: its model's name, our metadata keys out, and the
        conversation a `previous_response_id` names sent whole, since we keep it, not the
        upstream (`store: false` there: it keeps nothing it would never be asked for)."""
        body = upstream_body(raw, upstream_model)
        previous = body.pop("previous_response_id", None)
        if history:
            body["input"] = history_items(history) + input_items(body["input"])
        body["store"] = False
        return cls(body, response_id, previous, raw.get("store") is not False)

    def ours(self, response: dict[str, Any]) -> dict[str, Any]:
        """An upstream Response as the client gets it: under our id, as it asked."""
        return {
            **response,
            "id": self.response_id,
            "previous_response_id": self.previous_response_id,
            "store": self.store,
        }


class NativeResponses:
    def __init__(self, capture: Capture, keep: Callable[[StoredResponse], None]) -> None:
        self.capture = capture
        self.keep = keep

    def _keep(self, x: Exchange, request: NativeRequest, response: dict[str, Any]) -> None:
        if not request.store:
            return
        message = answer_message(response.get("output") or [])
        self.keep(
            StoredResponse(
                id=request.response_id,
                task=x.call.task,
                call_id=x.call.id,
                conversation=conversation(x.call.request, message),
                response=response,
            )
        )

    def _stamped(self, x: Exchange, response: Response) -> Response:
        overhead = self.capture.metrics.overhead.labels(x.call.task)
        return stamped(response, x.started, x.clock, overhead)

    async def answer(
        self, x: Exchange, upstream: ResponsesUpstream, request: NativeRequest
    ) -> Response:
        if x.checked.stream:
            return await self._stream(x, upstream, request)
        try:
            with x.clock.timing():
                response = await upstream.respond(request.body)
        except UpstreamError as err:
            self.capture.error(x.call, err, x.started)
            return self._stamped(x, error_response(err, x.headers))
        self.capture.answer(x.call, completion_of(response), x.started)
        shown = request.ours(response)
        self._keep(x, request, shown)
        return self._stamped(x, json_response(shown, 200, x.headers))

    async def _stream(
        self, x: Exchange, upstream: ResponsesUpstream, request: NativeRequest
    ) -> Response:
        """The upstream's events relayed as they come (a Response in one under our id), each
        also read as a chat chunk for the capture, which is done before the last goes out."""
        events = upstream.respond_stream(request.body)
        acc = StreamAccumulator(x.started)
        chunks = ChatChunks()
        try:
            with x.clock.timing():
                first = await anext(events)
        except UpstreamError as err:
            # Nothing sent yet: the client gets a proper HTTP error status.
            self.capture.error(x.call, err, x.started)
            return self._stamped(x, error_response(err, x.headers))

        async def relayed() -> AsyncIterator[bytes]:
            capture = self.capture.stream_once(x.call, acc, x.started)
            sequence = -1
            last: dict[str, Any] = {"id": request.response_id, "object": "response"}

            try:
                event: dict[str, Any] | None = first
                while event is not None:
                    if (chunk := chunks.of(event)) is not None:
                        acc.add(chunk)
                    sequence = event.get("sequence_number", sequence + 1)
                    if isinstance(event.get("response"), dict):
                        last = request.ours(event["response"])
                        event = {**event, "response": last}
                    if event.get("type") in FINISHED:
                        capture()
                        self._keep(x, request, last)
                    yield sse_event(event)
                    event = await anext(events, None)
            except UpstreamError as err:
                self.capture.metrics.upstream_errors.labels(x.call.model).inc()
                capture(err.message, err.status)
                failed = ResponseEvents(last, sequence + 1).failed(err.to_body()["error"])
                yield b"".join(sse_event(e) for e in failed)
            except (asyncio.CancelledError, GeneratorExit):
                capture("client disconnected before the stream ended", 499)
                raise
            finally:
                capture("the stream ended unexpectedly", 500)  # no-op when captured above
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await events.aclose()  # type: ignore[attr-defined]

        overhead = self.capture.metrics.overhead.labels(x.call.task)
        headers = stamp(x.headers, x.started, x.clock, overhead)
        return StreamingResponse(relayed(), 200, headers, media_type="text/event-stream")
