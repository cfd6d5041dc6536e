"""OpenTelemetry: every call the gateway makes reaches a real OTLP/HTTP receiver on loopback as a
span with the GenAI semantic conventions, exported by the SDK's batch processor; without
`[telemetry]` opentelemetry is never imported, and configured without it is a ConfigError."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from stillhouse.config import parse_config
from stillhouse.errors import ConfigError
from stillhouse.gateway import create_app
from stillhouse.routing import RoutingTable, TaskRoute
from stillhouse.store import open_store

from .conftest import Gateway, make_config
from .otlp_receiver import running_receiver
from .upstream import ServerThread, running_upstream

FT = "ft:gpt-4.1-mini:acme::abc123"


def test_student_and_teacher_calls_are_spans_with_the_genai_attributes(tmp_path: Path) -> None:
    with (
        running_receiver() as (receiver_url, received),
        running_upstream() as (teacher_url, _),
        running_upstream() as (student_url, _),
    ):
        config = make_config(
            tmp_path,
            teacher_url,
            models={
                "student": {"provider": "openai-compatible", "base_url": student_url, "model": "s"}
            },
            tasks={"support": {"teacher": "teacher", "student": "student"}},
            telemetry={"otlp_endpoint": receiver_url, "service_name": "gw-test"},
        )
        serving = {"provider": "openai-compatible", "model": FT, "base_url": student_url}
        # threshold 0: the student is asked for logprobs (a confidence) and never falls back
        entry = TaskRoute(
            state="serving", share=1.0, candidate="cand_ft", serving=serving, threshold=0.0
        )
        app = create_app(config, routing=RoutingTable({"support": entry}))
        server = ServerThread(app).start()
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        try:
            deadline = time.monotonic() + 20
            while True:  # until the candidate is deployed (the teacher answers before)
                reply = client.chat.completions.with_raw_response.create(
                    model="support", messages=[{"role": "user", "content": "hi there"}], user="c-7"
                )
                if reply.headers.get("x-stillhouse-candidate") == "cand_ft":
                    break
                assert time.monotonic() < deadline, "the candidate was never served"
                time.sleep(0.05)
            stream = client.chat.completions.create(
                model="support",
                stream=True,
                messages=[{"role": "user", "content": "one two"}],
                extra_headers={"X-Stillhouse-Session": "c-8"},
            )
            assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        finally:
            server.stop()  # the lifespan's end exports what is queued
        with open_store(config.store.url) as store:
            calls = {c.id: c for c in store.list_calls(task="support")}

    assert set(received.content_types) == {"application/x-protobuf"}
    spans = {s.attributes["stillhouse.call_id"]: s for s in received.spans}
    assert spans.keys() == calls.keys()  # one span per captured call
    student = spans[reply.headers["x-stillhouse-call-id"]]
    call = calls[reply.headers["x-stillhouse-call-id"]]
    assert student.name == f"chat {FT}" and student.kind == Span.SPAN_KIND_CLIENT
    assert student.resource["service.name"] == "gw-test"
    assert student.attributes["gen_ai.operation.name"] == "chat"
    assert student.attributes["gen_ai.provider.name"] == "openai-compatible"
    assert student.attributes["gen_ai.request.model"] == FT
    assert student.attributes["gen_ai.usage.input_tokens"] == call.input_tokens == 2
    assert student.attributes["gen_ai.usage.output_tokens"] == call.output_tokens == 3
    assert student.attributes["gen_ai.conversation.id"] == "c-7"
    assert student.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert student.attributes["stillhouse.route"] == call.route_reason
    assert student.attributes["stillhouse.role"] == "student"
    assert student.attributes["stillhouse.candidate"] == "cand_ft"
    assert call.confidence is not None
    assert student.attributes["stillhouse.confidence"] == pytest.approx(call.confidence)
    assert student.start_ns == int(call.created_at * 1e9)
    assert student.end_ns - student.start_ns == pytest.approx(call.latency_ms * 1e6, abs=1000)
    assert student.status_code == Status.STATUS_CODE_UNSET
    streamed = [s for s in spans.values() if s.attributes["stillhouse.stream"]]
    assert len(streamed) == 1 and streamed[0].attributes["gen_ai.conversation.id"] == "c-8"
    assert streamed[0].attributes["gen_ai.usage.output_tokens"] == 3
    assert streamed[0].attributes["stillhouse.ttft_ms"] > 0


def test_a_failed_call_is_an_error_span(tmp_path: Path, gateway_factory, upstream) -> None:
    base_url, behaviour = upstream
    with running_receiver() as (receiver_url, received):
        gw: Gateway = gateway_factory(
            make_config(tmp_path, base_url, telemetry={"otlp_endpoint": receiver_url + "/"})
        )
        behaviour.fail(500, times=3, message="teacher down")
        client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="support", messages=[{"role": "user", "content": "a"}]
            )
        gw.stop()
    (span,) = received.spans
    assert span.status_code == Status.STATUS_CODE_ERROR
    assert "teacher down" in span.status_message
    assert span.attributes["error.type"] == "500"
    assert span.attributes["stillhouse.route"] == "no-student"
    assert "gen_ai.conversation.id" not in span.attributes  # no session key: no attribute


def test_the_endpoint_must_be_an_http_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"telemetry\.otlp_endpoint: must start with http"):
        parse_config({"telemetry": {"otlp_endpoint": "collector:4318"}}, tmp_path)
    with pytest.raises(ConfigError, match=r"telemetry\.sampling: unknown key"):
        parse_config({"telemetry": {"sampling": 1}}, tmp_path)


# Run in a fresh interpreter: opentelemetry is already imported in this one.
WITHOUT_OTEL = """
import sys
from pathlib import Path
from stillhouse.config import parse_config
from stillhouse.errors import ConfigError
from stillhouse.gateway import create_app

create_app(parse_config({{}}, Path({folder!r})))
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "imported without [telemetry]"
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
telemetry = {{"otlp_endpoint": "http://127.0.0.1:1"}}
try:
    create_app(parse_config({{"telemetry": telemetry}}, Path({folder!r})))
except ConfigError as err:
    print(err)
"""


def test_opentelemetry_is_imported_only_when_configured(tmp_path: Path) -> None:
    script = WITHOUT_OTEL.format(folder=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "telemetry.otlp_endpoint is set but OpenTelemetry is not installed: "
        "pip install 'stillhouse[otel]'"
    )
