"""A real OTLP/HTTP trace receiver on loopback: POST /v1/traces with a protobuf
`ExportTraceServiceRequest` (gzip or not), answered with an `ExportTraceServiceResponse`, as a
collector does. It keeps every span it decoded, its attributes as plain Python values."""

from __future__ import annotations

import contextlib
import gzip
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .upstream import ServerThread

PROTOBUF = "application/x-protobuf"


def value_of(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class ReceivedSpan:
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    resource: dict[str, Any]


@dataclass
class Received:
    spans: list[ReceivedSpan] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: value_of(a.value) for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans.append(
                            ReceivedSpan(
                                name=span.name,
                                kind=span.kind,
                                start_ns=span.start_time_unix_nano,
                                end_ns=span.end_time_unix_nano,
                                attributes={a.key: value_of(a.value) for a in span.attributes},
                                status_code=span.status.code,
                                status_message=span.status.message,
                                resource=resource,
                            )
                        )


def build_app(received: Received) -> Starlette:
    async def traces(request: Request) -> Response:
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        received.content_types.append(request.headers.get("content-type", ""))
        if request.headers.get("content-type") != PROTOBUF:
            return Response(b"", 415)
        received.add(body)
        return Response(ExportTraceServiceResponse().SerializeToString(), 200, media_type=PROTOBUF)

    return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])


@contextlib.contextmanager
def running_receiver() -> Iterator[tuple[str, Received]]:
    """Yield (base URL, what it received) of a receiver running on loopback."""
    received = Received()
    server = ServerThread(build_app(received)).start()
    try:
        yield server.url, received
    finally:
        server.stop()
