"""How the gateway serves a lifecycle's student: deploying a candidate on a vLLM-style server
(dynamic LoRA) or as a fine-tuned model id, streamed answers held for the confidence fallback and
shadow-sampled once they end, and the hallucination rate in a stage's gate.

The student in the streaming tests is the tiny Llama of tests/models.py with its trained adapter,
in process; the vLLM stand-in is a loopback HTTP server that records what it was asked (vLLM
itself needs a GPU)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stillhouse.config import Config, parse_config
from stillhouse.gateway import create_app
from stillhouse.lifecycle.rollout import Evidence, collect, judge
from stillhouse.routing import RoutingTable, TaskRoute
from stillhouse.store import Call, new_id, open_store

from .models import answer
from .upstream import ServerThread, UpstreamBehaviour, running_upstream


class VLLM:
    """A vLLM stand-in: /v1/load_lora_adapter registers a name; chat answers under any loaded
    name (or the base), and says which one answered."""

    def __init__(self) -> None:
        self.loaded: dict[str, str] = {}
        self.models: list[str] = []

    def app(self) -> Starlette:
        async def load(request: Request) -> Response:
            body = orjson.loads(await request.body())
            if body["lora_name"] in self.loaded:
                error = {"error": {"message": "The lora adapter has already been loaded."}}
                return Response(orjson.dumps(error), 400, media_type="application/json")
            self.loaded[body["lora_name"]] = body["lora_path"]
            return Response("Success: LoRA adapter loaded", media_type="text/plain")

        async def chat(request: Request) -> Response:
            body = orjson.loads(await request.body())
            self.models.append(body["model"])
            reply = {
                "id": "x",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": f"from {body['model']}"},
                        "finish_reason": "stop",
                    }
                ],
            }
            return Response(orjson.dumps(reply), media_type="application/json")

        return Starlette(
            routes=[
                Route("/v1/load_lora_adapter", load, methods=["POST"]),
                Route("/v1/chat/completions", chat, methods=["POST"]),
            ]
        )


def config_for(tmp_path: Path, teacher_url: str, student: dict[str, Any], **task: Any) -> Config:
    return parse_config(
        {
            "store": {"url": "sqlite:///serving.db"},
            "models": {
                "teacher": {
                    "provider": "openai-compatible",
                    "base_url": teacher_url,
                    "model": "big",
                    "max_retries": 0,
                },
                "student": student,
            },
            "tasks": {"support": {"teacher": "teacher", "student": "student", **task}},
        },
        tmp_path,
    )


@contextlib.contextmanager
def teacher_and_remote_student(
    teacher: UpstreamBehaviour, student: UpstreamBehaviour
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Two loopback upstreams: the teacher's URL, and the [models.x] table of a remote student
    (an OpenAI-compatible fine-tune) served by the other."""
    with (
        running_upstream(teacher) as (teacher_url, _),
        running_upstream(student) as (student_url, _),
    ):
        yield (
            teacher_url,
            {"provider": "openai-compatible", "base_url": student_url, "model": "ft:small"},
        )


def serve(config: Config, entry: TaskRoute) -> tuple[Any, ServerThread, openai.OpenAI]:
    table = RoutingTable({"support": entry})
    app = create_app(config, routing=table)
    server = ServerThread(app).start()
    return app, server, openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)


def ask_until(client: openai.OpenAI, header: str, value: str) -> Any:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        reply = client.chat.completions.with_raw_response.create(
            model="support", messages=[{"role": "user", "content": "hi"}]
        )
        if reply.headers.get(header) == value:
            return reply
        time.sleep(0.05)
    raise AssertionError(f"never answered with {header}: {value}")


