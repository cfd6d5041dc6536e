"""The demo's final figures, read back from the store: what users got before the student (the
grace phase, all teacher) and after it (the requests sent once it serves), costs at the prices the
demo's config sets (stillhouse.pricing), agreement with the teacher, share on the student and
fallbacks, every rate with its interval (stats.binomial_interval) and the gate in force.

One window, what the user got: `after` holds every request sent once the student serves; a
fallback is counted once, as the teacher's call that answered it (stamped with the student's and
the teacher's time together: what the user waited); an errored request stays in the count, the
p95 and the cost. Agreement: `agreement` is live (shadow comparisons of the student answers users
kept; those whose teacher answer broke the task's schema are counted apart), `holdout_agreement`
and `kept_agreement` are what validation proved on held-out data (the latter out of sample, at
the calibrated threshold)."""

from __future__ import annotations

from typing import Any

from ..config import Config, TaskConfig
from ..report import CallRow, read_agreement, read_rows, route_of
from ..stats import binomial_interval, percentile, rate_interval
from ..store.base import TraceStore
from .setup import TASK


def _phase(rows: list[CallRow], start: float, end: float | None) -> list[CallRow]:
    return [r for r in rows if r.created_at >= start and (end is None or r.created_at < end)]


def user_requests(rows: list[CallRow]) -> list[CallRow]:
    """One row per request a user sent: the call that answered it. A fallback's replaced student
    answer is left out for the teacher's call that replaced it; shadows are no one's answer."""
    return [r for r in rows if route_of(r) != "shadow" and r.route_reason != "fallback:replaced"]


def _ci(interval: tuple[float, float]) -> list[float]:
    return [round(interval[0], 4), round(interval[1], 4)]


def _summary(rows: list[CallRow]) -> dict[str, Any]:
    """Per user request: cost (every call made for it, but the shadows: the student's and the
    teacher's on a fallback), p95 of what the user waited, routes, errors. Shadow comparisons are
    costed apart: the demo samples every student answer (routing.shadow_rate = 1) to judge its
    stages on a few calls, where production samples 5%."""
    requests = user_requests(rows)
    cost = sum(r.cost or 0.0 for r in rows if route_of(r) != "shadow")
    shadow = sum(r.cost or 0.0 for r in rows if route_of(r) == "shadow")
    routes: dict[str, int] = {}
    for r in requests:
        routes[route_of(r)] = routes.get(route_of(r), 0) + 1
    errors = sum(1 for r in requests if r.status != "ok")
    latencies = [r.latency_ms for r in requests if r.latency_ms is not None]
    p95 = percentile(latencies, 95)
    n = len(requests)
    return {
        "requests": n,
        "routes": routes,
        "errors": errors,
        "error_rate_ci": _ci(binomial_interval(errors, n)),
        "cost_per_call": round(cost / n, 8) if n else None,
        "shadow_cost_per_call": round(shadow / n, 8) if n else None,
        "p95_latency_ms": round(p95, 1) if p95 is not None else None,
    }


def gate_in_force(task: TaskConfig) -> dict[str, Any]:
    """Each threshold the demo's gates ran under, and where it came from (toml, tier, default)."""
    sources = {k: v["source"] for k, v in task.settings().items()}
    out: dict[str, Any] = {}
    for table in ("gate", "rollout"):
        section = getattr(task, table)
        for field in type(section).model_fields:
            if table == "rollout" and field not in ("max_latency_ratio", "min_samples"):
                continue
            key = f"{table}.{field}"
            source = sources.get(key) or (
                "toml" if field in section.model_fields_set else "default"
            )
            out[key] = {"value": getattr(section, field), "source": source}
    return out


def figures(
    store: TraceStore, config: Config, marks: dict[str, float], task: str = TASK
) -> dict[str, Any]:
    """The figures of `task`'s run, its phases at `marks` (grace, rollout:*, after)."""
    rows = read_rows(store, marks["grace"], task)
    after_start = marks.get("after")
    rollout_start = min((v for k, v in marks.items() if k.startswith("rollout")), default=None)
    before = _summary(_phase(rows, marks["grace"], rollout_start or after_start))
    after_rows = _phase(rows, after_start, None) if after_start else []
    after = _summary(after_rows) if after_start else None
    live = [v for _, _, v in read_agreement(store, rollout_start or marks["grace"], task)]
    # shadow comparisons whose teacher answer broke the task's schema: no reference, unscored
    unscored = store.off_schema_shadows(task, rollout_start or marks["grace"])
    # share and fallback rate in the p95's window: the requests sent once the student serves
    requests = user_requests(after_rows)
    student_answers = [r for r in after_rows if r.role == "student" and route_of(r) != "shadow"]
    replaced = [r for r in student_answers if r.route_reason == "fallback:replaced"]
    on_student = sum(1 for r in requests if r.role == "student")
    # the newest evaluation of a trained candidate (else of the prompt), and of the prompt
    validation: dict[str, Any] = {}
    prompt: dict[str, Any] = {}
    for doc, backend in store.eval_metrics(task):
        if backend == "prompt":
            prompt = prompt or doc
        else:
            validation = validation or doc
    validation = validation or prompt
    return {
        "gate": gate_in_force(config.tasks[task]),
        "tier": config.tasks[task].tier,
        "operating_point": validation.get("operating_point"),
        "agreement": round(sum(live) / len(live), 4) if live else None,
        "agreement_ci": _ci(rate_interval(live)),
        "agreement_samples": len(live),
        "teacher_off_schema": int(unscored),
        "holdout_agreement": validation.get("agreement"),
        "holdout_agreement_ci": validation.get("agreement_ci"),
        "holdout_examples": validation.get("n"),
        "holdout_format_compliance": validation.get("format_compliance"),
        "kept_agreement": validation.get("kept_agreement"),
        "kept_agreement_ci": validation.get("kept_agreement_ci"),
        "prompt_agreement": prompt.get("agreement"),
        "student_share": round(on_student / len(requests), 4) if requests else 0.0,
        "student_share_ci": _ci(binomial_interval(on_student, len(requests))),
        "fallback_rate": (
            round(len(replaced) / len(student_answers), 4) if student_answers else None
        ),
        "fallback_rate_ci": _ci(binomial_interval(len(replaced), len(student_answers))),
        "errors": after["errors"] if after else 0,
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
