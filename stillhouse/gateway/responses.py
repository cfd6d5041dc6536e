"""POST /v1/responses and GET /v1/responses/{id}: the Responses API bridged onto the chat route,
or sent natively to a teacher whose upstream speaks it (native.py).

A Responses request becomes a chat body (openai/responses.py), planned as any chat request. The
chat route answers it (call, fall back, capture: the captured call is the chat form, so curation
distils it, marked `metadata.response`), and its answer is shown back as a Response object or its
stream events; or, when the plan's teacher speaks the Responses API, the request goes to it as
sent and is captured in the same chat form. A response kept for `previous_response_id` and
retrieval goes to the store through the capture writer; the newest are kept in memory too, so a
request's path reads the database only for an older one, and then in a thread, never on the
event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import OrderedDict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import BadRequest, NotFound, UpstreamError
from ..openai.http import json_response, read_body
from ..openai.protocol import ChatCompletionRequest, load_body, validated
from ..openai.responses import (
    ResponsesRequest,
    chat_body,
    conversation,
    response_object,
    shell,
)
from ..openai.responses_stream import ResponseEvents, sse_event
from ..openai.stream import StreamAccumulator
from ..store import open_store
from ..store.records import StoredResponse, new_id
from ..store.writer import CaptureWriter
from .chat import ChatCompletions
from .native import NativeRequest, NativeResponses, native_upstream
from .plan import Exchange

RECENT = 4096  # responses kept in memory, newest first out of the store's way


class ResponseLog:
    """Kept responses: written through the capture writer, the newest also held in memory (the
    writer stores in batches, so a response must be found before it reaches the store)."""

    def __init__(self, store_url: str, writer: CaptureWriter, size: int = RECENT) -> None:
        self.store_url = store_url
        self.writer = writer
        self.size = size
        self._recent: OrderedDict[str, StoredResponse] = OrderedDict()

    def keep(self, stored: StoredResponse) -> None:
        self._recent[stored.id] = stored
        while len(self._recent) > self.size:
            self._recent.popitem(last=False)
        self.writer.submit(stored)

    async def find(self, response_id: str) -> StoredResponse | None:
        if response_id in self._recent:
            return self._recent[response_id]
        return await asyncio.to_thread(self._read, response_id)

    def _read(self, response_id: str) -> StoredResponse | None:
        with open_store(self.store_url) as store:
            return store.get_response(response_id)


class ResponsesShape:
    """One request's answer as a Response (whole) or its events (streamed); the answer kept
    once the client has it all, unless the request said `store: false`."""

    def __init__(
        self,
        request: ResponsesRequest,
        response_id: str,
        created_at: float,
        chat: dict[str, Any],
        log: ResponseLog,
    ) -> None:
        self.request = request
        self.chat = chat
        self.log = log
        self.start = shell(request, response_id, created_at)
        self.events = ResponseEvents(self.start)

    def _keep(self, x: Exchange, completion: dict[str, Any], response: dict[str, Any]) -> None:
        if self.request.store is False:
            return
        message = ((completion.get("choices") or [{}])[0]).get("message") or {}
        self.log.keep(
            StoredResponse(
                id=response["id"],
                task=x.call.task,
                call_id=x.call.id,
                conversation=conversation(self.chat, message),
                response=response,
            )
        )

    def whole(self, x: Exchange, completion: dict[str, Any]) -> dict[str, Any]:
        response = response_object(self.start, completion)
        self._keep(x, completion, response)
        return response

    def opening(self, x: Exchange) -> bytes:
        return b"".join(sse_event(e) for e in self.events.opening())

    def chunk(self, x: Exchange, chunk: dict[str, Any], wants_usage: bool) -> bytes:
        return b"".join(sse_event(e) for e in self.events.add(chunk))

    def closing(self, x: Exchange, acc: StreamAccumulator) -> bytes:
        events = self.events.closing()
        self._keep(x, acc.response(), self.events.response())
        return b"".join(sse_event(e) for e in events)

    def failed(self, x: Exchange, err: UpstreamError) -> bytes:
        return b"".join(sse_event(e) for e in self.events.failed(err.to_body()["error"]))


class Responses:
    def __init__(self, chat: ChatCompletions, log: ResponseLog) -> None:
        self.chat = chat
        self.log = log
        self.config = chat.config
        self.native = NativeResponses(chat.capture, log.keep)

    async def create(self, request: Request) -> Response:
        started, created_at = time.perf_counter(), time.time()
        gateway = self.config.gateway
        raw = await read_body(request, gateway.max_body_bytes, gateway.read_timeout)
        sent = load_body(raw)
        checked = validated(ResponsesRequest, sent)
        history: list[dict[str, Any]] = []
        if checked.previous_response_id is not None:
            previous = await self.log.find(checked.previous_response_id)
            if previous is None:
                raise NotFound(
                    f"previous_response_id: no response '{checked.previous_response_id}' is "
                    "kept (unknown, or created with store: false)",
                    param="previous_response_id",
                    code="previous_response_not_found",
                )
            history = previous.conversation
        body = chat_body(checked, history)
        if not any(m["role"] != "system" for m in body["messages"]):
            raise BadRequest("input: holds no message", param="input", code="invalid_value")
        chat_checked = validated(ChatCompletionRequest, body)
        response_id = new_id("resp")
        mark: dict[str, Any] = {"id": response_id, "store": checked.store is not False}
        if checked.previous_response_id is not None:
            mark["previous_response_id"] = checked.previous_response_id
        own = {"response": mark}
        x = await self.chat.plan(body, chat_checked, request.headers, started, created_at, own)
        upstream = native_upstream(x)
        if upstream is not None:
            metadata = {**x.call.metadata, "response": {**mark, "native": True}}
            x = x.replace(call=dataclasses.replace(x.call, metadata=metadata))
            native = NativeRequest.of(sent, x.call.upstream_model, history, response_id)
            return await self.native.answer(x, upstream, native)
        shape = ResponsesShape(checked, response_id, created_at, body, self.log)
        return await self.chat.planned(x, shape)

    async def retrieve(self, request: Request) -> Response:
        response_id = request.path_params["response_id"]
        stored = await self.log.find(response_id)
        if stored is None:
            raise NotFound(
                f"no response '{response_id}' is kept (unknown, or created with store: false)",
                param="response_id",
                code="response_not_found",
            )
        return json_response(stored.response)
