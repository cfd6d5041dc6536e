"""OpenTelemetry spans of the gateway's calls, one per captured call, with the GenAI semantic
conventions (`gen_ai.*`) and the gateway's own `stillhouse.*` attributes.

Only with `[telemetry] otlp_endpoint` set, and only then is opentelemetry imported (the `otel`
extra). It must never block a request: a span is handed to the SDK's BatchSpanProcessor, whose
own thread exports it over OTLP/HTTP. The app keeps its own TracerProvider (no process globals).
"""

from __future__ import annotations

from typing import Any

from ..config import TelemetryConfig
from ..errors import ConfigError
from ..store.records import Call

TRACES_PATH = "/v1/traces"
INSTALL_HINT = "pip install 'stillhouse[otel]'"

# gen_ai.provider.name's well-known values; other providers keep their stillhouse.toml name
PROVIDER_NAMES = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic"}


def traces_url(endpoint: str) -> str:
    """The collector's base URL with the traces path (OTLP/HTTP's `/v1/traces`) added once."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


def span_attributes(call: Call) -> dict[str, Any]:
    """A finished call as span attributes. None-valued ones are left out (OTel drops them)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": PROVIDER_NAMES.get(call.provider, call.provider),
        "gen_ai.request.model": call.upstream_model,
        "gen_ai.usage.input_tokens": call.input_tokens,
        "gen_ai.usage.output_tokens": call.output_tokens,
        "gen_ai.conversation.id": call.session_key,
        "gen_ai.response.finish_reasons": [call.finish_reason] if call.finish_reason else None,
        "stillhouse.call_id": call.id,
        "stillhouse.task": call.task,
        "stillhouse.role": call.role,
        "stillhouse.route": call.route_reason,
        "stillhouse.candidate": _text(call.metadata.get("candidate")),
        "stillhouse.confidence": call.confidence,
        "stillhouse.stream": call.stream,
        "stillhouse.ttft_ms": call.ttft_ms,
    }
    if call.status == "error":
        attributes["error.type"] = str(call.http_status)
    return {k: v for k, v in attributes.items() if v is not None}


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class Tracer:
    """Turns finished calls into spans (start: the call's created_at; end: + its latency)."""

    def __init__(self, config: TelemetryConfig) -> None:
        assert config.otlp_endpoint is not None
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace import SpanKind, Status, StatusCode
        except ImportError:
            raise ConfigError(
                f"telemetry.otlp_endpoint is set but OpenTelemetry is not installed: {INSTALL_HINT}"
            ) from None
        headers = {}
        for name, secret in config.headers.items():
            try:
                headers[name] = secret.reveal()
            except ConfigError as err:
                raise ConfigError(f"telemetry.headers.{name}: {err}") from None
        self.url = traces_url(config.otlp_endpoint)
        self._kind = SpanKind.CLIENT
        self._error = lambda message: Status(StatusCode.ERROR, message)
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name})
        )
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=self.url, headers=headers))
        )
        self.tracer = self.provider.get_tracer("stillhouse.gateway")

    def record(self, call: Call) -> None:
        """One span for `call`, queued for the exporter's thread (never waits on the network)."""
        start = int(call.created_at * 1e9)
        span = self.tracer.start_span(
            f"chat {call.upstream_model}",
            kind=self._kind,
            attributes=span_attributes(call),
            start_time=start,
        )
        if call.status == "error":
            span.set_status(self._error(call.error or f"HTTP {call.http_status}"))
        span.end(end_time=start + int((call.latency_ms or 0.0) * 1e6))

    def close(self) -> None:
        """Export what is queued (bounded by the SDK's export timeout) and stop its thread."""
        self.provider.shutdown()
