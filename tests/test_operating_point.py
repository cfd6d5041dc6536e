"""Gate the operating point, not the raw agreement (issue #21): a student that misses the raw bar
may serve when, at its calibrated threshold judged out of sample, it keeps enough of the answers
and the kept ones are proven; the fallback sends the rest to the teacher."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from stillhouse.evaluate.calibrate import calibrate
from stillhouse.evaluate.gate import Evidence, Rules, decide
from stillhouse.evaluate.report import table
from stillhouse.routing import TaskRoute
from stillhouse.stats import rate_interval
from stillhouse.taskconfig import GateConfig

from .test_lifecycle_serving import config_for, serve, teacher_and_remote_student
from .test_tiers import _task
from .upstream import UpstreamBehaviour


def _holdout(seed: int = 0) -> tuple[list[float], list[float]]:
    """594 answers: 540 right and confident, 50 wrong and unsure, 4 wrong yet confident."""
    rng = random.Random(seed)
    rows = [(rng.uniform(-0.3, -0.01), 1.0) for _ in range(540)]
    rows += [(rng.uniform(-4.0, -1.5), 0.0) for _ in range(50)]
    rows += [(rng.uniform(-0.3, -0.01), 0.0) for _ in range(4)]
    rng.shuffle(rows)
    return [c for c, _ in rows], [a for _, a in rows]


def _decide(rules: Rules, confidences: list[float], agree: list[float], **evidence: Any) -> Any:
    cal = calibrate(confidences, agree, rules.kept_agreement or 0.0)
    assert cal.held_out is not None
    fields: dict[str, Any] = {
        "agreement": sum(agree) / len(agree),
        "majority_baseline": 0.3,
        "intents": {"all": (len(agree), rate_interval(agree)[1])},
        "kept_low": cal.held_out.kept_low,
        "coverage": 1 - cal.held_out.teacher_share,
        "kept_intents": {"all": (cal.held_out.kept, 1.0)},
        **evidence,
    }
    return decide(
        rules,
        n=len(agree),
        agreement_ci=rate_interval(agree),
        format_compliance=1.0,
        p95_ms=None,
        evidence=Evidence(**fields),
    )


def test_a_student_that_misses_the_raw_bar_passes_at_its_operating_point() -> None:
    confidences, agree = _holdout()
    assert rate_interval(agree)[0] < 0.90  # 90% raw: its lower bound misses the cost tier's bar
    raw_only = Rules.of(GateConfig(agreement=0.90, kept_agreement=0.95))
    refused = _decide(raw_only, confidences, agree)
    assert not refused.passed and "lower bound" in refused.reason
    at_point = Rules.of(GateConfig(agreement=0.90, kept_agreement=0.95, min_coverage=0.85))
    passed = _decide(at_point, confidences, agree)
    assert passed.passed, passed.reason
    detail = {c.name: c.detail for c in passed.checks}["agreement"]
    assert "coverage" in detail and "kept lower bound" in detail


def test_the_operating_point_needs_both_coverage_and_proven_kept_answers() -> None:
    confidences, agree = _holdout()
    # the student keeps ~91% out of sample: a floor of 95% is not met
    greedy = Rules.of(GateConfig(agreement=0.90, kept_agreement=0.95, min_coverage=0.95))
    failed = _decide(greedy, confidences, agree)
    assert not failed.passed and "coverage" in failed.reason
    # the kept answers cannot prove 0.99
    strict = Rules.of(GateConfig(agreement=0.90, kept_agreement=0.99, min_coverage=0.85))
    assert not _decide(strict, confidences, agree).passed
    # no fallback: nothing sends the unsure answers to the teacher, so only the raw bar counts
    no_fallback = Rules.of(GateConfig(agreement=0.90, min_coverage=0.85), fallback="none")
    assert no_fallback.min_coverage is None
    assert not _decide(no_fallback, confidences, agree).passed


def test_at_the_operating_point_each_intents_kept_answers_answer_for_it() -> None:
    confidences, agree = _holdout()
    rules = Rules.of(GateConfig(agreement=0.90, kept_agreement=0.95, min_coverage=0.85))
    bad_intent = {"all": (500, 1.0), "refund": (40, 0.90)}  # its kept answers' upper bound 0.90
    failed = _decide(rules, confidences, agree, kept_intents=bad_intent)
    assert not failed.passed
    assert "kept answers of intents clearly under 0.95: refund" in failed.reason


def test_the_tiers_set_the_floor_and_the_toml_wins() -> None:
    assert _task().gate.min_coverage is None  # no tier: the raw agreement rule alone
    cost = _task(tier="cost")
    assert cost.gate.min_coverage == 0.90
    assert cost.settings()["gate.min_coverage"] == {"value": 0.9, "source": "tier:cost"}
    assert _task(tier="cost", gate={"min_coverage": 0.8}).gate.min_coverage == 0.8


def test_the_report_leads_with_the_operating_point() -> None:
    confidences, agree = _holdout()
    cal = calibrate(confidences, agree, 0.95)
    assert cal.held_out is not None
    point = {
        "threshold": cal.threshold,
        "coverage": 1 - cal.held_out.teacher_share,
        "kept_agreement": cal.held_out.kept_agreement,
        "kept_low": cal.held_out.kept_low,
        "target": 0.95,
        "min_coverage": 0.9,
    }
    line = next(
        row for row in table(_doc(cal, point)).splitlines() if row.startswith("operating point")
    )
    assert "the student keeps 9" in line and "(min 90.0%)" in line and "out of sample" in line


def _doc(cal: Any, point: dict[str, Any]) -> dict[str, Any]:
    return {
        "eval": "eval_x",
        "passed": True,
        "candidate": "cand_x",
        "dataset": "ds_x",
        "n": 600,
        "metric": "json",
        "method": "json",
        "agreement": 0.9,
        "agreement_ci": [0.87, 0.92],
        "kept_agreement": point["kept_agreement"],
        "kept_agreement_ci": [point["kept_low"], 1.0],
        "majority_baseline": None,
        "format_compliance": 1.0,
        "hallucination": {"rate": None, "n": 0},
        "latency_ms": {"p50": 10.0, "p95": 20.0},
        "concurrency": 1,
        "cost_per_call": None,
        "confidence_threshold": cal.threshold,
        "calibration": cal.to_json(),
        "operating_point": point,
        "gate": {"rules": {}, "checks": []},
        "per_intent": {},
        "versus": None,
        "reason": "",
    }


SCHEMA = {
    "type": "object",
    "required": ["intent"],
    "properties": {"intent": {"enum": ["refund", "delivery"]}},
}


def test_students_decode_under_the_tasks_schema_and_teachers_as_asked(tmp_path: Path) -> None:
    """The gateway asks a student for the task's response_schema (a local engine then honours it
    token by token: tests/test_constrained.py); the teacher gets the request as the client sent
    it, and a client's own response_format wins."""
    teacher = UpstreamBehaviour(reply=lambda body: '{"intent": "refund"}')
    student = UpstreamBehaviour(reply=lambda body: '{"intent": "refund"}')
    with teacher_and_remote_student(teacher, student) as (teacher_url, remote):

        def ask(entry: TaskRoute, **task: Any) -> None:
            config = config_for(
                tmp_path, teacher_url, remote, response_schema=SCHEMA, mode="auto", **task
            )
            _, server, client = serve(config, entry)
            try:
                messages = [{"role": "user", "content": "where is my refund"}]
                client.chat.completions.create(model="support", messages=messages)
                client.chat.completions.create(
                    model="support", messages=messages, response_format={"type": "json_object"}
                )
            finally:
                server.stop()

        ask(TaskRoute(state="serving", share=1.0), routing={"shadow_rate": 0.01})
        plain, own = student.requests[-2:]
        assert plain["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "support", "schema": SCHEMA},
        }
        assert own["response_format"] == {"type": "json_object"}
        ask(TaskRoute(state="grace"))
        assert "response_format" not in teacher.requests[-2]
        assert teacher.requests[-1]["response_format"] == {"type": "json_object"}
        before = len(student.requests)
        ask(
            TaskRoute(state="serving", share=1.0),
            routing={"shadow_rate": 0.01},
            constrain_student=False,
        )
        assert "response_format" not in student.requests[before]


