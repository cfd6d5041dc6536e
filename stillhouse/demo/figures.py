"""The demo's final figures, read back from the store: what users got before the student (the
grace phase, all teacher) and after it (the calls sent once it serves), costs at the prices the
demo's config sets (stillhouse.pricing), agreement with the teacher (held out at validation, and
live: the shadow comparisons of the student's answers, but for those whose teacher answer broke
the task's schema, counted apart), share on the student, fallbacks."""

from __future__ import annotations

import json
from typing import Any

from ..config import Config
from ..report import CallRow, is_request, percentile, read_agreement, read_rows, route_of
from ..store.base import TraceStore
from .setup import TASK


def _phase(rows: list[CallRow], start: float, end: float | None) -> list[CallRow]:
    return [r for r in rows if r.created_at >= start and (end is None or r.created_at < end)]


def _summary(rows: list[CallRow]) -> dict[str, Any]:
    """Per user request: cost (the request's own call plus the teacher's fallback answer when
    it replaced the student's), p95 latency, routes. Shadow comparisons are costed apart: the
    demo samples every student answer (routing.shadow_rate = 1) to judge its stages on a few
    calls, where production samples 5%."""
    requests = [r for r in rows if is_request(r) and r.status == "ok"]
    ok = [r for r in rows if r.status == "ok"]
    cost = sum(r.cost or 0.0 for r in ok if route_of(r) != "shadow")
    shadow = sum(r.cost or 0.0 for r in ok if route_of(r) == "shadow")
    routes: dict[str, int] = {}
    for r in requests:
        routes[route_of(r)] = routes.get(route_of(r), 0) + 1
    latencies = [r.latency_ms for r in requests if r.latency_ms is not None]
    p95 = percentile(latencies, 0.95)
    n = len(requests)
    return {
        "requests": n,
        "routes": routes,
        "cost_per_call": round(cost / n, 8) if n else None,
        "shadow_cost_per_call": round(shadow / n, 8) if n else None,
        "p95_latency_ms": round(p95, 1) if p95 is not None else None,
    }


def figures(store: TraceStore, config: Config, marks: dict[str, float]) -> dict[str, Any]:
    rows = read_rows(store, marks["grace"], TASK)
    after_start = marks.get("after")
    rollout_start = min((v for k, v in marks.items() if k.startswith("rollout")), default=None)
    before = _summary(_phase(rows, marks["grace"], rollout_start or after_start))
    after = _summary(_phase(rows, after_start, None)) if after_start else None
    live = [v for _, _, v in read_agreement(store, rollout_start or marks["grace"], TASK)]
    # shadow comparisons whose teacher answer broke the task's schema: no reference, unscored
    unscored = store.query(
        "SELECT COUNT(*) FROM scores s JOIN calls c ON c.id = s.call_id WHERE c.task = ? "
        "AND s.name = 'shadow_agreement' AND s.label = 'teacher_off_schema' AND c.created_at >= ?",
        (TASK, rollout_start or marks["grace"]),
    )[0][0]
    student_rows = [r for r in rows if r.role == "student" and is_request(r)]
    replaced = [r for r in student_rows if r.route_reason == "fallback:replaced"]
    # the newest evaluation of a trained candidate (else of the prompt), and of the prompt
    validation: dict[str, Any] = {}
    prompt: dict[str, Any] = {}
    runs = store.query(
        "SELECT e.metrics, c.backend FROM eval_runs e JOIN candidates c ON c.id = e.candidate_id "
        "WHERE c.task = ? ORDER BY e.created_at DESC",
        (TASK,),
    )
    for metrics, backend in runs:
        doc = json.loads(metrics)
        if backend == "prompt":
            prompt = prompt or doc
        else:
            validation = validation or doc
    validation = validation or prompt
    after_requests = after["requests"] if after else 0
    on_student = after["routes"].get("student", 0) if after else 0
    return {
        "agreement": round(sum(live) / len(live), 4) if live else None,
        "agreement_samples": len(live),
        "teacher_off_schema": int(unscored),
        "holdout_agreement": validation.get("agreement"),
        "holdout_examples": validation.get("n"),
        "holdout_format_compliance": validation.get("format_compliance"),
        "prompt_agreement": prompt.get("agreement"),
        "student_share": round(on_student / after_requests, 4) if after_requests else 0.0,
        "fallback_rate": round(len(replaced) / len(student_rows), 4) if student_rows else None,
        "cost_per_call_before": before["cost_per_call"],
        "cost_per_call_after": after["cost_per_call"] if after else None,
        "p95_latency_ms_before": before["p95_latency_ms"],
        "p95_latency_ms_after": after["p95_latency_ms"] if after else None,
        "before": before,
        "after": after,
        "prices": {
            name: config.models[name].price.model_dump(exclude_none=True)  # type: ignore[union-attr]
            for name in ("teacher", "student")
            if config.models[name].price is not None
        },
    }
