"""Costs, savings, latency and quality from the captured calls; and what-if costs from prices.

`report` reads the store (one read per table, aggregated here in Python so SQLite and PostgreSQL
give the same numbers); `what_if` is pure arithmetic. The CLI and the dashboard both print these.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .config import Config, Price
from .errors import ConfigError
from .pricing import call_cost, price_for, price_source
from .pricing_catalog import CATALOG_DATE, CATALOG_SOURCE, catalog_key, catalog_price
from .stats import percentile
from .store.base import TraceStore

DAYS_PER_MONTH = 30
ROUTES = ("teacher", "student", "fallback", "shadow")


class CallRow(NamedTuple):
    """The columns of a call that costs, latency and traffic need (no request or response)."""

    id: str
    task: str
    created_at: float
    role: str
    model: str
    route_reason: str
    status: str
    latency_ms: float | None
    ttft_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost: float | None


def route_of(row: CallRow) -> str:
    """teacher | student | fallback | shadow. A fallback is the student answer that was replaced
    and the teacher answer that replaced it; a shadow call is a background comparison."""
    if row.route_reason == "shadow":
        return "shadow"
    if row.route_reason == "fallback" or row.route_reason.startswith("fallback:"):
        return "fallback"
    return row.role


def is_request(row: CallRow) -> bool:
    """Whether the row is what a user asked for (not the teacher's extra shadow or fallback)."""
    return row.route_reason not in ("shadow", "fallback")


def read_rows(store: TraceStore, since: float, task: str | None = None) -> list[CallRow]:
    return [CallRow(*r) for r in store.report_rows(since, task)]


def read_agreement(
    store: TraceStore, since: float, task: str | None = None
) -> list[tuple[str, float, float]]:
    """(task, call time, value) of every shadow agreement score on calls since `since`."""
    return store.agreement_scores(since, task)


def _r(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _quantiles(values: Sequence[float]) -> dict[str, float | None]:
    return {"p50": _r(percentile(values, 50), 1), "p95": _r(percentile(values, 95), 1)}


@dataclass
class _Acc:
    calls: int = 0
    errors: int = 0
    cost: float = 0.0
    unpriced: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, row: CallRow) -> None:
        self.calls += 1
        self.errors += row.status != "ok"
        self.input_tokens += row.input_tokens or 0
        self.output_tokens += row.output_tokens or 0
        if row.cost is None:
            self.unpriced += row.status == "ok"
        else:
            self.cost += row.cost


def _teacher_price(config: Config, task: str) -> Price | None:
    spec = config.tasks.get(task)
    if spec is None or spec.teacher not in config.models:
        return None
    return price_for(config.models[spec.teacher])


def task_costs(
    rows: Iterable[CallRow], config: Config, task: str, days: float, calls_per_day: float | None
) -> dict[str, Any]:
    """Spend of one task's calls against the all-teacher counterfactual, per call and monthly."""
    teacher_price = _teacher_price(config, task)
    spent, counterfactual, requests, unpriced = 0.0, 0.0, 0, 0
    for row in rows:
        spent += row.cost or 0.0
        if not is_request(row):
            continue
        requests += 1
        if row.role == "teacher":
            counterfactual += row.cost or 0.0
        else:
            would = call_cost(teacher_price, row.input_tokens, row.output_tokens)
            if would is None:
                unpriced += 1
            counterfactual += would or 0.0
    per_day = calls_per_day if calls_per_day is not None else requests / days
    per_call = spent / requests if requests else None
    teacher_per_call = counterfactual / requests if requests else None
    monthly = None if per_call is None else per_call * per_day * DAYS_PER_MONTH
    teacher_monthly = (
        None if teacher_per_call is None else teacher_per_call * per_day * DAYS_PER_MONTH
    )
    saving = None if monthly is None or teacher_monthly is None else teacher_monthly - monthly
    return {
        "requests": requests,
        "spent": _r(spent, 6),
        "calls_per_day": _r(per_day, 2),
        "cost_per_call": _r(per_call, 8),
        "teacher_cost_per_call": _r(teacher_per_call, 8),
        "monthly": _r(monthly, 2),
        "teacher_monthly": _r(teacher_monthly, 2),
        "saving_monthly": _r(saving, 2),
        "saving_fraction": _r(saving / teacher_monthly, 4)
        if saving is not None and teacher_monthly
        else None,
        "unpriced_requests": unpriced,
    }


def per_model(rows: Iterable[CallRow], config: Config) -> dict[str, dict[str, Any]]:
    """Calls, cost and p50/p95 latency and time to first token of each model. A fallback's
    teacher call is stamped with what the user waited (the student's time too), so it is left
    out of the teacher's own latency."""
    accs: dict[str, _Acc] = {}
    latency: dict[str, list[float]] = {}
    ttft: dict[str, list[float]] = {}
    for row in rows:
        accs.setdefault(row.model, _Acc()).add(row)
        if row.route_reason == "fallback":
            continue
        if row.status == "ok" and row.latency_ms is not None:
            latency.setdefault(row.model, []).append(row.latency_ms)
        if row.status == "ok" and row.ttft_ms is not None:
            ttft.setdefault(row.model, []).append(row.ttft_ms)
    out = {}
    for model, acc in sorted(accs.items()):
        lat, first = latency.get(model, []), ttft.get(model, [])
        spec = config.models.get(model)
        out[model] = {
            "calls": acc.calls,
            "errors": acc.errors,
            "cost": _r(acc.cost, 6),
            "cost_per_call": _r(acc.cost / acc.calls, 8) if acc.calls else None,
            "input_tokens": acc.input_tokens,
            "output_tokens": acc.output_tokens,
            "price_source": price_source(spec) if spec else "none",
            "latency_ms": _quantiles(lat),
            "ttft_ms": _quantiles(first),
        }
    return out


def per_route(rows: Iterable[CallRow]) -> dict[str, dict[str, Any]]:
    accs = {route: _Acc() for route in ROUTES}
    for row in rows:
        accs[route_of(row)].add(row)
    return {
        route: {
            "calls": acc.calls,
            "cost": _r(acc.cost, 6),
            "cost_per_call": _r(acc.cost / acc.calls, 8) if acc.calls else None,
        }
        for route, acc in accs.items()
    }


def quality(rows: Iterable[CallRow], agreement: Sequence[float]) -> dict[str, Any]:
    """Mean shadow agreement, and the share of student answers the teacher replaced; None
    where there is nothing to measure yet."""
    attempted = replaced = 0
    for row in rows:
        if row.role == "student":
            attempted += 1
            replaced += row.route_reason.startswith("fallback:")
    return {
        "agreement": _r(sum(agreement) / len(agreement), 4) if agreement else None,
        "agreement_samples": len(agreement),
        "fallback_rate": _r(replaced / attempted, 4) if attempted else None,
        "student_answers": attempted,
    }


def _intent(metadata: Any) -> str:
    meta = metadata or {}
    return str(meta.get("intent") or meta.get("routed_intent") or "unknown")


def per_intent(store: TraceStore, since: float, task: str) -> dict[str, dict[str, Any]]:
    """Traffic and agreement by intent: the caller's metadata.intent, else the intent the gateway
    told from the snapshot's intent model (`routed_intent`), else "unknown"."""
    out: dict[str, dict[str, Any]] = {}
    for role, reason, metadata in store.intent_traffic(task, since):
        if reason in ("shadow", "fallback"):
            continue
        entry = out.setdefault(
            _intent(metadata),
            {"requests": 0, "student": 0, "teacher": 0, "fallbacks": 0, "agreement": []},
        )
        entry["requests"] += 1
        entry[role] = entry.get(role, 0) + 1
        entry["fallbacks"] += str(reason).startswith("fallback:")
    for metadata, value in store.intent_agreement(task, since):
        intent = _intent(metadata)
        if intent in out:
            out[intent]["agreement"].append(float(value))
    for entry in out.values():
        agreement = entry.pop("agreement")
        entry["student_share"] = _r(entry["student"] / entry["requests"], 4)
        entry["agreement"] = _r(sum(agreement) / len(agreement), 4) if agreement else None
        entry["agreement_samples"] = len(agreement)
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["requests"], kv[0])))