def test_a_candidate_adapter_is_loaded_into_vllm_and_served_by_name(tmp_path: Path) -> None:
    vllm = VLLM()
    server = ServerThread(vllm.app()).start()
    with running_upstream() as (teacher_url, _):
        student = {"provider": "openai-compatible", "base_url": server.url + "/v1", "model": "b"}
        config = config_for(tmp_path, teacher_url, student)
        serving = {"provider": "local", "model": "b", "adapter": "/runs/cand_a/adapter"}
        entry = TaskRoute(state="rollout", share=1.0, candidate="cand_a", serving=serving)
        app, gateway, client = serve(config, entry)
        try:
            first = client.chat.completions.with_raw_response.create(
                model="support", messages=[{"role": "user", "content": "hi"}]
            )
            # nothing served before it and the adapter still loading: the teacher answers
            assert first.headers["x-stillhouse-route"] in ("teacher", "student")
            reply = ask_until(client, "x-stillhouse-candidate", "cand_a")
            assert reply.parse().choices[0].message.content == "from cand_a"
            assert vllm.loaded == {"cand_a": "/runs/cand_a/adapter"}
            assert app.state.writer.flush(10)
            with open_store(config.store.url) as store:
                call = store.get_call(reply.headers["x-stillhouse-call-id"])
            assert call is not None and call.upstream_model == "cand_a"
            assert call.metadata["candidate"] == "cand_a" and call.role == "student"
        finally:
            gateway.stop()
    server.stop()


def test_a_fine_tuned_candidate_is_served_by_its_model_id(tmp_path: Path) -> None:
    vllm = VLLM()  # stands in for the fine-tuning provider's endpoint
    server = ServerThread(vllm.app()).start()
    with running_upstream() as (teacher_url, _):
        student = {"provider": "openai-compatible", "base_url": server.url + "/v1", "model": "b"}
        config = config_for(tmp_path, teacher_url, student)
        ft = "ft:gpt-4.1-mini:acme::abc123"
        serving = {"provider": "openai-compatible", "model": ft, "base_url": server.url + "/v1"}
        entry = TaskRoute(state="serving", share=1.0, candidate="cand_ft", serving=serving)
        _, gateway, client = serve(config, entry)
        try:
            reply = ask_until(client, "x-stillhouse-candidate", "cand_ft")
            assert reply.parse().choices[0].message.content == f"from {ft}"
            assert not vllm.loaded
        finally:
            gateway.stop()
    server.stop()


@pytest.fixture
def local_student(tmp_path: Path, tiny_base: Path, trained: Any) -> Iterator[Any]:
    """The trained tiny student in process; a teacher that answers `teacher` for everything."""
    behaviour = UpstreamBehaviour(reply=lambda body: answer("teacher"))
    with running_upstream(behaviour) as (teacher_url, _):
        student = {
            "provider": "local",
            "model": str(tiny_base),
            "adapter": str(trained.adapter_dir),
        }

        def start(
            threshold: float | None, task: dict[str, Any] | None = None, **routing: Any
        ) -> tuple[Any, Any, Config]:
            config = config_for(
                tmp_path,
                teacher_url,
                student,
                routing={"shadow_rate": 1.0, **routing},
                **(task or {}),
            )
            entry = TaskRoute(state="rollout", share=1.0, threshold=threshold)
            app, server, client = serve(config, entry)
            started.append(server)
            return app, client, config

        started: list[ServerThread] = []
        yield start
        for server in started:
            server.stop()


def stream(client: openai.OpenAI) -> tuple[dict[str, str], str]:
    with client.chat.completions.with_streaming_response.create(
        model="support",
        messages=[{"role": "user", "content": "hello, refund please 12"}],
        stream=True,
    ) as response:
        text = "".join(
            (chunk.choices[0].delta.content or "") for chunk in response.parse() if chunk.choices
        )
        return dict(response.headers), text


def stored(app: Any, config: Config) -> list[Call]:
    assert app.state.writer.flush(10)
    with open_store(config.store.url) as store:
        return store.list_calls(task="support", limit=100)


