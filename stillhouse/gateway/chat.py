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
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..answers import agree, answer_text, breaks_schema, first_message, routing_confidence
from ..config import Config
from ..errors import HTTPError, NotFound, PayloadTooLarge, RequestTimeout, UpstreamError
from ..lifecycle.deploy import Deployed, Deployments
from ..pricing import call_cost, price_for
from ..providers import Chunk, Provider, SharedSession
from ..routing import (
    Route,
    RoutingTable,
    TaskRoute,
    choose_route,
    fallback_threshold,
    intent_rules,
    needs_fallback,
    shadow_sampled,
)
from ..store.records import Call, Score, new_id
from ..store.writer import CaptureWriter
from .metrics import GatewayMetrics
from .protocol import (
    ChatCompletionRequest,
    call_metadata,
    header_value,
    parse_request,
    session_of,
    task_of,
    upstream_body,
)
from .stream import StreamAccumulator

log = logging.getLogger("stillhouse.gateway")

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def error_response(err: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(err.to_body()), err.status, headers, "application/json")


def openai_exception_handlers(server: str) -> dict[Any, Any]:
    """Starlette exception handlers that answer every error in the OpenAI shape, never a
    traceback: ours with their status, unknown routes as 404, anything else as a logged 500."""

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPError)
        return error_response(exc)

    async def on_starlette_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return error_response(NotFound(f"no route {request.url.path}", code="unknown_url"))
        err = HTTPError(str(exc.detail), status=exc.status_code, type="invalid_request_error")
        return error_response(err, dict(exc.headers or {}))  # a 405 keeps its Allow header

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(HTTPError(f"internal error in the Stillhouse {server}"))

    return {
        HTTPError: on_http_error,
        StarletteHTTPException: on_starlette_error,
        Exception: on_crash,
    }