def report(
    store: TraceStore,
    config: Config,
    *,
    task: str | None = None,
    days: float = 7,
    calls_per_day: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """The `report --json` document: per task (every configured task, and any seen in the store
    in the window), costs, per model, per route and quality."""
    if task is not None:
        config.task(task)  # an unknown task is an error naming the known ones
    since = (now if now is not None else time.time()) - days * 86_400
    rows = read_rows(store, since, task)
    scores = read_agreement(store, since, task)
    names = [task] if task else sorted(set(config.tasks) | {r.task for r in rows})
    tasks = {}
    for name in names:
        mine = [r for r in rows if r.task == name]
        agreement = [v for t, _, v in scores if t == name]
        tasks[name] = {
            "teacher": config.tasks[name].teacher if name in config.tasks else None,
            "student": config.tasks[name].student if name in config.tasks else None,
            "costs": task_costs(mine, config, name, days, calls_per_day),
            "models": per_model(mine, config),
            "routes": per_route(mine),
            "quality": quality(mine, agreement),
            "intents": per_intent(store, since, name),
        }
    return {
        "window_days": days,
        "since": since,
        "days_per_month": DAYS_PER_MONTH,
        "prices": {"catalog_date": CATALOG_DATE, "catalog_source": CATALOG_SOURCE},
        "tasks": tasks,
    }


# -- what-if -------------------------------------------------------------------------------------
def resolve_price(name: str, config: Config | None) -> tuple[Price, str]:
    """A model named in stillhouse.toml (its price, else the catalog's) or in the catalog."""
    if config is not None and name in config.models:
        price = price_for(config.models[name])
        if price is not None:
            return price, price_source(config.models[name])
    price = catalog_price(name)
    if price is None:
        raise ConfigError(
            f"no price for model '{name}': give it a price in stillhouse.toml "
            "(models.<m>.price) or use a catalog name (see docs/costs.md)"
        )
    return price, f"catalog:{catalog_key(name)}"


def what_if(
    teacher: str,
    student: str,
    *,
    share: float,
    calls_per_day: float,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    config: Config | None = None,
) -> dict[str, Any]:
    """All-teacher against a hybrid where `share` of calls go to the student: per call and per
    30-day month, and the saving. Assumes the student sees the same token counts."""
    if not 0 <= share <= 1:
        raise ConfigError("--share must be between 0 and 1")
    t_price, t_source = resolve_price(teacher, config)
    s_price, s_source = resolve_price(student, config)
    t_call = call_cost(t_price, input_tokens, output_tokens, cached_tokens) or 0.0
    s_call = call_cost(s_price, input_tokens, output_tokens, cached_tokens) or 0.0
    hybrid = share * s_call + (1 - share) * t_call
    month = calls_per_day * DAYS_PER_MONTH
    t_month, h_month = t_call * month, hybrid * month
    return {
        "assumptions": {
            "calls_per_day": calls_per_day,
            "input_tokens": input_tokens,
            "cached_tokens": cached_tokens,
            "output_tokens": output_tokens,
            "student_share": share,
            "days_per_month": DAYS_PER_MONTH,
            "catalog_date": CATALOG_DATE,
        },
        "teacher": {
            "model": teacher,
            "price_source": t_source,
            "per_call": round(t_call, 8),
            "monthly": round(t_month, 2),
        },
        "student": {
            "model": student,
            "price_source": s_source,
            "per_call": round(s_call, 8),
            "monthly": round(s_call * month, 2),
        },
        "hybrid": {"per_call": round(hybrid, 8), "monthly": round(h_month, 2)},
        "saving": {
            "per_call": round(t_call - hybrid, 8),
            "monthly": round(t_month - h_month, 2),
            "fraction": round((t_month - h_month) / t_month, 4) if t_month else None,
        },
    }
