"""An eval run for people: a terminal table and a hand-written SVG chart (the coverage curve:
student share against the kept answers' agreement and its lower bound; and agreement per intent),
written beside the run. No plotting library: the chart is a few
dozen SVG elements, and `stillhouse serve` must stay light.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _operating_point(point: dict[str, Any] | None) -> str:
    """The headline: how much the student keeps at its threshold, and how well (out of sample)."""
    if point is None:
        return "-"
    floor = point.get("min_coverage")
    return (
        f"the student keeps {_pct(point['coverage'])} of answers"
        f"{'' if floor is None else f' (min {_pct(floor)})'}; they agree "
        f"{_pct(point['kept_agreement'])}, lower bound {_pct(point['kept_low'])} "
        f"(target {_pct(point['target'])}; out of sample)"
    )


def table(doc: dict[str, Any]) -> str:
    """The eval run as aligned text: headline numbers, the gate's checks, agreement per intent."""
    low, high = doc["agreement_ci"]
    cal = doc["calibration"]
    threshold = doc["confidence_threshold"]
    rows = [
        ("eval", f"{doc['eval']}  ({'PASSED' if doc['passed'] else 'FAILED'})"),
        ("candidate", f"{doc['candidate']} on {doc['dataset']} ({doc['n']} holdout examples)"),
        ("metric", f"{doc['metric']} ({doc['method']})"),
        ("operating point", _operating_point(doc.get("operating_point"))),
        ("agreement", f"{_pct(doc['agreement'])}  95% CI [{_pct(low)}, {_pct(high)}]"),
        (
            "kept agreement",
            "-"
            if doc.get("kept_agreement") is None
            else f"{_pct(doc['kept_agreement'])}  95% CI "
            f"[{_pct(doc['kept_agreement_ci'][0])}, {_pct(doc['kept_agreement_ci'][1])}] "
            "(out of sample)",
        ),
        (
            "majority answer",
            "-"
            if not doc.get("majority_baseline")
            else f"{_pct(doc['majority_baseline']['agreement'])} (the teacher's most common "
            "answer, given to every example)",
        ),
        ("format compliance", _pct(doc["format_compliance"])),
        ("hallucination", f"{_pct(doc['hallucination']['rate'])} of {doc['hallucination']['n']}"),
        (
            "latency",
            f"p50 {_ms(doc['latency_ms']['p50'])}, p95 {_ms(doc['latency_ms']['p95'])} "
            f"(concurrency {doc['concurrency']})",
        ),
        (
            "cost per call",
            "-" if doc["cost_per_call"] is None else f"${doc['cost_per_call']:.6f}",
        ),
        (
            "confidence threshold",
            "none (no confidence reported)"
            if threshold is None
            else f"{threshold:.3f} on {cal.get('signal', 'p10')}: {_pct(cal['teacher_share'])} to "
            "the teacher, kept "
            f"{_pct(cal['kept_agreement'])} (target {_pct(cal['target'])}"
            f"{'' if cal['reached'] else ', not reached'})",
        ),
    ]
    by_intent = cal.get("intent_thresholds")
    if by_intent:  # the threshold above is then the one for intents not listed
        own = ", ".join(f"{k} {v:.3f}" for k, v in sorted(by_intent.items()))
        rows.append(("per-intent thresholds", f"{own} (others: the threshold above)"))
    if doc.get("versus"):
        v = doc["versus"]
        d_low, d_high = v["difference_ci"]
        rows.append(
            (
                "vs serving student",
                f"{v['candidate']}: {_pct(v['agreement'])}, difference [{d_low:+.3f}, "
                f"{d_high:+.3f}]",
            )
        )
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    lines.append("")
    lines.append("gate")
    for check in doc["gate"]["checks"]:
        lines.append(
            f"  {'ok  ' if check['passed'] else 'FAIL'}  {check['name']}: {check['detail']}"
        )
    if doc["per_intent"]:
        lines.append("")
        name_w = max(6, *(len(k) for k in doc["per_intent"]))
        lines.append(f"  {'intent'.ljust(name_w)}  {'n':>5}  agreement  95% CI")
        for name, row in doc["per_intent"].items():
            ci = row.get("agreement_ci") or [None, None]
            lines.append(
                f"  {name.ljust(name_w)}  {row['n']:>5}  {_pct(row['agreement']):>9}  "
                f"[{_pct(ci[0])}, {_pct(ci[1])}]"
            )
    curve = (doc.get("coverage") or {}).get("overall") or []
    if curve:
        lines.append("")
        lines.append("  coverage: student share  kept agreement  lower bound  threshold")
        for p in curve:
            threshold = "-" if p["threshold"] is None else f"{p['threshold']:.3f}"
            lines.append(
                f"  {_pct(p['student_share']):>23}  {_pct(p['kept_agreement']):>14}  "
                f"{_pct(p['kept_low']):>11}  {threshold}"
            )
    return "\n".join(lines) + "\n"


