"""Every call the gateway makes, handed to the capture writer exactly once: its answer, usage,
cost, latency (from when the user asked), confidence, or its error.

Never waits on the store: `CaptureWriter.submit` is a non-blocking put. A student's call, once
captured, is offered to the shadow sampler (`after_student`); every call, to the tracer when
`[telemetry]` is set (a span queued for its exporter's thread, telemetry.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import orjson

from ..answers import routing_confidence
from ..config import Config
from ..errors import UpstreamError
from ..openai.stream import StreamAccumulator
from ..pricing import call_cost, price_for
from ..store.records import Call
from ..store.writer import CaptureWriter
from .metrics import GatewayMetrics
from .telemetry import Tracer


def usage_of(response: dict[str, Any] | None) -> tuple[int | None, int | None, int]:
    """(prompt tokens, completion tokens, cached prompt tokens) as the upstream reported them."""
    usage = (response or {}).get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return (
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        details.get("cached_tokens") or 0,
    )


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """About four characters a token, when the upstream reports no usage."""
    return max(1, len(orjson.dumps(body.get("messages", []))) // 4)


class Capture:
    def __init__(
        self,
        config: Config,
        writer: CaptureWriter,
        metrics: GatewayMetrics,
        tracer: Tracer | None = None,
    ) -> None:
        self.config = config
        self.writer = writer
        self.metrics = metrics
        self.tracer = tracer
        self.after_student: Callable[[Call], None] = lambda call: None

    def _finish(self, call: Call, started: float, **fields: Any) -> None:
        latency_ms = (time.perf_counter() - started) * 1000
        final = dataclasses.replace(call, latency_ms=latency_ms, **fields)
        self.writer.submit(final)
        if self.tracer is not None:
            self.tracer.record(final)
        if final.role == "student":
            self.after_student(final)
        self.metrics.requests.labels(call.task, call.role, str(final.http_status)).inc()
        self.metrics.latency.labels(call.task, call.role).observe(latency_ms / 1000)

    def _cost(self, call: Call, tokens_in: int | None, tokens_out: int | None, cached: int) -> Any:
        return call_cost(price_for(self.config.models[call.model]), tokens_in, tokens_out, cached)

    def answer(self, call: Call, response: dict[str, Any], started: float) -> None:
        """A whole (non-streamed) answer."""
        tokens_in, tokens_out, cached = usage_of(response)
        choices = response.get("choices") or [{}]
        self._finish(
            call,
            started,
            response=response,
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            cost=self._cost(call, tokens_in, tokens_out, cached),
            finish_reason=choices[0].get("finish_reason"),
            confidence=routing_confidence(response),
        )

    def error(self, call: Call, err: UpstreamError, started: float) -> None:
        """An upstream that failed before any answer reached the client."""
        self.metrics.upstream_errors.labels(call.model).inc()
        self._finish(call, started, status="error", http_status=err.status, error=err.message)

    def stream_once(
        self, call: Call, acc: StreamAccumulator, started: float
    ) -> Callable[..., None]:
        """`stream` for one relayed stream, written the first time it is called and never again
        (a stream ends, fails or is cut in several places; only the first of them is its end):
        `capture()` on a whole stream, `capture(error, http_status)` on a broken one."""
        captured = False

        def capture(error: str | None = None, http_status: int = 200) -> None:
            nonlocal captured
            if not captured:
                captured = True
                self.stream(call, acc, started, error, http_status)

        return capture

    def stream(
        self,
        call: Call,
        acc: StreamAccumulator,
        started: float,
        error: str | None,
        http_status: int,
    ) -> None:
        """A streamed answer as far as it went (whole, or cut off with `error`)."""
        response = acc.response()
        tokens_in, tokens_out, cached = usage_of(response)
        metadata = call.metadata
        if tokens_out is None:
            tokens_in = estimate_input_tokens(call.request)
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
            cost=self._cost(call, tokens_in, tokens_out, cached),
            finish_reason=acc.finish_reason,
            metadata=metadata,
            confidence=routing_confidence(response),
        )
