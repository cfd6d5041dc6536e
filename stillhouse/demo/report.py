"""The demo's closing report: a few lines of text and an SVG chart (before / after bars for cost
per call and p95 latency, the share on the student and agreement), drawn with the dashboard's
chart helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..dashboard.charts import grouped_bars


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.1%}"


def _usd(v: float | None) -> str:
    return "-" if v is None else f"${v * 1000:.4f} per 1,000 calls"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f} ms"


def text(doc: dict[str, Any]) -> str:
    lines = [
        f"stillhouse demo ({doc['profile']}): {doc['outcome']} after {doc['wall_s']:.0f} s, "
        f"{doc['calls_sent']} {doc.get('task', 'triage')} requests sent",
        f"  states:            {' -> '.join(doc['states'])}",
        f"  agreement (live):  {_pct(doc['agreement'])} of {doc['agreement_samples']} "
        "student answers matched the teacher's (shadow comparisons; "
        f"{doc.get('teacher_off_schema', 0)} more where the teacher's own answer broke the "
        "task's schema, not counted)",
        f"  agreement (held out at validation): {_pct(doc['holdout_agreement'])} "
        f"on {doc['holdout_examples'] or '-'} examples",
        f"  prompt candidate:  {_pct(doc.get('prompt_agreement'))} held-out agreement "
        "(the student's base model with few-shot examples, tried before training)",
        f"  student share:     {_pct(doc['student_share'])} of the calls once it serves",
        f"  fallback rate:     {_pct(doc['fallback_rate'])} of student answers replaced "
        "by the teacher's",
        f"  cost per call:     {_usd(doc['cost_per_call_before'])} before -> "
        f"{_usd(doc['cost_per_call_after'])} after (+ "
        f"{_usd((doc.get('after') or {}).get('shadow_cost_per_call'))} of shadow comparisons, "
        "all sampled here, 5% in production)",
        f"  p95 latency:       {_ms(doc['p95_latency_ms_before'])} before -> "
        f"{_ms(doc['p95_latency_ms_after'])} after",
        "  prices: the teacher as a frontier-class API model "
        f"{doc['prices'].get('teacher')}, the student self-hosted {doc['prices'].get('student')} "
        "(set in the demo's stillhouse.toml; both run on this CPU here)",
    ]
    if doc.get("chart"):
        lines.append(f"  chart:             {doc['chart']}")
    return "\n".join(lines)


def chart(doc: dict[str, Any], folder: Path) -> Path:
    """demo.svg in `folder`: each figure before and after, as a percentage of its 'before'."""

    def rel(after: float | None, before: float | None) -> float:
        return 100 * after / before if after is not None and before else 0.0

    svg = grouped_bars(
        "Before (teacher) vs after (student serving), % of before",
        ["cost per call", "p95 latency"],
        {
            "before": [100.0, 100.0],
            "after": [
                rel(doc["cost_per_call_after"], doc["cost_per_call_before"]),
                rel(doc["p95_latency_ms_after"], doc["p95_latency_ms_before"]),
            ],
        },
        unit="%",
    )
    path = folder / "demo.svg"
    path.write_text(svg)
    return path
