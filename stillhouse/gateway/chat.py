"""POST /v1/chat/completions, top to bottom: parse, plan, call, fall back, capture.

The handler never waits on the store: capture is `CaptureWriter.submit`, a non-blocking put. Every
request that reaches an upstream is captured exactly once, whether it succeeded, failed upstream,
or was cut off by the client mid-stream. The route is decided once, by the planner (plan.py);
streams are relayed or held in streaming.py; shadow comparisons run in shadow.py.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..answers import confidence_of
from ..config import Config
from ..errors import UpstreamError
from ..openai.http import error_response, json_response, read_body
from ..openai.protocol import ChatCompletionRequest, parse_request
from ..providers import Provider, SharedSession
from ..routing import RoutingTable, needs_fallback
from ..store.writer import CaptureWriter
from .capture import Capture
from .deploy import Deployments
from .metrics import GatewayMetrics
from .overhead import stamped
from .plan import Exchange, Planner
from .shadow import Shadows
from .shape import CHAT, Shape
from .streaming import Streams
from .telemetry import Tracer


class ChatCompletions:
    def __init__(
        self,
        config: Config,
        providers: dict[str, Provider],
        writer: CaptureWriter,
        metrics: GatewayMetrics,
        routing: RoutingTable | None = None,
        session: SharedSession | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.routing = routing or RoutingTable()
        self.deployments = Deployments(config, providers, session or SharedSession())
        self.planner = Planner(config, providers, self.routing, self.deployments)
        self.capture = Capture(config, writer, metrics, tracer)
        self.shadows = Shadows(config, self.planner, self.capture)
        self.capture.after_student = self.shadows.maybe
        self.streams = Streams(config, self.planner, self.capture)

    async def __call__(self, request: Request) -> Response:
        started, created_at = time.perf_counter(), time.time()
        gateway = self.config.gateway
        raw = await read_body(request, gateway.max_body_bytes, gateway.read_timeout)
        body, checked = parse_request(raw)
        x = await self.plan(body, checked, request.headers, started, created_at)
        return await self.planned(x)

    async def plan(
        self,
        body: dict[str, Any],
        checked: ChatCompletionRequest,
        request_headers: Any,
        started: float,
        created_at: float,
        own: dict[str, Any] | None = None,
    ) -> Exchange:
        """The request's plan (Planner.plan), once a fine-tuned model it names is loaded; `own`
        is metadata of the gateway's for the call."""
        await self.deployments.fine_tuned.ready(checked.model)  # a first request loads one
        return self.planner.plan(body, checked, request_headers, started, created_at, own)

    async def planned(self, x: Exchange, shape: Shape = CHAT) -> Response:
        """A planned request answered and captured, shown to the client as `shape` has it."""
        if x.checked.stream:
            # held only where a task's threshold may replace it (a fine-tuned model has none)
            held = x.threshold is not None and (
                self.config.tasks[x.call.task].routing.stream_fallback == "buffer"
            )
            if held:
                return await self.streams.held(x, shape)
            return await self.streams.relay(x, shape)
        try:
            with x.clock.timing():
                response = await x.provider.complete(x.forward)
        except UpstreamError as err:
            self.capture.error(x.call, err, x.started)
            return self._stamped(x, error_response(err, x.headers))
        if x.threshold is not None and needs_fallback(
            self.config.tasks[x.call.task], x.entry, x.route, confidence_of(response), x.intent
        ):
            return self._stamped(x, await self._fallback(x, response, shape))
        self.capture.answer(x.call, response, x.started)
        return self._stamped(x, json_response(shape.whole(x, response), 200, x.headers))

    def _stamped(self, x: Exchange, response: Response) -> Response:
        return stamped(response, x.started, x.clock, self.metrics.overhead.labels(x.call.task))

    async def _fallback(self, x: Exchange, response: dict[str, Any], shape: Shape) -> Response:
        """The student was unsure: the teacher answers. Both calls are captured; the teacher's
        answer is a teacher call like any other, so curation learns from it. The teacher's call
        is stamped with what the user waited (student, then teacher): it is the call they got."""
        replaced = dataclasses.replace(x.call, route_reason="fallback:replaced")
        self.capture.answer(replaced, response, x.started)
        teacher = self.planner.teacher(x, "fallback", "fallback_of")
        try:
            with x.clock.timing():
                answer = await teacher.provider.complete(teacher.forward)
        except UpstreamError as err:
            # The teacher failed: the student's answer is better than an error.
            self.capture.error(teacher.call, err, x.started)
            return json_response(shape.whole(x, response), 200, x.headers)
        self.capture.answer(teacher.call, answer, x.started)
        return json_response(shape.whole(teacher, answer), 200, teacher.headers)