async def read_body(request: Request, limit: int, timeout: float | None = None) -> bytes:
    """The whole body, up to `limit` bytes and within `timeout` seconds: a client that stalls
    mid-body would otherwise hold its connection (and a slot of the server's) for ever."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is over the {limit}-byte limit", code="body_too_large")
    parts, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for part in request.stream():
                size += len(part)
                if size > limit:
                    raise PayloadTooLarge(
                        f"request body is over the {limit}-byte limit", code="body_too_large"
                    )
                parts.append(part)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {timeout:g} s", code="body_timeout"
        ) from None
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
    """The number the router compares: the local engine's own, or the logprobs any
    OpenAI-compatible student returned, reduced the same way (answers.routing_confidence)."""
    return routing_confidence(response)


def ask_for_logprobs(forward: dict[str, Any]) -> bool:
    """Ask a student for its token logprobs when the route falls back on confidence; True when
    the client had not asked, so they are taken out of what it gets back."""
    if forward.get("logprobs"):
        return False
    forward["logprobs"] = True
    return True


def without_logprobs(payload: dict[str, Any]) -> dict[str, Any]:
    """A response or stream chunk without the logprobs the gateway asked for on its own."""
    choices = payload.get("choices")
    if not isinstance(choices, list) or not any(
        isinstance(c, dict) and c.get("logprobs") is not None for c in choices
    ):
        return payload
    cleaned = [{**c, "logprobs": None} if isinstance(c, dict) else c for c in choices]
    return {**payload, "choices": cleaned}


def _estimate_input_tokens(body: dict[str, Any]) -> int:
    """About four characters a token, when the upstream reports no usage."""
    return max(1, len(orjson.dumps(body.get("messages", []))) // 4)


class _Replay:
    """A provider that streams chunks already received (a held student stream)."""

    def __init__(self, chunks: list[Chunk], provider: Provider) -> None:
        self.chunks = chunks
        self.name = provider.name
        self.config = provider.config

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[Chunk]:
        for chunk in self.chunks:
            yield chunk


class ChatCompletions:
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        writer: CaptureWriter,
        metrics: GatewayMetrics,
        routing: RoutingTable | None = None,
        session: SharedSession | None = None,
    ) -> None:
        self.config = config
        self.providers = providers
        self.writer = writer
        self.metrics = metrics
        self.routing = routing or RoutingTable()
        self.deployments = Deployments(config, providers, session or SharedSession())
        self._background: set[asyncio.Task[None]] = set()  # shadow calls, held until done

    async def __call__(self, request: Request) -> Response:
        started = time.perf_counter()
        created_at = time.time()
        gateway = self.config.gateway
        raw = await read_body(request, gateway.max_body_bytes, gateway.read_timeout)
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
        call_id = new_id("call")
        session_key = session_of(checked, request.headers)
        entry = self.routing.get(task_name)
        route = choose_route(task, entry, name=task_name, key=session_key or call_id)
        # per-intent rules; the intent comes from memory (metadata.intent or the snapshot's model)
        intent = self.routing.intent_of(task_name, checked.metadata, body)
        route = intent_rules(task, entry, route, intent, name=task_name)
        deployed: Deployed | None = None
        if route.role == "student":
            deployed = self.deployments.pick(task_name, task, entry, route)
            if deployed is None:  # its candidate is still loading and no student served before
                route = Route("teacher", task.teacher, "deploying")
        model = self.config.models[route.model]
        metadata = call_metadata(checked.metadata)  # a caller's reserved keys: under `client`
        if deployed is not None and deployed.candidate is not None:
            metadata["candidate"] = deployed.candidate
        call = Call(
            id=call_id,
            task=task_name,
            request=body,
            role=route.role,
            model=route.model,
            provider=model.provider,
            upstream_model=deployed.upstream_model if deployed else model.model,
            route_reason=route.reason,
            stream=bool(checked.stream),
            created_at=created_at,
            session_key=session_key,
            metadata=metadata,
        )
        headers = {
            "x-stillhouse-call-id": call.id,
            "x-stillhouse-task": task_name,
            "x-stillhouse-route": route.role,
        }
        if intent is not None:
            headers["x-stillhouse-intent"] = header_value(intent)
            if "intent" not in call.metadata:  # the caller's own intent is kept as sent
                routed = {**call.metadata, "routed_intent": intent}
                call = dataclasses.replace(call, metadata=routed)
        if "candidate" in metadata:
            headers["x-stillhouse-candidate"] = header_value(str(metadata["candidate"]))
        forward = upstream_body(body, call.upstream_model)
        if deployed is not None:
            forward = deployed.body(forward)
        provider = deployed.provider if deployed else self.providers[route.model]
        threshold = fallback_threshold(task, entry, route)
        hide_logprobs = threshold is not None and ask_for_logprobs(forward)
        if checked.stream:
            held = task.routing.stream_fallback == "buffer"
            if held and threshold is not None:
                # hold the student's stream until its confidence is known (see
                # docs/lifecycle.md for the time to first token this costs)
                return await self._buffered(
                    call, route, provider, forward, checked, started, headers, entry, hide_logprobs
                )
            return await self._stream(
                call, route, provider, forward, checked, started, headers, hide_logprobs
            )
        try:
            response = await provider.complete(forward)
        except UpstreamError as err:
            self._capture_error(call, err, started)
            return error_response(err, headers)
        if needs_fallback(task, entry, route, _confidence(response)):
            return await self._fallback(call, response, body, started, headers, hide_logprobs)
        self._capture(call, response, started, ttft_ms=None)
        shown = without_logprobs(response) if hide_logprobs else response
        return Response(orjson.dumps(shown), 200, headers, "application/json")

    # -- confidence fallback and shadow sampling ---------------------------------------------
    def _teacher_call(self, of: Call, reason: str, link: str) -> tuple[Call, dict[str, Any]]:
        teacher = self.config.tasks[of.task].teacher
        model = self.config.models[teacher]
        call = dataclasses.replace(
            of,
            id=new_id("call"),
            role="teacher",
            model=teacher,
            provider=model.provider,
            upstream_model=model.model,
            route_reason=reason,
            stream=False,
            created_at=time.time(),
            metadata={**of.metadata, link: of.id},
        )
        forward = upstream_body(of.request, model.model)
        forward.pop("stream", None)
        forward.pop("stream_options", None)
        return call, forward

    async def _fallback(
        self,
        student: Call,
        response: dict[str, Any],
        body: dict[str, Any],
        started: float,
        headers: dict[str, str],
        hide_logprobs: bool = False,
    ) -> Response:
        """The student was unsure: the teacher answers. Both calls are captured; the teacher's
        answer is a teacher call like any other, so curation learns from it. The teacher's call
        is stamped with what the user waited (student, then teacher): it is the call they got."""
        call, forward = self._teacher_call(student, "fallback", "fallback_of")
        self._capture(
            dataclasses.replace(student, route_reason="fallback:replaced"),
            response,
            started,
            ttft_ms=None,
        )
        try:
            answer = await self.providers[call.model].complete(forward)
        except UpstreamError as err:
            # The teacher failed: the student's answer is better than an error.
            self._capture_error(call, err, started)
            shown = without_logprobs(response) if hide_logprobs else response
            return Response(orjson.dumps(shown), 200, headers, "application/json")
        self._capture(call, answer, started, ttft_ms=None)
        headers = {**headers, "x-stillhouse-route": "fallback"}
        return Response(orjson.dumps(answer), 200, headers, "application/json")

    def _maybe_shadow(self, student: Call) -> None:
        task = self.config.tasks.get(student.task)
        if task is None or student.status != "ok" or student.response is None:
            return
        if student.route_reason.startswith("fallback") or not shadow_sampled(
            task, student.role, student.id
        ):
            return
        job = asyncio.get_running_loop().create_task(self._shadow(student))
        self._background.add(job)
        job.add_done_callback(self._background.discard)

    async def _shadow(self, student: Call) -> None:
        """In the background, after the user has the student's answer: ask the teacher too,
        capture its answer and store how well the two agree as a score on the student's call."""
        call, forward = self._teacher_call(student, "shadow", "shadow_of")
        started = time.perf_counter()
        try:
            answer = await self.providers[call.model].complete(forward)
        except UpstreamError as err:
            self._capture_error(call, err, started)
            return
        except Exception:  # never let a background comparison crash the loop
            log.exception("shadow call for %s failed", student.id)
            return
        self._capture(call, answer, started, ttft_ms=None)
        task = self.config.tasks[student.task]
        value: float | None = None
        label = None
        if breaks_schema(first_message(answer), task.response_schema):
            # Not a reference to agree with: curation drops such teacher answers from training
            # and so from the offline gate's holdout. Stored unscored, counted by the report.
            label = "teacher_off_schema"
        else:
            value = float(
                await asyncio.to_thread(  # a cosine may embed: off the event loop
                    agree, task.gate.metric, answer_text(answer), answer_text(student.response)
                )
            )
        self.writer.submit(
            Score(
                id=new_id("score"),
                call_id=student.id,
                name="shadow_agreement",
                value=value,
                label=label,
                source="shadow",
                comment=call.id,
            )
        )

    # -- streaming -------------------------------------------------------------------------
    async def _buffered(
        self,
        call: Call,
        route: Route,
        provider: Provider,
        forward: dict[str, Any],
        checked: ChatCompletionRequest,
        started: float,
        headers: dict[str, str],
        entry: TaskRoute | None,
        hide_logprobs: bool = False,
    ) -> Response:
        """A student stream held whole until its confidence is known: then its events are
        sent, or, under the threshold, the teacher's stream is (route fallback), stamped with
        the time since the user asked."""
        forward["stream_options"] = {**(checked.stream_options or {}), "include_usage": True}
        acc = StreamAccumulator(started)
        held: list[Chunk] = []
        chunks = provider.stream(forward)
        try:
            async for chunk in chunks:
                acc.add(chunk)
                held.append(chunk)
        except UpstreamError as err:
            self._capture_error(call, err, started)  # nothing was sent: a proper HTTP error
            return error_response(err, headers)
        except asyncio.CancelledError:
            self._capture_stream(call, acc, started, "client disconnected before the answer", 499)
            raise
        finally:
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
        task = self.config.tasks[call.task]
        if not needs_fallback(task, entry, route, _confidence(acc.response())):
            return await self._stream(
                call,
                route,
                _Replay(held, provider),
                forward,
                checked,
                started,
                headers,
                hide_logprobs,
            )
        self._capture_stream(
            dataclasses.replace(call, route_reason="fallback:replaced"), acc, started, None, 200
        )
        teacher, body = self._teacher_call(call, "fallback", "fallback_of")
        teacher = dataclasses.replace(teacher, stream=True)
        body["stream"] = True
        headers = {**headers, "x-stillhouse-route": "fallback"}
        headers.pop("x-stillhouse-candidate", None)
        return await self._stream(
            teacher,
            Route("teacher", teacher.model, "fallback"),
            self.providers[teacher.model],
            body,
            checked,
            started,
            headers,
        )

    async def _stream(
        self,
        call: Call,
        route: Route,
        provider: Provider,
        forward: dict[str, Any],
        checked: ChatCompletionRequest,
        started: float,
        headers: dict[str, str],
        hide_logprobs: bool = False,
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
                        yield sse(without_logprobs(chunk) if hide_logprobs else chunk)
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
        if final.role == "student":
            self._maybe_shadow(final)
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
            cost=call_cost(
                price_for(self.config.models[call.model]), tokens_in, tokens_out, cached
            ),
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
            cost=call_cost(
                price_for(self.config.models[call.model]), tokens_in, tokens_out, cached
            ),
            finish_reason=acc.finish_reason,
            metadata=metadata,
            confidence=_confidence(response),
        )