def test_evaluation_serves_the_student_as_the_gateway_does() -> None:
    from stillhouse.evaluate.run import Item, request_bodies

    task = _task(response_schema=SCHEMA)
    messages = ({"role": "user", "content": "refund?"},)
    item = Item(call_id="c", intent="refund", messages=messages, teacher='{"intent": "x"}')
    (body,) = request_bodies([item], None, task, "triage")
    assert body["response_format"]["json_schema"] == {"name": "triage", "schema": SCHEMA}
    (free,) = request_bodies([item], None, _task(response_schema=SCHEMA, constrain_student=False))
    assert "response_format" not in free


def test_the_fallback_signal_is_the_one_that_keeps_the_most_out_of_sample() -> None:
    """A short structured answer whose one deciding token is unsure: its minimum logprob sees
    it, its 10th percentile over many sure tokens barely does. The calibration picks the signal
    (inside each cross-fit fold too, so the held-out figure pays for the choice)."""
    rng = random.Random(3)
    rows = []
    for i in range(400):
        right = i % 10 != 0  # 90% agree
        deciding = rng.uniform(-0.05, 0) if right else rng.uniform(-2.5, -0.7)
        rows.append(
            ({"min": deciding, "p10": rng.uniform(-0.02, 0), "mean": rng.uniform(-0.05, 0)}, right)
        )
    signals = {s: [c[s] for c, _ in rows] for s in ("p10", "min", "mean")}
    agree = [1.0 if r else 0.0 for _, r in rows]
    on_p10 = calibrate(signals["p10"], agree, 0.95)
    chosen = calibrate(signals, agree, 0.95)
    assert chosen.signal == "min" and chosen.reached and not on_p10.reached
    assert chosen.held_out is not None and chosen.held_out.teacher_share < 0.15
    assert "chosen in each fold" in chosen.to_json()["method"]