def test_an_unsure_streamed_student_answer_is_replaced_by_the_teachers_stream(
    local_student: Any,
) -> None:
    # confidences are log-probabilities (<= 0): just under 0 is over any, so always unsure
    app, client, config = local_student(threshold=-1e-9)
    headers, text = stream(client)
    assert headers["x-stillhouse-route"] == "fallback" and json.loads(text) == {"intent": "teacher"}
    calls = {c.route_reason: c for c in stored(app, config)}
    assert set(calls) == {"fallback:replaced", "fallback"}
    student, teacher = calls["fallback:replaced"], calls["fallback"]
    assert student.role == "student" and json.loads(
        student.response["choices"][0]["message"]["content"]
    ) == {"intent": "refund"}  # the trained student's own answer, held back
    assert teacher.stream and teacher.metadata["fallback_of"] == student.id


def shadow_scores(app: Any, config: Config) -> tuple[Call, list[Any]]:
    """The student's call and the scores its shadow comparison left (waiting for them)."""
    deadline = time.monotonic() + 10
    while True:  # the teacher's shadow answer comes in the background, after the answer
        calls = stored(app, config)
        student = next(c for c in calls if c.role == "student")
        with open_store(config.store.url) as store:
            scores = store.scores_for(student.id)
        if scores or time.monotonic() > deadline:
            return student, scores
        time.sleep(0.05)


def test_a_sure_streamed_answer_is_sent_then_shadow_sampled(local_student: Any) -> None:
    app, client, config = local_student(threshold=-100.0)  # under any confidence: always sure
    headers, text = stream(client)
    assert headers["x-stillhouse-route"] == "student" and json.loads(text) == {"intent": "refund"}
    student, scores = shadow_scores(app, config)
    assert [(s.name, s.value) for s in scores] == [("shadow_agreement", 0.0)]
    assert student.stream and student.route_reason == "rollout:100%"


def test_a_teacher_answer_off_the_tasks_schema_is_no_reference(local_student: Any) -> None:
    """The teacher answers {"intent": "teacher"}, outside the task's declared intents: that
    shadow comparison is stored unscored (curation would not train on such an answer either),
    so it counts neither for nor against the student."""
    schema = {"type": "object", "properties": {"intent": {"enum": ["refund", "card_lost"]}}}
    app, client, config = local_student(threshold=-100.0, task={"response_schema": schema})
    headers, _ = stream(client)
    assert headers["x-stillhouse-route"] == "student"
    _, scores = shadow_scores(app, config)
    assert [(s.name, s.value, s.label) for s in scores] == [
        ("shadow_agreement", None, "teacher_off_schema")
    ]
    with open_store(config.store.url) as store:
        teacher = store.get_call(scores[0].comment)
    assert teacher is not None and teacher.route_reason == "shadow"  # its answer is kept


def test_without_buffering_a_stream_is_never_replaced(local_student: Any) -> None:
    _, client, _ = local_student(threshold=10.0, stream_fallback="none")
    headers, text = stream(client)
    assert headers["x-stillhouse-route"] == "student" and json.loads(text) == {"intent": "refund"}