W, H, PAD = 420, 260, 40  # one panel


def _coverage_panel(doc: dict[str, Any]) -> list[str]:
    """The coverage curve: kept agreement (y, solid) and its lower bound (dashed) against the
    share the student keeps (x, all of it at the right); the target as a red dashed line, the
    chosen threshold as a dot."""
    cal = doc["calibration"]
    inner_w, inner_h = W - 2 * PAD, H - 2 * PAD

    def x(student_share: float) -> float:
        return PAD + student_share * inner_w

    def y(agreement: float) -> float:
        return PAD + (1 - agreement) * inner_h

    out = [
        f'<text x="{W / 2}" y="20" text-anchor="middle">coverage: student share vs kept '
        "agreement</text>",
        f'<rect x="{PAD}" y="{PAD}" width="{inner_w}" height="{inner_h}" fill="none" '
        'stroke="#999"/>',
        f'<text x="{W / 2}" y="{H - 8}" text-anchor="middle">share the student keeps</text>',
        f'<text x="{PAD - 4}" y="{PAD + 4}" text-anchor="end">100%</text>',
        f'<text x="{PAD - 4}" y="{H - PAD}" text-anchor="end">0%</text>',
    ]
    target = cal["target"]
    out.append(
        f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(target):.1f}" y2="{y(target):.1f}" '
        'stroke="#c33" stroke-dasharray="4 3"/>'
    )
    curve = (doc.get("coverage") or {}).get("overall") or []
    points = [p for p in curve if p["kept_agreement"] is not None]
    if points:
        path = " ".join(f"{x(p['student_share']):.1f},{y(p['kept_agreement']):.1f}" for p in points)
        low = " ".join(f"{x(p['student_share']):.1f},{y(p['kept_low']):.1f}" for p in points)
        out.append(f'<polyline points="{path}" fill="none" stroke="#36c" stroke-width="2"/>')
        out.append(f'<polyline points="{low}" fill="none" stroke="#36c" stroke-dasharray="3 2"/>')
    if cal["threshold"] is not None and cal["kept_agreement"] is not None:
        cx, cy = x(1 - cal["teacher_share"]), y(cal["kept_agreement"])
        out.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="#c33"/>')
        out.append(
            f'<text x="{cx + 8:.1f}" y="{cy + 14:.1f}">threshold {cal["threshold"]:.3f}</text>'
        )
    return out


def _intent_panel(doc: dict[str, Any]) -> list[str]:
    """Agreement per intent as horizontal bars, the gate's threshold as a line."""
    intents = list(doc["per_intent"].items())
    bar_h = 18
    label_w = 140
    inner_w = W - label_w - PAD
    out = [f'<text x="{W / 2}" y="20" text-anchor="middle">agreement per intent</text>']
    for i, (name, row) in enumerate(intents):
        top = PAD + i * (bar_h + 4)
        out.append(
            f'<text x="{label_w - 6}" y="{top + 13}" text-anchor="end">{escape(name[:20])}</text>'
        )
        out.append(
            f'<rect x="{label_w}" y="{top}" width="{row["agreement"] * inner_w:.1f}" '
            f'height="{bar_h}" fill="#36c"/>'
        )
        out.append(
            f'<text x="{label_w + row["agreement"] * inner_w + 4:.1f}" y="{top + 13}">'
            f"{row['agreement']:.0%} (n={row['n']})</text>"
        )
    bound = doc["gate"]["rules"]["agreement"]
    gx = label_w + bound * inner_w
    bottom = PAD + max(1, len(intents)) * (bar_h + 4)
    out.append(
        f'<line x1="{gx:.1f}" x2="{gx:.1f}" y1="{PAD - 4}" y2="{bottom}" stroke="#c33" '
        'stroke-dasharray="4 3"/>'
    )
    return out


def svg(doc: dict[str, Any]) -> str:
    """Both panels side by side in one standalone SVG document."""
    rows = max(1, len(doc["per_intent"]))
    height = max(H, PAD * 2 + rows * 22)
    low, high = doc["agreement_ci"]
    title = (
        f"{doc['eval']} - {doc['candidate']}: agreement {doc['agreement']:.1%} "
        f"[{low:.1%}, {high:.1%}], {'passed' if doc['passed'] else 'failed'}"
    )
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{height + 30}" '
        f'font-family="sans-serif" font-size="11">',
        f"<title>{escape(title)}</title>",
        f'<text x="{W}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
        '<g transform="translate(0,24)">',
        *_coverage_panel(doc),
        "</g>",
        f'<g transform="translate({W},24)">',
        *_intent_panel(doc),
        "</g>",
        "</svg>",
    ]
    return "\n".join(body) + "\n"


def write(doc: dict[str, Any], folder: Path) -> dict[str, Path]:
    """report.txt and chart.svg in `folder` (created); their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"table": folder / "report.txt", "chart": folder / "chart.svg"}
    paths["table"].write_text(table(doc))
    paths["chart"].write_text(svg(doc))
    return paths