def test_the_chosen_signal_travels_from_the_verdict_to_the_router() -> None:
    from stillhouse.lifecycle.states import State, TaskState
    from stillhouse.lifecycle.table import entry_of
    from stillhouse.lifecycle.transitions import promote
    from stillhouse.store.records import Verdict

    task = _task(student="t")
    validating = TaskState("a", State.VALIDATING, detail={"dataset": "ds_1"})
    verdict = Verdict(True, "passed", threshold=-0.5, signal="min")
    rolling = promote(task, validating, "cand_1", verdict)
    entry = entry_of(rolling)
    assert (entry.threshold, entry.signal) == (-0.5, "min")
    older = TaskState("a", State.SERVING, detail={"threshold": -0.5})  # stored before signals
    assert entry_of(older).signal == "p10"


def _intent_rows(
    seed: int, sure_and_wrong: str | None
) -> tuple[list[float], list[float], list[str]]:
    """300 answers over three intents. A wrong answer's minimum logprob is low (5% of a's and
    b's answers), except on `sure_and_wrong`, where the student is wrong 30% of the time and as
    sure of itself as when it is right."""
    rng = random.Random(seed)
    values, agree, intents = [], [], []
    for i in range(300):
        intent = "abc"[i % 3]
        unsure_wrong = intent != sure_and_wrong and rng.random() < 0.05
        sure_wrong = intent == sure_and_wrong and rng.random() < 0.3
        values.append(rng.uniform(-2.5, -0.7) if unsure_wrong else rng.uniform(-0.05, 0))
        agree.append(0.0 if unsure_wrong or sure_wrong else 1.0)
        intents.append(intent)
    return values, agree, intents