def test_hallucinations_on_referenced_calls_fail_a_stage(tmp_path: Path, store_url: str) -> None:
    url = store_url
    config = config_for(
        tmp_path,
        "http://127.0.0.1:9/v1",
        {"provider": "openai", "model": "x"},
        gate={"metric": "json", "agreement": 0.6},
        rollout={"min_samples": 4, "min_dwell": 0, "max_hallucination_rate": 0.1},
    )
    task = config.tasks["support"]

    def call(candidate: str, said: str, reference: Any) -> Call:
        reply = {"choices": [{"message": {"role": "assistant", "content": said}}]}
        return Call(
            id=new_id("call"),
            task="support",
            request={"messages": [{"role": "user", "content": "order 7?"}]},
            role="student",
            response=reply,
            latency_ms=5.0,
            metadata={"candidate": candidate, "reference": reference},
        )

    truth = {"order": 7, "status": "shipped"}
    with open_store(url) as store:
        store.insert_calls(
            [call("good", json.dumps(truth), truth) for _ in range(10)]
            + [call("bad", '{"order": 7, "status": "lost"}', truth) for _ in range(10)]
        )
        good, bad = (
            collect(store, "support", 0, "good", "json"),
            collect(store, "support", 0, "bad", "json"),
        )
    assert good.hallucinations == [0.0] * 10 and bad.hallucinations == [1.0] * 10
    agreed = [1.0] * 10  # the teacher agreed every time: only the reference shows the lie
    verdict = judge(
        task,
        Evidence(
            student_latency=[5.0] * 10,
            teacher_latency=[9.0] * 10,
            shadow=agreed,
            hallucinations=bad.hallucinations,
        ),
        60,
    )
    assert verdict.outcome == "fail" and "hallucination rate 1.000" in verdict.reason
    fine = Evidence(
        student_latency=[5.0] * 10,
        teacher_latency=[9.0] * 10,
        shadow=agreed,
        hallucinations=good.hallucinations,
    )
    assert judge(task, fine, 60).outcome == "pass"


def test_a_retrained_candidate_must_match_the_serving_students_live_agreement(
    tmp_path: Path,
) -> None:
    config = config_for(
        tmp_path,
        "http://127.0.0.1:9/v1",
        {"provider": "openai", "model": "x"},
        gate={"agreement": 0.6},
        rollout={"min_samples": 4, "min_dwell": 0},
    )
    task = config.tasks["support"]
    latency = [5.0] * 80
    # 75% agreement on 80: lower bound 0.645, over the 0.6 threshold
    some = Evidence(
        student_latency=latency, teacher_latency=latency, shadow=[1.0, 1.0, 1.0, 0.0] * 20
    )
    assert judge(task, some, 60).outcome == "pass"  # a first rollout: good enough
    production = Evidence(student_latency=latency, teacher_latency=latency, shadow=[1.0] * 80)
    verdict = judge(task, some, 60, incumbent=production)
    assert verdict.outcome == "fail" and "serving student's 0.954" in verdict.reason
    close = Evidence(student_latency=latency, teacher_latency=latency, shadow=[1.0] * 79 + [0.0])
    assert judge(task, close, 60, incumbent=production).outcome == "pass"


def test_a_candidate_that_cannot_load_leaves_its_sessions_with_the_teacher(
    tmp_path: Path, tiny_base: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with running_upstream() as (teacher_url, _):
        student = {"provider": "local", "model": str(tiny_base)}
        config = config_for(tmp_path, teacher_url, student)
        serving = {"provider": "local", "model": str(tiny_base), "adapter": str(tmp_path / "gone")}
        entry = TaskRoute(state="rollout", share=1.0, candidate="cand_gone", serving=serving)
        app, gateway, client = serve(config, entry)
        try:
            for _ in range(3):
                reply = client.chat.completions.with_raw_response.create(
                    model="support", messages=[{"role": "user", "content": "hi"}]
                )
                assert reply.headers["x-stillhouse-route"] == "teacher"
                assert "x-stillhouse-candidate" not in reply.headers
            deadline = time.monotonic() + 20
            while "deploying candidate cand_gone for task support failed" not in caplog.text:
                assert time.monotonic() < deadline, "the failed load was never reported"
                time.sleep(0.05)
            assert "no such folder" in caplog.text  # the adapter check names what is wrong
            reply = client.chat.completions.with_raw_response.create(
                model="support", messages=[{"role": "user", "content": "hi"}]
            )
            assert reply.headers["x-stillhouse-route"] == "teacher"  # still answered
            assert app.state.writer.flush(10)
            with open_store(config.store.url) as store:
                reasons = {c.route_reason for c in store.list_calls(task="support", limit=10)}
            assert reasons == {"deploying"}
        finally:
            gateway.stop()
