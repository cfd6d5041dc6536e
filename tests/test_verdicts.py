"""Verdicts a user can believe: one meaning of agreement (the answers kernel) offline and live, one
binomial interval, gate rules that a constant answer or a forgotten intent cannot pass, missing
evidence that waits or fails, a remote student that falls back on its own logprobs, and config
that refuses a gate with no teeth."""

from __future__ import annotations

import ast
import json
import time
from pathlib import Path
from typing import Any

import pytest

from stillhouse import answers
from stillhouse.config import parse_config
from stillhouse.errors import ConfigError
from stillhouse.evaluate import metrics
from stillhouse.evaluate.gate import Evidence as GateEvidence
from stillhouse.evaluate.gate import Rules, decide
from stillhouse.evaluate.run import majority_baseline
from stillhouse.lifecycle.monitor import check_drift
from stillhouse.lifecycle.rollout import Evidence, judge
from stillhouse.routing import TaskRoute
from stillhouse.stats import binomial_interval, rate_interval
from stillhouse.store import Call, Score, new_id, open_store

from .test_lifecycle_serving import config_for, serve, teacher_and_remote_student
from .upstream import UpstreamBehaviour, running_upstream

ROOT = Path(__file__).resolve().parent.parent


def test_the_answers_kernel_stands_on_the_ground_floor() -> None:
    """answers.py, stats.py and toolcalls.py import nothing of the project but each other's
    ground."""
    for name in ("answers.py", "stats.py", "toolcalls.py"):
        tree = ast.parse((ROOT / "stillhouse" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                assert node.module in ("errors", "config", "stats", "toolcalls"), (
                    f"{name} imports .{node.module}"
                )
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stillhouse"):
                raise AssertionError(f"{name} imports {node.module}")


PAIRS = [
    # (metric, teacher, student, agree?)
    ("exact", "Paris", " paris.", True),
    ("exact", "Paris", "Lyon", False),
    ("json", '{"intent": "refund", "n": 2}', '```json\n{"n": 2, "intent": "Refund"}\n```', True),
    ("json", '{"intent": "refund"}', '{"intent": "refund", "extra": 1}', False),
    ("json", '{"intent": "refund"}', "refund", False),  # the student broke the format
    ("json", "not json", " Not JSON.", True),  # a teacher without JSON is compared as text
    ("similarity", "your parcel is late", "your parcel is running late", True),
    ("similarity", "your parcel is late", "reset your password", False),
]


@pytest.mark.parametrize(("metric", "teacher", "student", "expected"), PAIRS)
def test_offline_and_live_agreement_are_one_verdict(
    metric: Any, teacher: str, student: str, expected: bool
) -> None:
    # offline: the eval's score; live: what shadows, review, drift and rollout call
    offline = metrics.score(metric, [student], [teacher])[0].agree
    assert answers.agree(metric, teacher, student) is expected
    assert offline == float(expected)
    # a continuous score is never stored: 0 or 1 only
    assert offline in (0.0, 1.0)


def test_similarity_of_a_pair_does_not_depend_on_its_batch() -> None:
    pair = ("the order ships tomorrow", "your order will ship tomorrow")
    alone = answers.cosines([pair[1]], [pair[0]])[0][0]
    others = [f"unrelated sentence number {i} about weather" for i in range(50)]
    batch = answers.cosines([pair[1], *others], [pair[0], *others])[0][0]
    assert alone == pytest.approx(batch)


def test_one_interval_and_twenty_of_twenty_does_not_pass_092() -> None:
    low, high = binomial_interval(20, 20)
    assert round(low, 3) == 0.839 and high == 1.0
    assert rate_interval([1.0] * 20) == (low, high)
    assert binomial_interval(0, 0) == (0.0, 1.0)  # no evidence is never good evidence
    with pytest.raises(ValueError):
        rate_interval([0.7, 1.0])  # a mean of continuous scores is not a binomial rate
    decision = decide(
        Rules(agreement=0.92),
        n=20,
        agreement_ci=binomial_interval(20, 20),
        format_compliance=1.0,
        p95_ms=None,
    )
    assert not decision.passed and "0.839 < 0.92" in decision.reason


def test_free_text_judged_word_for_word_fails_saying_why() -> None:
    """A new user keeps `stillhouse init`'s `exact` metric on a task whose answers are free
    text: the student says the same things in other words and fails. The verdict says the
    answers look like free text and names the metrics that compare meaning; a label task's
    failure does not get the hint."""
    teachers = [f"Your order {i} ships on Monday; we are sorry for the wait." for i in range(40)]
    students = [f"Order {i} will ship Monday. Sorry for the delay!" for i in range(40)]
    agree = [s.agree for s in metrics.score("exact", students, teachers)]
    baseline = majority_baseline("exact", teachers)
    assert baseline is not None and baseline["distinct"] == 1.0 and not any(agree)

    def verdict(distinct: float) -> str:
        evidence = GateEvidence(agreement=0.0, majority_baseline=0.025, distinct_answers=distinct)
        decision = decide(
            Rules(agreement=0.92, kept_agreement=None),
            n=40,
            agreement_ci=rate_interval(agree),
            format_compliance=1.0,
            p95_ms=None,
            evidence=evidence,
        )
        assert not decision.passed
        return next(c.detail for c in decision.checks if c.name == "agreement")

    said = verdict(baseline["distinct"])
    assert "100% of the teacher's answers differ from each other" in said
    assert 'gate.metric = "similarity" or "judge"' in said
    labels = majority_baseline("exact", ["positive", "mixed", "negative"] * 13 + ["mixed"])
    assert labels is not None and labels["distinct"] == 3 / 40
    assert "free text" not in verdict(labels["distinct"])


def test_a_constant_answer_does_not_pass_a_skewed_task() -> None:
    # 95% of the teacher's answers are one label: the student that always says it agrees 95%
    teachers = ['{"intent": "refund"}'] * 380 + ['{"intent": "lost_card"}'] * 20
    constant = ['{"intent": "refund"}'] * 400
    agree = [s.agree for s in metrics.score("json", constant, teachers)]
    baseline = majority_baseline("json", teachers)
    assert baseline is not None and baseline["agreement"] == pytest.approx(0.95)
    rules = Rules(agreement=0.92, kept_agreement=None)
    intents = {"refund": (380, 1.0), "lost_card": (20, rate_interval(agree[380:])[1])}
    decision = decide(
        rules,
        n=400,
        agreement_ci=rate_interval(agree),
        format_compliance=1.0,
        p95_ms=None,
        evidence=GateEvidence(
            agreement=sum(agree) / len(agree),
            majority_baseline=baseline["agreement"],
            intents=intents,
        ),
    )
    failed = {c.name for c in decision.checks if not c.passed}
    assert failed == {"majority_baseline", "per_intent"}, decision.reason
    assert "lost_card" in decision.reason
    # a student that also gets the rare label right passes both
    good = GateEvidence(
        agreement=1.0,
        majority_baseline=0.95,
        intents={"refund": (380, 1.0), "lost_card": (20, 1.0)},
    )
    ok = decide(
        rules,
        n=400,
        agreement_ci=binomial_interval(400, 400),
        format_compliance=1.0,
        p95_ms=None,
        evidence=good,
    )
    assert ok.passed, ok.reason


def test_kept_agreement_not_reached_fails_the_gate_unless_fallback_is_off() -> None:
    from stillhouse.taskconfig import GateConfig

    common: dict[str, Any] = {
        "n": 400,
        "agreement_ci": (0.95, 0.99),
        "format_compliance": 1.0,
        "p95_ms": None,
        "evidence": GateEvidence(agreement=0.97, majority_baseline=0.3, kept_low=0.95),
    }
    gate = GateConfig(agreement=0.92, kept_agreement=0.97)
    with_fallback = decide(Rules.of(gate, "confidence"), **common)
    assert not with_fallback.passed and "kept answers' lower bound" in with_fallback.reason
    assert decide(Rules.of(gate, "none"), **common).passed
    unknown = GateEvidence(agreement=0.97, majority_baseline=0.3, kept_low=None)
    assert not decide(Rules.of(gate), **{**common, "evidence": unknown}).passed


def _task(tmp_path: Path, **task: Any) -> Any:
    config = config_for(tmp_path, "http://127.0.0.1:9/v1", {"provider": "openai", "model": "x"})
    return config.tasks["support"].model_copy(update=task) if task else config.tasks["support"]


def test_a_stage_with_no_teacher_latency_waits(tmp_path: Path) -> None:
    task = config_for(
        tmp_path,
        "http://127.0.0.1:9/v1",
        {"provider": "openai", "model": "x"},
        gate={"agreement": 0.6},
        rollout={"min_samples": 4, "min_dwell": 0},
    ).tasks["support"]
    no_teacher = Evidence(student_latency=[5.0] * 40, shadow=[1.0] * 40)
    verdict = judge(task, no_teacher, 60)
    assert verdict.outcome == "wait" and "no teacher latency" in verdict.reason
    sampled = Evidence(student_latency=[5.0] * 40, teacher_latency=[9.0] * 5, shadow=[1.0] * 40)
    assert judge(task, sampled, 60).outcome == "pass"


def test_shadow_teacher_calls_sample_the_teachers_latency(tmp_path: Path) -> None:
    from stillhouse.lifecycle.rollout import collect

    url = f"sqlite:///{tmp_path / 'lat.db'}"
    request = {"messages": [{"role": "user", "content": "hi"}]}
    with open_store(url) as store:
        student = Call(
            id=new_id("call"), task="support", request=request, role="student", latency_ms=5.0
        )
        shadow = Call(
            id=new_id("call"),
            task="support",
            request=request,
            role="teacher",
            route_reason="shadow",
            latency_ms=40.0,
        )
        fallback = Call(
            id=new_id("call"),
            task="support",
            request=request,
            role="teacher",
            route_reason="fallback",
            latency_ms=900.0,
        )
        store.insert_calls([student, shadow, fallback])
        evidence = collect(store, "support", 0)
    assert evidence.teacher_latency == [40.0]  # the shadow, not the fallback's hard case


def test_drift_with_too_few_samples_says_insufficient_evidence(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'drift.db'}"
    task = _task(tmp_path)
    with open_store(url) as store:
        call = Call(
            id=new_id("call"),
            task="support",
            request={"messages": [{"role": "user", "content": "hi"}]},
            role="student",
            latency_ms=5.0,
        )
        store.insert_calls([call])
        store.insert_scores(
            [Score(id=new_id("score"), call_id=call.id, name="shadow_agreement", value=1.0)]
        )
        drift = check_drift(store, "support", task, None, lambda texts: ["one"] * len(texts))
    assert not drift.drifted and drift.insufficient
    assert drift.reason.startswith("insufficient evidence: 1/100")


def test_status_shows_insufficient_drift_evidence_for_a_serving_task(tmp_path: Path) -> None:
    from stillhouse.cli.gateway import task_status
    from stillhouse.lifecycle import events
    from stillhouse.lifecycle.states import State, TaskState

    config = config_for(tmp_path, "http://127.0.0.1:9/v1", {"provider": "openai", "model": "x"})
    serving = TaskState("support", State.SERVING, share=1.0, candidate_id="cand_x")
    with open_store(config.store.url) as store:
        events.record(store, serving, previous=State.ROLLOUT)
    doc = task_status(config)["tasks"]["support"]
    assert doc["drift"]["state"] == "insufficient evidence"
    assert "0/100 shadow comparisons" in doc["drift"]["reason"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"gate": {"agreement": 0.5}}, "tasks.support.gate.agreement: must be above 0.5"),
        ({"gate": {"agreement": 0}}, "tasks.support.gate.agreement: must be above 0.5"),
        ({"gate": {"kept_agreement": 0.4}}, "tasks.support.gate.kept_agreement: must be above"),
        (
            {"gate": {"format_compliance": 0.5}},
            "tasks.support.gate.format_compliance: must be above",
        ),
        ({"routing": {"shadow_rate": 0}}, "drift can never be detected"),
    ],
)
def test_config_refuses_a_gate_without_teeth(
    tmp_path: Path, table: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        config_for(tmp_path, "http://127.0.0.1:9/v1", {"provider": "openai", "model": "x"}, **table)
    assert message in str(err.value)


def test_shadow_rate_zero_is_fine_for_a_task_that_never_rolls_out(tmp_path: Path) -> None:
    parse_config(
        {
            "models": {"t": {"provider": "openai", "model": "x"}},
            "tasks": {"a": {"teacher": "t", "mode": "teacher", "routing": {"shadow_rate": 0}}},
        },
        tmp_path,
    )


# -- a threshold of the request's own intent --------------------------------------------------
def text_and_logprobs(parsed: Any, streamed: bool) -> tuple[str, list[Any]]:
    """What the SDK gave the client: the answer's text and the logprobs it was shown (one entry
    per chunk when streamed)."""
    if streamed:
        chunks = [c for c in parsed if c.choices]
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        return text, [c.choices[0].logprobs for c in chunks]
    return parsed.choices[0].message.content or "", [parsed.choices[0].logprobs]


@pytest.mark.parametrize("streamed", [False, True])
def test_the_fallback_threshold_is_the_requests_intents(tmp_path: Path, streamed: bool) -> None:
    """Where the calibration chose per-intent thresholds, an answer is judged by its intent's
    (metadata.intent here; the task's intent model otherwise); an intent without one of its own
    by the common threshold."""
    teacher = UpstreamBehaviour(reply=lambda body: "teacher answer")
    student = UpstreamBehaviour(reply=lambda body: "student answer")
    with teacher_and_remote_student(teacher, student) as (teacher_url, remote):
        config = config_for(tmp_path, teacher_url, remote, routing={"shadow_rate": 0.01})
        entry = TaskRoute(
            state="rollout",
            share=1.0,
            threshold=-5.0,
            signal="min",
            intent_thresholds={"parcel": 0.001},
        )
        _, server, client = serve(config, entry)
        try:
            routes, texts = {}, {}
            for intent in ("parcel", "refund"):
                raw = client.chat.completions.with_raw_response.create(
                    model="support",
                    messages=[{"role": "user", "content": "where is my parcel"}],
                    metadata={"intent": intent},
                    stream=streamed,
                )
                routes[intent] = raw.headers["x-stillhouse-route"]
                texts[intent], _ = text_and_logprobs(raw.parse(), streamed)
        finally:
            server.stop()
    # the student's logprobs are <= 0: under parcel's threshold, over the common one
    assert routes == {"parcel": "fallback", "refund": "student"}
    assert texts == {"parcel": "teacher answer", "refund": "student answer"}


# -- the teacher's confidence, captured ----------------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True])
def test_the_teachers_logprobs_are_captured_not_shown(tmp_path: Path, streamed: bool) -> None:
    """`routing.teacher_logprobs`: the gateway asks the teacher for its token logprobs, keeps
    them with the captured call (its confidence can be read there) and shows the client none."""
    teacher = UpstreamBehaviour(reply=lambda body: "teacher answer in words")
    with running_upstream(teacher) as (teacher_url, _):
        remote = {"provider": "openai-compatible", "base_url": teacher_url, "model": "small"}
        config = config_for(tmp_path, teacher_url, remote, routing={"teacher_logprobs": True})
        _, server, client = serve(config, TaskRoute(state="grace"))
        try:
            messages = [{"role": "user", "content": "where is my parcel"}]
            raw = client.chat.completions.with_raw_response.create(
                model="support", messages=messages, stream=streamed
            )
            text, shown = text_and_logprobs(raw.parse(), streamed)
        finally:
            server.stop()
    assert raw.headers["x-stillhouse-route"] == "teacher" and text == "teacher answer in words"
    assert teacher.requests[-1]["logprobs"] is True  # asked for ...
    assert not any(shown)  # ... and not shown
    with open_store(config.store.url) as store:
        deadline = time.monotonic() + 5
        while (
            not (rows := store.list_calls(task="support", limit=5)) and time.monotonic() < deadline
        ):
            time.sleep(0.05)
    (captured,) = rows
    assert answers.routing_confidence(captured.response, "min") is not None


# -- a remote student falls back on its own logprobs ---------------------------------------------
@pytest.mark.parametrize("streamed", [False, True])
def test_a_remote_students_logprobs_drive_the_fallback(tmp_path: Path, streamed: bool) -> None:
    teacher = UpstreamBehaviour(reply=lambda body: "teacher answer")
    student = UpstreamBehaviour(reply=lambda body: "student answer with several tokens")
    with teacher_and_remote_student(teacher, student) as (teacher_url, remote):
        config = config_for(tmp_path, teacher_url, remote, routing={"shadow_rate": 0.01})

        def ask(threshold: float, **extra: Any) -> tuple[dict[str, str], str, Any]:
            entry = TaskRoute(state="rollout", share=1.0, threshold=threshold)
            _, server, client = serve(config, entry)
            try:
                messages = [{"role": "user", "content": "where is my parcel"}]
                if streamed:
                    with client.chat.completions.with_streaming_response.create(
                        model="support", messages=messages, stream=True, **extra
                    ) as response:
                        chunks = [
                            json.loads(line[6:])
                            for line in response.iter_lines()
                            if line.startswith("data: {")
                        ]
                        headers = dict(response.headers)
                    text = "".join(
                        c["choices"][0]["delta"].get("content") or ""
                        for c in chunks
                        if c.get("choices")
                    )
                    logprobs = [c["choices"][0].get("logprobs") for c in chunks if c.get("choices")]
                    return headers, text, [lp for lp in logprobs if lp]
                raw = client.chat.completions.with_raw_response.create(
                    model="support", messages=messages, **extra
                )
                parsed = raw.parse()
                return (
                    dict(raw.headers),
                    parsed.choices[0].message.content,
                    parsed.choices[0].logprobs,
                )
            finally:
                server.stop()

        # the student's tokens carry logprobs <= 0: over a threshold above 0 it is unsure, and
        # falls back only if the gateway derived its confidence from them
        headers, text, logprobs = ask(0.001)
        assert headers["x-stillhouse-route"] == "fallback" and text == "teacher answer"
        assert student.requests[-1]["logprobs"] is True  # the gateway asked for them
        headers, text, logprobs = ask(-1.0)
        assert headers["x-stillhouse-route"] == "student"
        assert text == "student answer with several tokens"
        assert not logprobs  # the client did not ask: it gets none
        headers, text, logprobs = ask(-1.0, logprobs=True)
        assert logprobs  # the client asked: it gets them
    with open_store(config.store.url) as store:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            rows = store.list_calls(task="support", limit=20)
            if len(rows) >= 4:
                break
            time.sleep(0.05)
    replaced = [c for c in rows if c.route_reason == "fallback:replaced"]
    answered = [c for c in rows if c.route_reason == "fallback"]
    assert len(replaced) == 1 and replaced[0].confidence is not None
    # the call the user got is stamped with what they waited: student, then teacher
    assert answered[0].latency_ms is not None and replaced[0].latency_ms is not None
    assert answered[0].latency_ms >= replaced[0].latency_ms


def test_ci_fails_rather_than_skips_a_missing_service() -> None:
    """.ci/run exports CI=1, which turns the PostgreSQL and Chromium skips into failures."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "export CI=1" in lines
    assert lines.index("export CI=1") < lines.index("make test")


def test_the_dashboard_draws_the_newest_coverage_curve(tmp_path: Path) -> None:
    import httpx

    from stillhouse.evaluate.calibrate import coverage
    from stillhouse.gateway import create_app
    from stillhouse.store.records import Candidate, EvalRun

    from .upstream import ServerThread

    config = config_for(tmp_path, "http://127.0.0.1:9/v1", {"provider": "openai", "model": "x"})
    curve = coverage([-0.1] * 30 + [-3.0] * 5, [1.0] * 30 + [0.0] * 5)
    with open_store(config.store.url) as store:
        store.insert_candidate(
            Candidate("cand_c", "support", "ds", "local", "base", "h", created_at=1.0)
        )
        store.insert_eval_run(
            EvalRun("eval_c", "cand_c", "ds", "h", metrics={"coverage": {"overall": curve}})
        )
    server = ServerThread(create_app(config)).start()
    try:
        page = httpx.get(server.url + "/tasks/support", headers={"host": "127.0.0.1"}).text
    finally:
        server.stop()
    panel = page[page.index('id="coverage"') :]
    panel = panel[: panel.index("</div>")]
    assert "coverage of cand_c (eval_c)" in panel
    assert panel.count('class="point"') == 2 * len(curve) == 4  # kept agreement, lower bound