def test_thresholds_are_per_intent_where_a_students_errors_gather_in_one() -> None:
    """On intent c the student is wrong 30% of the time and as sure of itself as when right: no
    one threshold separates those answers; a threshold of c's own sends c to the teacher and
    lets the others keep theirs. Judged out of sample, as the single threshold is."""
    values, agree, intents = _intent_rows(1, sure_and_wrong="c")
    single = calibrate({"min": values}, agree, 0.95)
    split = calibrate({"min": values}, agree, 0.95, intents=intents)
    assert split.intent_thresholds is not None and split.intents_judged is not None
    assert split.intents_judged["per_intent"]
    c_values = [v for v, i in zip(values, intents, strict=True) if i == "c"]
    deferred = [v for v in c_values if v < split.intent_thresholds["c"]]
    assert len(deferred) > 0.8 * len(c_values)  # most of c goes to the teacher
    assert split.intent_thresholds["c"] > -0.05 > split.intent_thresholds["a"]
    assert split.held_out is not None and single.held_out is not None
    assert split.reached and not single.reached
    assert split.held_out.kept_low > single.held_out.kept_low
    assert split.to_json()["intent_thresholds"] == split.intent_thresholds
    assert split.threshold_of("c") == split.intent_thresholds["c"]
    assert split.threshold_of("unseen") == split.threshold_of(None) == split.threshold
    point = {"threshold": split.threshold, "coverage": 0.9, "kept_agreement": 0.97}
    shown = table(_doc(split, {**point, "kept_low": 0.95, "target": 0.95}))
    assert f"c {split.intent_thresholds['c']:.3f}" in shown  # the report lists them


def test_one_threshold_when_the_intents_do_not_differ() -> None:
    values, agree, intents = _intent_rows(2, sure_and_wrong=None)
    calibration = calibrate({"min": values}, agree, 0.95, intents=intents)
    assert calibration.intent_thresholds is None
    assert calibration.intents_judged is not None and not calibration.intents_judged["per_intent"]
    assert calibration.reached


def test_per_intent_thresholds_travel_from_the_verdict_to_the_router() -> None:
    from stillhouse.lifecycle.states import State, TaskState
    from stillhouse.lifecycle.table import entry_of
    from stillhouse.lifecycle.transitions import promote
    from stillhouse.routing import Route, fallback_threshold, needs_fallback
    from stillhouse.store.records import Verdict

    task = _task(student="t")
    validating = TaskState("a", State.VALIDATING, detail={"dataset": "ds_1"})
    verdict = Verdict(True, "passed", threshold=-0.5, signal="min", intent_thresholds={"c": 0.1})
    entry = entry_of(promote(task, validating, "cand_1", verdict))
    assert entry.intent_thresholds == {"c": 0.1}
    route = Route("student", "t", "rollout:10%", "cand_1")  # a session in the candidate's share
    assert fallback_threshold(task, entry, route, "c") == 0.1
    assert fallback_threshold(task, entry, route, "a") == -0.5  # not listed: the common one
    assert fallback_threshold(task, entry, route) == -0.5  # intent unknown
    sure = {"min": -0.01}
    assert needs_fallback(task, entry, route, sure, "c")
    assert not needs_fallback(task, entry, route, sure, "a")
    # a retrained candidate rolls out against the serving incumbent, which keeps its own
    before = {"threshold": -0.4, "signal": "min", "intent_thresholds": {"b": 0.2}}
    rolling = TaskState(
        "a",
        State.ROLLOUT,
        share=0.25,
        candidate_id="cand_2",
        detail={**entry_of_detail(verdict), "incumbent": "cand_1", "incumbent_detail": before},
    )
    retrain = entry_of(rolling)
    incumbent = Route("student", "t", "rollout:incumbent", "cand_1")
    assert fallback_threshold(task, retrain, incumbent, "b") == 0.2
    assert fallback_threshold(task, retrain, incumbent, "c") == -0.4
    older = TaskState("a", State.SERVING, detail={"threshold": -0.5})  # stored before them
    assert entry_of(older).intent_thresholds is None


def entry_of_detail(verdict: Any) -> dict[str, Any]:
    return {
        "threshold": verdict.threshold,
        "signal": verdict.signal,
        "intent_thresholds": verdict.intent_thresholds,
    }
