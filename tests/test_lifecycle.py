"""The lifecycle end to end on loopback: a deterministic teacher and a scriptable student behind
real HTTP, the gateway driven by the official openai SDK, and the controller's tick run by the
test. Training and validation are small stand-ins here (training for real is tests/test_train.py);
everything else (curation, the registry, the stored transitions, routing, fallback, shadow
comparisons, gates, drift) is the real code."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from stillhouse.errors import StillhouseError
from stillhouse.gateway import create_app
from stillhouse.lifecycle import events
from stillhouse.lifecycle import manual as ctl
from stillhouse.lifecycle.controller import Controller
from stillhouse.lifecycle.monitor import psi
from stillhouse.lifecycle.states import TRANSITIONS, State, TransitionError
from stillhouse.lifecycle.steps import Verdict
from stillhouse.optimize import optimize_task
from stillhouse.registry import register_candidate
from stillhouse.routing import RoutingTable
from stillhouse.store import open_store
from stillhouse.worker import DefaultSteps

from .test_cli import run
from .upstream import ServerThread, UpstreamBehaviour, message_text, running_upstream

INTENTS = ["refund", "delivery", "card_lost", "cancel"]


def intent_of(body: dict[str, Any]) -> str:
    text = message_text([m for m in body["messages"] if m["role"] == "user"][-1])
    return text.split()[0]


def teacher_reply(body: dict[str, Any]) -> str:
    return json.dumps({"intent": intent_of(body)})


@dataclass
class Student:
    """A student model server: answers like the teacher unless told to be wrong or unsure."""

    wrong: bool = False
    confidence: float = 0.9
    requests: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            body = orjson.loads(await request.body())
            self.requests.append(body)
            text = json.dumps({"intent": "wrong" if self.wrong else intent_of(body)})
            payload = {
                "id": "chatcmpl-student",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
                "stillhouse": {"confidence": {"min": 0.1, "mean": 0.9, "p10": self.confidence}},
            }
            return Response(orjson.dumps(payload), media_type="application/json")

        return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


class FakeSteps(DefaultSteps):
    """Real curation, prompt optimisation and registry; training registers a candidate without
    a model, and validation answers what the test says (the prompt fails unless told)."""

    def __init__(self) -> None:
        super().__init__()
        self.passes = True
        self.prompt_passes = False
        self.prompts: list[str] = []
        self.trained: list[str] = []

    def curate(self, store: Any, config: Config, task: str) -> str:
        from stillhouse.curate.pipeline import curate

        return curate(store, config, task).dataset.id

    def optimize(self, store: Any, config: Config, task: str, dataset: str) -> str:
        candidate, _ = optimize_task(store, config, task, dataset=dataset, shots=2)
        self.prompts.append(candidate.id)
        return candidate.id

    def train(self, store: Any, config: Config, task: str, dataset: str, parent: Any) -> str:
        candidate = register_candidate(
            store,
            task=task,
            dataset_id=dataset,
            backend="local",
            base_model="tiny",
            config={"n": len(self.trained)},
            artifacts={},
            serving={},
            metrics={},
            parent_id=parent,
        )
        self.trained.append(candidate.id)
        return candidate.id

    def validate(self, store: Any, config: Config, task: str, cand: str, inc: Any) -> Verdict:
        if cand in self.prompts:
            if self.prompt_passes:
                return Verdict(True, "agreement 0.93 >= 0.5", threshold=0.5)
            return Verdict(False, "agreement 0.12 < 0.5")
        if self.passes:
            return Verdict(True, "agreement 0.97 >= 0.5", threshold=0.5)
        return Verdict(False, "agreement 0.31 < 0.5")


class World:
    def __init__(self, tmp_path: Path, teacher_url: str, student_url: str) -> None:
        self.config = parse_config(
            {
                "store": {"url": "sqlite:///lifecycle.db"},
                "models": {
                    "teacher": {
                        "provider": "openai-compatible",
                        "base_url": teacher_url,
                        "model": "big",
                        "max_retries": 0,
                        "timeout": 5,
                    },
                    "student": {
                        "provider": "openai-compatible",
                        "base_url": student_url,
                        "model": "small",
                        "max_retries": 0,
                        "timeout": 5,
                    },
                },
                "tasks": {
                    "support": {
                        "teacher": "teacher",
                        "student": "student",
                        "grace": {"min_conversations": 8, "min_unique_intents": 2},
                        "gate": {"agreement": 0.6},
                        "rollout": {
                            "stages": [25, 50],
                            "min_samples": 4,
                            "min_dwell": 0,
                            "max_latency_ratio": 100,
                        },
                        "routing": {"shadow_rate": 1.0},
                        "drift": {"min_samples": 8, "max_psi": 0.5, "window": "1h"},
                        "curate": {"intents": "metadata"},
                    }
                },
            },
            tmp_path,
        )
        self.steps = FakeSteps()
        self.table = RoutingTable()
        self.controller = Controller(self.config, steps=self.steps, routing=self.table)
        self.app = create_app(self.config, routing=self.table)
        self.server = ServerThread(self.app).start()
        self.client = openai.OpenAI(base_url=self.server.url + "/v1", api_key="x", max_retries=0)
        self.sent = 0

    def ask(self, n: int, intents: list[str] = INTENTS) -> list[Any]:
        out = []
        for _ in range(n):
            intent = intents[self.sent % len(intents)]
            self.sent += 1
            out.append(
                self.client.chat.completions.with_raw_response.create(
                    model="support",
                    messages=[{"role": "user", "content": f"{intent} request {self.sent}"}],
                    user=f"user-{self.sent}",
                    metadata={"intent": intent},
                )
            )
        self.settle()
        return out

    def send(self, texts: list[str], intent: str | None = None) -> None:
        """These user messages as they are, with `metadata.intent` only when given."""
        for text in texts:
            self.client.chat.completions.create(
                model="support",
                messages=[{"role": "user", "content": text}],
                **({"metadata": {"intent": intent}} if intent else {}),  # type: ignore[arg-type]
            )
        self.settle()

    def configure(self, **tables: dict[str, Any]) -> None:
        """The controller's task with these tables updated (the gateway keeps its config)."""
        task = self.config.tasks["support"]
        update = {k: getattr(task, k).model_copy(update=v) for k, v in tables.items()}
        self.config = self.config.model_copy(
            update={"tasks": {"support": task.model_copy(update=update)}}
        )
        self.controller.config = self.config

    def settle(self) -> None:
        """Wait for the background shadow calls, then for the captures to reach the store."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.app.state.writer.flush(10)
            with open_store(self.config.store.url) as store:
                calls = store.list_calls(task="support", limit=10_000)
                students = [c for c in calls if c.role == "student"]
                shadows = [c for c in calls if c.route_reason == "shadow"]
                scored = sum(bool(store.scores_for(c.id)) for c in students)
            if len(shadows) >= len(students) - self.fallbacks(calls) and scored >= len(shadows):
                return
            time.sleep(0.05)
        raise AssertionError("shadow comparisons did not finish")

    @staticmethod
    def fallbacks(calls: list[Any]) -> int:
        return sum(c.route_reason == "fallback:replaced" for c in calls)

    def tick(self) -> State:
        return self.controller.tick()["support"].state

    def state(self) -> Any:
        with open_store(self.config.store.url) as store:
            return events.current(store, "support")

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    student = Student()
    server = ServerThread(student.app()).start()
    with running_upstream(UpstreamBehaviour(reply=teacher_reply)) as (teacher_url, _):
        w = World(tmp_path, teacher_url, server.url + "/v1")
        w.student = student  # type: ignore[attr-defined]
        yield w
        w.stop()
    server.stop()


def roll_to_first_stage(w: World) -> None:
    w.ask(8)
    assert [w.tick() for _ in range(5)] == [
        State.CURATING,
        State.OPTIMIZING,
        State.TRAINING,
        State.VALIDATING,
        State.ROLLOUT,
    ]


def test_a_task_goes_through_every_state_and_a_shift_retrains(world: World) -> None:
    w = world
    assert w.tick() is State.GRACE  # nothing captured yet
    w.ask(4)
    assert w.tick() is State.GRACE  # 4 of 8 conversations
    roll_to_first_stage(w)
    state = w.state()
    assert state.share == 0.25 and state.candidate_id == w.steps.trained[0]
    replies = w.ask(40)
    routes = [r.headers["x-stillhouse-route"] for r in replies]
    assert 4 <= routes.count("student") <= 18, routes
    assert all(
        json.loads(r.parse().choices[0].message.content)["intent"] in INTENTS for r in replies
    )
    assert w.tick() is State.ROLLOUT and w.state().share == 0.5
    w.ask(24)
    assert w.tick() is State.SERVING and w.state().share == 1.0
    w.ask(8)
    assert w.tick() is State.SERVING  # same intents, good agreement: no drift
    w.ask(24, intents=["invoice", "password"])  # traffic the student never saw
    assert w.tick() is State.RETRAINING
    assert "intent distribution shifted" in w.state().reason
    assert w.tick() is State.VALIDATING
    assert w.tick() is State.ROLLOUT and w.state().candidate_id == w.steps.trained[1]
    with open_store(w.config.store.url) as store:
        history = events.history(store, "support")
        parent = store.get_candidate(w.steps.trained[1]).parent_id
    assert parent == w.steps.trained[0]
    seen = [e["state"] for e in reversed(history)]
    assert seen == [
        "curating",
        "optimizing",
        "training",
        "validating",
        "rollout",
        "rollout",
        "serving",
        "retraining",
        "validating",
        "rollout",
    ]
    assert all(e["reason"] for e in history)
    for before, after in zip(history[1:], history[:-1], strict=True):
        assert State(after["state"]) in TRANSITIONS[State(before["state"])]


def test_a_bad_candidate_is_stopped_at_the_gate(world: World) -> None:
    w = world
    w.steps.passes = False
    w.ask(8)
    assert [w.tick() for _ in range(5)][-1] is State.GRACE
    state = w.state()
    assert state.share == 0 and "failed the gate" in state.reason
    # the same 8 messages again are 8 teacher calls but nothing the dataset lacks: keep waiting
    w.send([f"{INTENTS[i % 4]} request {i + 1}" for i in range(8)])
    assert w.tick() is State.GRACE and "failed the gate" in w.state().reason
    assert all(r.headers["x-stillhouse-route"] == "teacher" for r in w.ask(8))
    assert w.tick() is State.CURATING  # 8 new distinct examples: try again
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"  # when the gate failed, as people read it
    assert re.fullmatch(f"8 new distinct examples since {stamp}", w.state().reason)


def _failed_once(w: World) -> tuple[str, Controller]:
    """A candidate fails the gate on 8 asked messages: the dataset it failed on, and a controller
    whose clock stands past grace.max_days."""
    w.steps.passes = False
    w.ask(8)
    assert [w.tick() for _ in range(5)][-1] is State.GRACE
    with open_store(w.config.store.url) as store:
        failed = store.list_datasets("support")[0].id
    days = w.config.tasks["support"].grace.max_days
    later = Controller(w.config, steps=w.steps, clock=lambda: time.time() + days * 86400 + 1)
    return failed, later


def test_an_identical_snapshot_is_not_trained_again(world: World) -> None:
    w = world
    # max_days pass with nothing new: curated again, the same snapshot comes back
    failed, later = _failed_once(w)
    assert later.tick()["support"].state is State.CURATING
    assert later.tick()["support"].state is State.GRACE
    state = w.state()
    assert f"curated {failed} again" in state.reason and state.detail["dataset"] == failed
    assert len(w.steps.prompts) == 1 and len(w.steps.trained) == 1  # nothing trained again
    assert later.tick()["support"].state is State.GRACE  # and it waits again


def test_old_messages_sent_again_are_not_trained_again(world: World) -> None:
    """After max_days the same 8 messages, captured again under new call ids, curate to the
    examples the candidate failed on: the snapshot that retells them is the failed one."""
    w = world
    failed, later = _failed_once(w)
    for i in range(8):  # newer calls, the same lines
        w.client.chat.completions.create(
            model="support",
            messages=[{"role": "user", "content": f"{INTENTS[i % 4]} request {i + 1}"}],
            user=f"user-{i + 1}",
            metadata={"intent": INTENTS[i % 4]},
        )
    w.settle()
    assert later.tick()["support"].state is State.CURATING
    assert later.tick()["support"].state is State.GRACE
    assert f"curated {failed} again" in w.state().reason
    assert len(w.steps.trained) == 1
    with open_store(w.config.store.url) as store:
        assert [d.id for d in store.list_datasets("support")] == [failed]


def test_callers_without_metadata_intent_leave_grace(world: World) -> None:
    """Their intents are clustered while grace waits, as curation will cluster them; before,
    such a task counted no intent until a dataset existed and so waited max_days."""
    w = world
    w.configure(
        grace={"min_conversations": 40, "min_unique_intents": 4}, curate={"intents": "auto"}
    )
    w.send(["where is my parcel", "refund my order"] * 20)  # 40 calls, 2 distinct requests
    assert w.tick() is State.GRACE
    w.send([f"{topic} question {i}" for topic in INTENTS for i in range(10)])
    assert w.tick() is State.CURATING
    assert w.state().reason == "grace met: min_conversations, min_unique_intents"


def test_a_prompt_that_passes_the_gate_alone_rolls_out_without_training(world: World) -> None:
    w = world
    w.steps.prompt_passes = True
    w.ask(8)
    assert [w.tick() for _ in range(3)] == [State.CURATING, State.OPTIMIZING, State.ROLLOUT]
    state = w.state()
    assert state.candidate_id == w.steps.prompts[0] and not w.steps.trained
    with open_store(w.config.store.url) as store:
        prompt = store.get_candidate(state.candidate_id).artifacts["prompt"]
    assert prompt["system"] and len(prompt["examples"]) == 2
    replies = w.ask(24)
    served = [r for r in replies if r.headers["x-stillhouse-route"] == "student"]
    assert served and all(r.headers["x-stillhouse-candidate"] == state.candidate_id for r in served)
    # the student model got the prompt: the distilled system prompt, the shots, then the user
    sent = w.student.requests[-1]  # type: ignore[attr-defined]
    assert sent["messages"][0] == {"role": "system", "content": prompt["system"]}
    assert sent["messages"][1:-1] == [m for shot in prompt["examples"] for m in shot["messages"]]
    # ...while the call is stored as the user sent it
    with open_store(w.config.store.url) as store:
        call = store.get_call(served[0].headers["x-stillhouse-call-id"])
    assert call is not None and len(call.request["messages"]) == 1


def test_with_prompt_optimisation_off_curation_goes_straight_to_training(world: World) -> None:
    w = world
    task = w.config.tasks["support"]
    off = task.model_copy(update={"optimize": task.optimize.model_copy(update={"prompt": False})})
    w.controller.config = w.config.model_copy(update={"tasks": {"support": off}})
    w.ask(8)
    assert [w.tick() for _ in range(3)] == [State.CURATING, State.TRAINING, State.VALIDATING]
    assert not w.steps.prompts


def test_a_student_that_degrades_mid_rollout_is_rolled_back(world: World) -> None:
    w = world
    roll_to_first_stage(w)
    w.ask(24)
    assert w.tick() is State.ROLLOUT and w.state().share == 0.5
    w.student.wrong = True  # type: ignore[attr-defined]
    w.ask(24)
    assert w.tick() is State.ROLLED_BACK
    state = w.state()
    assert state.share == 0 and "shadow agreement" in state.reason
    assert all(r.headers["x-stillhouse-route"] == "teacher" for r in w.ask(8))
    assert w.tick() is State.CURATING


def test_a_low_confidence_answer_is_replaced_by_the_teachers(world: World) -> None:
    w = world
    roll_to_first_stage(w)
    w.student.confidence = 0.2  # type: ignore[attr-defined]  # under the 0.5 threshold
    replies = w.ask(20)
    fell_back = [r for r in replies if r.headers["x-stillhouse-route"] == "fallback"]
    assert fell_back and not any(r.headers["x-stillhouse-route"] == "student" for r in replies)
    with open_store(w.config.store.url) as store:
        call = store.get_call(fell_back[0].headers["x-stillhouse-call-id"])
        teacher = [c for c in store.list_calls("support", 1000) if c.route_reason == "fallback"]
    assert call is not None and call.role == "student" and call.route_reason == "fallback:replaced"
    assert len(teacher) == len(fell_back)
    assert teacher[0].metadata["fallback_of"] in {
        r.headers["x-stillhouse-call-id"] for r in fell_back
    }


def test_shadow_comparisons_never_delay_the_user(tmp_path: Path) -> None:
    student = Student()
    server = ServerThread(student.app()).start()
    slow = UpstreamBehaviour(reply=teacher_reply, latency=1.5)
    with running_upstream(slow) as (teacher_url, _):
        w = World(tmp_path, teacher_url, server.url + "/v1")
        try:
            with open_store(w.config.store.url) as store:
                ctl.set_mode(store, w.config, "support", "student", force=True)
            w.table.publish({"support": _entry(w)})
            started = time.perf_counter()
            reply = w.client.chat.completions.with_raw_response.create(
                model="support", messages=[{"role": "user", "content": "refund now"}]
            )
            assert time.perf_counter() - started < 1.0
            assert reply.headers["x-stillhouse-route"] == "student"
            w.settle()  # the teacher's answer arrives later, in the background
            with open_store(w.config.store.url) as store:
                scores = store.scores_for(reply.headers["x-stillhouse-call-id"])
            assert [(s.name, s.value, s.source) for s in scores] == [
                ("shadow_agreement", 1.0, "shadow")
            ]
        finally:
            w.stop()
    server.stop()


def _entry(w: World) -> Any:
    from stillhouse.lifecycle.table import entry_of

    return entry_of(w.state())


def test_a_restarted_controller_resumes_and_people_steer_it(world: World) -> None:
    w = world
    roll_to_first_stage(w)
    w.controller = Controller(w.config, steps=w.steps, routing=w.table)  # "killed", started again
    assert w.tick() is State.ROLLOUT and w.state().stage == 0
    with open_store(w.config.store.url) as store:
        assert ctl.pause(store, w.config, "support").state is State.PAUSED
    w.ask(24)
    assert w.tick() is State.PAUSED  # the controller leaves a paused task alone
    with open_store(w.config.store.url) as store:
        assert ctl.advance(store, w.config, "support").share == 0.5
        assert ctl.rollback(store, w.config, "support").share == 0.0
        with pytest.raises(StillhouseError, match="not rolling out"):
            ctl.advance(store, w.config, "support")
        with pytest.raises(TransitionError, match="cannot go from rolled_back to serving"):
            events.current(store, "support").moved(State.SERVING, "no")
    assert w.state().state is State.ROLLED_BACK


def test_mode_and_rollout_verbs_from_the_cli(tmp_path: Path) -> None:
    (tmp_path / "stillhouse.toml").write_text(
        '[models.t]\nprovider = "openai"\nmodel = "x"\n'
        '[models.s]\nprovider = "openai"\nmodel = "y"\n'
        '[tasks.support]\nteacher = "t"\nstudent = "s"\n'
    )
    run("mode", "--task", "support", "teacher", cwd=tmp_path)
    status = json.loads(run("status", "--json", cwd=tmp_path).stdout)["tasks"]["support"]
    assert status["mode"] == "teacher" and status["state"] == "grace"
    doc = json.loads(run("rollout", "pause", "--task", "support", "--json", cwd=tmp_path).stdout)
    assert doc["state"] == "paused" and doc["history"][0]["reason"] == "paused by hand"
    bad = run("rollout", "advance", "--task", "support", cwd=tmp_path, check=False)
    assert bad.returncode == 1 and "not rolling out" in bad.stderr


def test_psi() -> None:
    same = ["a", "b"] * 50
    assert psi(same, same) == 0
    assert psi(same, ["a"] * 90 + ["b"] * 10) > 0.25
    assert psi(same, ["c"] * 100) > 1


def test_a_running_gateway_picks_up_a_stored_mode(tmp_path: Path) -> None:
    student = Student()
    server = ServerThread(student.app()).start()
    with running_upstream(UpstreamBehaviour(reply=teacher_reply)) as (teacher_url, _):
        w = World(tmp_path, teacher_url, server.url + "/v1")
        config = w.config.model_copy(
            update={"lifecycle": w.config.lifecycle.model_copy(update={"refresh": 0.05})}
        )
        gateway = ServerThread(create_app(config)).start()  # its own table and refresher
        try:
            client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)

            def route() -> str:
                reply = client.chat.completions.with_raw_response.create(
                    model="support", messages=[{"role": "user", "content": "refund"}]
                )
                return reply.headers["x-stillhouse-route"]

            assert route() == "teacher"
            with open_store(config.store.url) as store:
                ctl.set_mode(store, config, "support", "student", force=True)
            deadline = time.monotonic() + 5
            while route() != "student":
                assert time.monotonic() < deadline, "the gateway never saw the stored mode"
                time.sleep(0.05)
        finally:
            gateway.stop()
            w.stop()
    server.stop()


def test_a_serving_student_is_retrained_every_period(world: World) -> None:
    w = world
    roll_to_first_stage(w)
    with open_store(w.config.store.url) as store:
        ctl.advance(store, w.config, "support")
        assert ctl.advance(store, w.config, "support").state is State.SERVING
    task = w.config.tasks["support"].model_copy(update={"retrain_every": 3600.0})
    config = w.config.model_copy(update={"tasks": {"support": task}})
    later = Controller(config, steps=w.steps, clock=lambda: time.time() + 7200)
    assert later.tick()["support"].state is State.RETRAINING
    assert w.state().reason.startswith("periodic")


def test_a_retrained_candidate_worse_than_production_is_withdrawn(world: World) -> None:
    w = world
    roll_to_first_stage(w)
    first = w.state().candidate_id
    with open_store(w.config.store.url) as store:
        ctl.advance(store, w.config, "support")
        assert ctl.advance(store, w.config, "support").state is State.SERVING
    task = w.config.tasks["support"].model_copy(update={"retrain_every": 3600.0})
    config = w.config.model_copy(update={"tasks": {"support": task}})
    later = Controller(config, steps=w.steps, clock=lambda: time.time() + 7200)
    assert later.tick()["support"].state is State.RETRAINING
    assert [w.tick() for _ in range(2)] == [State.VALIDATING, State.ROLLOUT]
    second = w.state().candidate_id
    assert second != first and w.state().detail["incumbent"] == first
    w.student.wrong = True  # type: ignore[attr-defined]
    replies = w.ask(24)
    # the sessions outside the new candidate's share stay with the serving student
    assert {r.headers["x-stillhouse-route"] for r in replies} == {"student"}
    assert {r.headers["x-stillhouse-candidate"] for r in replies} == {first, second}
    assert w.tick() is State.SERVING
    state = w.state()
    assert state.candidate_id == first and state.share == 1.0
    assert "gate failed" in state.reason and f"{first} keeps serving" in state.reason
