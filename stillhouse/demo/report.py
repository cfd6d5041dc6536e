"""The demo's closing report: a few lines of text and an SVG chart (the story: traffic by route
over time under the lifecycle's states, agreement at each gate with its interval, the coverage
curve; then before / after bars for cost per call and p95 latency), drawn with the dashboard's
chart helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..dashboard.charts import (
    BOTTOM,
    LEFT,
    PALETTE,
    RIGHT,
    TOP,
    H,
    W,
    esc,
    grouped_bars,
    lines,
    stacked_bars,
    x_at,
    y_at,
)


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
    """demo.svg in `folder`: the story (traffic by route over time under the lifecycle's states,
    each gate's agreement with its interval, the coverage curve the threshold was chosen on) and
    the before/after bars, as panels of one SVG."""
    told = doc.get("story") or {}
    panels = [*(_story_panels(told) if told else []), _before_after(doc)]
    height = H * len(panels)
    parts = [
        f'<svg class="demo" viewBox="0 0 {W} {height}" role="img" '
        'aria-label="stillhouse demo" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, panel in enumerate(panels):
        parts.append(panel.replace("<svg ", f'<svg x="0" y="{i * H}" width="{W}" height="{H}" ', 1))
    parts.append("</svg>")
    path = folder / "demo.svg"
    path.write_text("".join(parts))
    return path


def _before_after(doc: dict[str, Any]) -> str:
    def rel(after: float | None, before: float | None) -> float:
        return 100 * after / before if after is not None and before else 0.0

    return grouped_bars(
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


def _story_panels(told: dict[str, Any]) -> list[str]:
    seconds = max(float(told["seconds"]), 1.0)
    n = len(next(iter(told["traffic"].values())))
    labels = [f"{round(seconds * i / n / 60)} min" for i in range(n)]
    traffic = stacked_bars(
        "Requests by route over time, lifecycle states above", labels, told["traffic"]
    )
    bands = []
    spans = told["states"]
    for k, span in enumerate(spans):
        end = spans[k + 1]["t"] if k + 1 < len(spans) else seconds
        x0 = LEFT + (W - LEFT - RIGHT) * span["t"] / seconds
        x1 = LEFT + (W - LEFT - RIGHT) * min(end, seconds) / seconds
        bands.append(
            f'<rect class="state" x="{x0:.1f}" y="{TOP}" width="{max(x1 - x0, 0.5):.1f}" '
            f'height="{H - TOP - BOTTOM}" fill="{PALETTE[k % len(PALETTE)]}" opacity="0.08">'
            f"<title>{esc(span['state'])} from {span['t']:.0f} s</title></rect>"
            f'<text class="state" x="{x0 + 2:.1f}" y="{TOP + 10 + 10 * (k % 3)}" '
            f'font-size="9">{esc(span["state"])}</text>'
        )
    traffic = traffic.replace("</svg>", "".join(bands) + "</svg>")
    panels = [traffic]
    if told["gates"]:
        panels.append(_gates(told["gates"]))
    curve = [p for p in reversed(told["coverage"]) if p.get("kept_agreement") is not None]
    if curve:
        panels.append(
            lines(
                "Coverage: kept answers' agreement (and lower bound) vs share kept",
                [f"{p['student_share']:.0%}" for p in curve],
                {
                    "kept agreement": [100 * p["kept_agreement"] for p in curve],
                    "lower bound": [100 * p["kept_low"] for p in curve],
                },
                unit="%",
                y_max=100,
            )
        )
    return panels


def _gates(gates: list[dict[str, Any]]) -> str:
    """Each gate's held-out agreement as a point with its 95% interval, and the bar it faced."""
    labels = [f"{g['kind']} {i + 1}" for i, g in enumerate(gates)]
    svg = lines(
        "Agreement at each gate, with its 95% interval; the bar it faced",
        labels,
        {"agreement": [100 * (g["agreement"] or 0) for g in gates]},
        unit="%",
        y_max=100,
    )
    marks = []
    for i, g in enumerate(gates):
        x = x_at(i, len(gates))
        low, high = g.get("agreement_ci") or (0.0, 0.0)
        marks.append(
            f'<line class="interval" x1="{x:.1f}" x2="{x:.1f}" y1="{y_at(high, 1):.1f}" '
            f'y2="{y_at(low, 1):.1f}" stroke="#2b6cb0" stroke-width="2"/>'
        )
        if g.get("bar") is not None:
            y = y_at(g["bar"], 1)
            marks.append(
                f'<line class="bar-line" x1="{x - 20:.1f}" x2="{x + 20:.1f}" y1="{y:.1f}" '
                f'y2="{y:.1f}" stroke="#c53030" stroke-dasharray="3 2">'
                f"<title>bar {g['bar']}</title></line>"
            )
    return svg.replace("</svg>", "".join(marks) + "</svg>")
