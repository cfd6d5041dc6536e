"""What each dashboard page shows, read from the store and shaped for its template.

These functions block on the database: the pages call them through run_in_threadpool, each with
a store connection of its own, never on the event loop. Tables that a store may not have yet
(lifecycle events, the registry) read as empty rather than failing the page.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from ..config import Config
from ..curate.pii import Scrubber, scrub
from ..pricing import call_cost
from ..report import (
    CallRow,
    _teacher_price,
    is_request,
    per_intent,
    per_model,
    quality,
    read_agreement,
    read_rows,
    route_of,
    task_costs,
)
from ..store.base import TraceStore
from ..store.records import CALL_COLUMNS, Candidate, Dataset, EvalRun
from . import charts

T = TypeVar("T")
BUCKETS = 24
ROUTE_ORDER = ("teacher", "student", "fallback", "shadow")


def optional(store: TraceStore, read: Callable[[], T], empty: T) -> T:
    """`read()`, or `empty` when its table is not there (an older or newer schema)."""
    try:
        return read()
    except Exception:  # the store has already ended the failed read's transaction
        return empty


def _label(ts: float, span: float) -> str:
    fmt = "%H:%M:%S" if span < 600 else "%H:%M" if span < 2 * 86_400 else "%m-%d %H:%M"
    return dt.datetime.fromtimestamp(ts).strftime(fmt)


class Buckets:
    """BUCKETS equal slices of time from the first call shown to now."""

    def __init__(self, start: float, end: float, n: int = BUCKETS) -> None:
        self.start, self.n = start, n
        self.width = max((end - start) / n, 1e-3)
        self.labels = [_label(start + self.width * (i + 1), end - start) for i in range(n)]

    def of(self, ts: float) -> int:
        return min(self.n - 1, max(0, int((ts - self.start) / self.width)))


def _ratios(parts: Sequence[float], wholes: Sequence[int]) -> list[float | None]:
    return [p / w if w else None for p, w in zip(parts, wholes, strict=True)]


def _buckets(rows: Sequence[CallRow], now: float) -> Buckets:
    start = rows[0].created_at if rows else now - 3600
    return Buckets(start, max(now, start + 1))


def traffic_chart(rows: Sequence[CallRow], b: Buckets, title: str) -> str | None:
    if not rows:
        return None
    series = {route: [0.0] * b.n for route in ROUTE_ORDER}
    for row in rows:
        series[route_of(row)][b.of(row.created_at)] += 1
    return charts.stacked_bars(title, b.labels, {k: v for k, v in series.items() if any(v)})


def latency_chart(models: dict[str, dict[str, Any]]) -> str | None:
    names = [m for m, v in models.items() if v["latency_ms"]["p50"] is not None]
    if not names:
        return None
    return charts.grouped_bars(
        "latency per model",
        names,
        {
            "p50": [models[m]["latency_ms"]["p50"] for m in names],
            "p95": [models[m]["latency_ms"]["p95"] for m in names],
        },
        "ms",
    )


def _lifecycle(store: TraceStore) -> dict[str, Any]:
    from ..lifecycle import events

    return optional(store, lambda: events.current_all(store), {})


def overview(store: TraceStore, config: Config, days: float, now: float | None = None) -> dict:
    now = now if now is not None else time.time()
    rows = read_rows(store, now - days * 86_400)
    scores = read_agreement(store, now - days * 86_400)
    states = _lifecycle(store)
    names = sorted(set(config.tasks) | {r.task for r in rows})
    tasks = []
    by_task: dict[str, list[CallRow]] = {}
    for row in rows:  # one pass, not one per task
        by_task.setdefault(row.task, []).append(row)
    for name in names:
        mine = by_task.get(name, [])
        state = states.get(name)
        tasks.append(
            {
                "name": name,
                "teacher": config.tasks[name].teacher if name in config.tasks else None,
                "student": config.tasks[name].student if name in config.tasks else None,
                "mode": (state.mode if state else None)
                or (config.tasks[name].mode if name in config.tasks else None),
                "state": str(state.state) if state else "grace",
                "share": state.share if state else 0.0,
                "costs": task_costs(mine, config, name, days, None),
                "quality": quality(mine, [v for t, _, v in scores if t == name]),
            }
        )
    models = per_model(rows, config)
    b = _buckets(rows, now)
    return {
        "tasks": tasks,
        "calls": len(rows),
        "traffic": traffic_chart(rows, b, "calls by route"),
        "models": models,
        "latency": latency_chart(models),
    }


def task_page(
    store: TraceStore, config: Config, task: str, days: float, now: float | None = None
) -> dict:
    from ..lifecycle import events

    now = now if now is not None else time.time()
    since = now - days * 86_400
    rows = read_rows(store, since, task)
    scores = read_agreement(store, since, task)
    b = _buckets(rows, now)
    # agreement and fallback rate per bucket; None where a bucket has nothing to measure
    agree_sum, agree_n = [0.0] * b.n, [0] * b.n
    for _, at, value in scores:
        agree_sum[b.of(at)] += value
        agree_n[b.of(at)] += 1
    attempted, replaced = [0] * b.n, [0] * b.n
    spent, teacher = [0.0] * b.n, [0.0] * b.n
    teacher_price = _teacher_price(config, task)
    for row in rows:
        i = b.of(row.created_at)
        spent[i] += row.cost or 0.0
        if row.role == "student":
            attempted[i] += 1
            replaced[i] += row.route_reason.startswith("fallback:")
        if is_request(row):
            would = (
                row.cost
                if row.role == "teacher"
                else call_cost(teacher_price, row.input_tokens, row.output_tokens)
            )
            teacher[i] += would or 0.0
    quality_chart = None
    if any(agree_n) or any(attempted):
        quality_chart = charts.lines(
            "agreement and fallback rate",
            b.labels,
            {
                "agreement": [
                    s / n if n else None for s, n in zip(agree_sum, agree_n, strict=True)
                ],
                "fallback rate": [
                    r / a if a else None for r, a in zip(replaced, attempted, strict=True)
                ],
            },
            y_max=1.0,
        )
    cost_chart = None
    if rows:
        cumulative: dict[str, list[float | None]] = {"spent": [], "all-teacher": []}
        total_s = total_t = 0.0
        for s, t in zip(spent, teacher, strict=True):
            total_s, total_t = total_s + s, total_t + t
            cumulative["spent"].append(total_s)
            cumulative["all-teacher"].append(total_t)
        cost_chart = charts.lines("cumulative spend ($)", b.labels, cumulative)
    models = per_model(rows, config)
    spec = config.tasks.get(task)
    found = registry(store, task)
    return {
        "name": task,
        "spec": spec,
        "calls": len(rows),
        "first_call": rows[0].created_at if rows else None,
        "timeline": optional(store, lambda: list(reversed(events.history(store, task))), []),
        "traffic": traffic_chart(rows, b, "calls by route"),
        "quality": quality(rows, [v for _, _, v in scores]),
        "intents": per_intent(store, since, task),
        "quality_chart": quality_chart,
        "costs": task_costs(rows, config, task, days, None),
        "cost_chart": cost_chart,
        "models": models,
        "latency": latency_chart(models),
        "coverage_chart": coverage_chart(found["eval_runs"]),
        **found,
    }


def coverage_chart(runs: dict[str, list[EvalRun]]) -> str | None:
    """The newest eval run's coverage curve: the kept answers' agreement and its lower bound at
    each share the student keeps (evaluate/calibrate.coverage); None before any eval run."""
    newest = max(
        (r for found in runs.values() for r in found if (r.metrics or {}).get("coverage")),
        key=lambda r: r.created_at,
        default=None,
    )
    if newest is None:
        return None
    points = newest.metrics["coverage"]["overall"]
    return charts.lines(
        f"coverage of {newest.candidate_id} ({newest.id})",
        [f"{p['student_share']:.0%}" for p in points],
        {
            "kept agreement": [p["kept_agreement"] for p in points],
            "lower bound": [p["kept_low"] for p in points],
        },
        y_max=1.0,
    )


def registry(store: TraceStore, task: str | None = None) -> dict[str, Any]:
    """Datasets, and candidates with their eval runs (empty until there are any)."""
    no_datasets: list[Dataset] = []
    no_candidates: list[Candidate] = []
    datasets = optional(store, lambda: store.list_datasets(task), no_datasets)
    candidates = optional(store, lambda: store.list_candidates(task), no_candidates)
    runs: dict[str, list[EvalRun]] = {}
    for c in candidates:
        no_runs: list[EvalRun] = []
        runs[c.id] = optional(store, functools.partial(store.list_eval_runs, c.id), no_runs)
    return {"datasets": datasets, "candidates": candidates, "eval_runs": runs}


def list_calls(
    store: TraceStore,
    task: str | None,
    role: str | None,
    status: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """The newest calls matching the filters, without their bodies (a preview of the question)."""
    calls = store.list_calls(task or None, limit, role or None, status or None)
    out = []
    for c in calls:
        users = [m for m in c.request.get("messages", []) if m.get("role") == "user"]
        content = users[-1].get("content") if users else ""
        text = content if isinstance(content, str) else orjson.dumps(content).decode()
        out.append({"call": c, "preview": scrub(" ".join(str(text).split()))[:80]})
    return out


def call_view(store: TraceStore, call_id: str) -> dict[str, Any] | None:
    """One call with its request and response as indented JSON, PII scrubbed."""
    call = store.get_call(call_id)
    if call is None:
        return None

    def pretty(value: Any) -> str:
        return scrub(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())

    # session_key is often the caller's `user` (an email) and an error may quote the request:
    # every text field is scrubbed like the bodies.
    fields = {
        k: scrub(v) if isinstance(v, str) else v
        for k, v in call.to_dict().items()
        if k not in ("request", "response", "metadata")
    }
    return {
        "call": call,
        "fields": fields,
        "request": pretty(call.request),
        "response": pretty(call.response) if call.response is not None else None,
        "metadata": pretty(call.metadata),
        "scores": store.scores_for(call_id),
        "columns": CALL_COLUMNS,
    }


def review_items(store: TraceStore, config: Config, task: str | None) -> list[dict[str, Any]]:
    """The review queue as the dashboard shows it: each item's question and answers with PII
    scrubbed, like every other page (a reviewer judges the answer, not the customer's card)."""
    from .. import review

    review.enqueue(store, config)
    scrubber = Scrubber()
    out = []
    for item in review.items(store, task, limit=50):
        doc = review.show(store, item)
        doc["messages"] = [
            {"role": m["role"], "content": scrubber.value(m["content"])} for m in doc["messages"]
        ]
        for key in ("answer", "teacher_answer"):
            if isinstance(doc[key], str):
                doc[key] = scrubber.text(doc[key])
        out.append(doc)
    return out
