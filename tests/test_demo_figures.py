"""The demo's figures recomputed by hand from a store built call by call: fallbacks counted once
at what the user waited, errors kept in the count, the p95 and the cost, share and fallback rate
in the p95's window, every rate with its interval, and the gate in force with its sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from stillhouse.config import parse_config
from stillhouse.demo.figures import figures
from stillhouse.demo.report import chart
from stillhouse.demo.setup import TASK
from stillhouse.demo.story import story
from stillhouse.stats import binomial_interval, percentile
from stillhouse.store import Call, Score, new_id, open_store
from stillhouse.store.records import Candidate, EvalRun

REQUEST = {"messages": [{"role": "user", "content": "my card is lost"}]}


def _call(at: float, role: str, latency: float, cost: float | None, **fields: object) -> Call:
    return Call(
        id=new_id("call"),
        task=TASK,
        request=REQUEST,
        role=role,  # type: ignore[arg-type]
        model=role,
        created_at=at,
        latency_ms=latency,
        cost=cost,
        **fields,  # type: ignore[arg-type]
    )


def test_the_demo_figures_from_a_hand_built_store(tmp_path: Path) -> None:
    config = parse_config(
        {
            "store": {"url": f"sqlite:///{tmp_path / 'demo.db'}"},
            "models": {
                "teacher": {"provider": "openai", "model": "t", "price": {"input_per_mtok": 1}},
                "student": {"provider": "openai", "model": "s", "price": {"input_per_mtok": 0.1}},
            },
            "tasks": {
                TASK: {
                    "teacher": "teacher",
                    "student": "student",
                    "gate": {"agreement": 0.6, "metric": "json"},
                    "tier": "cost",
                }
            },
        },
        tmp_path,
    )
    grace, rollout, after = 1000.0, 2000.0, 3000.0
    calls = [
        # before: four teacher answers and one error
        *(_call(grace + i, "teacher", ms, 0.01) for i, ms in enumerate([100, 200, 300, 400])),
        _call(grace + 9, "teacher", 50, None, status="error", http_status=502),
    ]
    kept = [_call(after + i, "student", 10, 0.001) for i in range(6)]
    replaced = [
        _call(after + 10 + i, "student", 12, 0.001, route_reason="fallback:replaced")
        for i in range(2)
    ]
    # the teacher's answers to the fallbacks, stamped with the student's time and the teacher's
    answered = [
        _call(after + 10 + i, "teacher", 212, 0.01, route_reason="fallback") for i in range(2)
    ]
    errored = _call(after + 20, "student", 5, None, status="error", http_status=500)
    on_teacher = _call(after + 21, "teacher", 150, 0.01)
    shadows = [_call(after + i, "teacher", 90, 0.01, route_reason="shadow") for i in range(6)]
    calls += [*kept, *replaced, *answered, errored, on_teacher, *shadows]
    scores = [
        Score(id=new_id("score"), call_id=c.id, name="shadow_agreement", value=float(i != 0))
        for i, c in enumerate(kept)
    ]
    candidate = Candidate(
        id="cand_a", task=TASK, dataset_id="ds", backend="local", base_model="b", config_hash="h"
    )
    validation = {
        "agreement": 0.9,
        "agreement_ci": [0.8, 0.95],
        "n": 80,
        "format_compliance": 1.0,
        "kept_agreement": 0.97,
        "kept_agreement_ci": [0.9, 0.99],
        "passed": True,
        "gate": {"rules": {"agreement": 0.9}},
        "coverage": {
            "overall": [
                {"student_share": 1.0, "kept_agreement": 0.9, "kept_low": 0.8, "kept": 80},
                {"student_share": 0.9, "kept_agreement": 0.97, "kept_low": 0.9, "kept": 72},
            ]
        },
    }
    with open_store(config.store.url) as store:
        store.insert_calls(calls)
        store.insert_scores(scores)
        store.insert_candidate(candidate)
        store.insert_eval_run(EvalRun("eval_a", "cand_a", "ds", "h", metrics=validation))
        doc = figures(store, config, {"grace": grace, "rollout:0": rollout, "after": after})
        spans = [(grace, "grace"), (rollout, "rollout:50%"), (after, "serving")]
        told = story(store, TASK, spans, grace)

    # after: 6 kept + 2 fallbacks (as the teacher's answers) + 1 error + 1 on the teacher = 10
    after_doc = doc["after"]
    assert after_doc["requests"] == 10 and after_doc["errors"] == 1 and doc["errors"] == 1
    assert after_doc["routes"] == {"student": 7, "fallback": 2, "teacher": 1}
    waited = [10] * 6 + [212, 212, 5, 150]
    assert doc["p95_latency_ms_after"] == pytest.approx(round(percentile(waited, 95) or 0, 1))
    assert doc["p95_latency_ms_after"] == pytest.approx(212.0)  # the fallbacks' whole wait
    # cost: every call made for a request, shadows apart
    spent = 6 * 0.001 + 2 * 0.001 + 2 * 0.01 + 0.01
    assert doc["cost_per_call_after"] == pytest.approx(round(spent / 10, 8))
    assert after_doc["shadow_cost_per_call"] == pytest.approx(round(6 * 0.01 / 10, 8))
    # before: the error stays in the count and in the p95
    assert doc["before"]["requests"] == 5 and doc["before"]["errors"] == 1
    assert doc["p95_latency_ms_before"] == pytest.approx(percentile([100, 200, 300, 400, 50], 95))
    assert doc["cost_per_call_before"] == pytest.approx(0.04 / 5)
    # share and fallback rate in the same window, with their intervals
    assert doc["student_share"] == pytest.approx(0.7)
    assert doc["student_share_ci"] == [round(x, 4) for x in binomial_interval(7, 10)]
    assert doc["fallback_rate"] == pytest.approx(round(2 / 9, 4))  # of 9 student answers
    assert doc["fallback_rate_ci"] == [round(x, 4) for x in binomial_interval(2, 9)]
    # live agreement: 5 of 6 shadows agreed
    assert doc["agreement"] == pytest.approx(round(5 / 6, 4)) and doc["agreement_samples"] == 6
    assert doc["agreement_ci"] == [round(x, 4) for x in binomial_interval(5, 6)]
    # validation's figures, with theirs
    assert doc["holdout_agreement"] == 0.9 and doc["holdout_agreement_ci"] == [0.8, 0.95]
    assert doc["kept_agreement"] == 0.97 and doc["kept_agreement_ci"] == [0.9, 0.99]
    # the gate in force and where each threshold came from
    gate = doc["gate"]
    assert gate["gate.agreement"] == {"value": 0.6, "source": "toml"}
    assert gate["gate.kept_agreement"] == {"value": 0.95, "source": "tier:cost"}
    assert gate["gate.format_compliance"] == {"value": 0.99, "source": "default"}
    assert gate["rollout.max_latency_ratio"]["source"] == "default"
    assert doc["prices"]["teacher"]["input_per_mtok"] == 1.0
    # the story the chart tells: requests by route over time, the states, each gate, coverage
    assert sum(told["traffic"]["teacher"]) == 5 + 1  # before, and one after on the teacher
    assert sum(told["traffic"]["student"]) == 7 and sum(told["traffic"]["fallback"]) == 2
    assert [s["state"] for s in told["states"]] == ["grace", "rollout:50%", "serving"]
    assert told["gates"] == [
        {"kind": "LoRA", "agreement": 0.9, "agreement_ci": [0.8, 0.95], "passed": True, "bar": 0.9}
    ]
    doc["story"] = told
    svg = chart(doc, tmp_path).read_text()
    assert svg.count("<svg") == 1 + 4  # the story's three panels and the before/after bars
    assert svg.count('class="state"') == 2 * 3  # a band and a label per state
    assert svg.count('class="interval"') == 1 and svg.count('class="bar-line"') == 1
    assert "Coverage: kept answers" in svg
