"""Charts as hand-written SVG strings: no JavaScript, no build step, nothing to download.

Every data point is an element with a class (`point`, `bar`) so a browser test can count them.
Values are escaped; labels come from our own data but are escaped all the same.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

PALETTE = ("#2b6cb0", "#dd6b20", "#38a169", "#805ad5", "#d53f8c", "#718096")
W, H = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 40


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _num(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def _frame(title: str, y_max: float, x_labels: Sequence[str], unit: str) -> list[str]:
    plot_h = H - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{esc(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{esc(title)}</title>",
    ]
    for i in range(5):
        y = TOP + plot_h * i / 4
        value = y_max * (4 - i) / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{esc(_num(value) + unit)}</text>"
        )
    if x_labels:
        step = max(1, len(x_labels) // 6)
        for i in range(0, len(x_labels), step):
            x = x_at(i, len(x_labels))
            parts.append(
                f'<text class="tick" x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">'
                f"{esc(x_labels[i])}</text>"
            )
    return parts


def x_at(i: int, n: int) -> float:
    """The x of the middle of slot `i` of `n` across the plot."""
    span = W - LEFT - RIGHT
    return LEFT + (span * (i + 0.5) / n if n else 0)


def y_at(value: float, y_max: float) -> float:
    """The y of `value` on a plot whose top is `y_max`."""
    plot_h = H - TOP - BOTTOM
    return TOP + plot_h * (1 - (value / y_max if y_max else 0))


def _legend(names: Sequence[str]) -> list[str]:
    parts, x = [], LEFT
    for i, name in enumerate(names):
        color = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<rect x="{x}" y="{H - 14}" width="10" height="10" fill="{color}"/>'
            f'<text class="legend" x="{x + 14}" y="{H - 5}">{esc(name)}</text>'
        )
        x += 24 + 7 * len(name)
    return parts


def stacked_bars(
    title: str, x_labels: Sequence[str], series: Mapping[str, Sequence[float]], unit: str = ""
) -> str:
    """One stacked bar per bucket (e.g. calls per route per hour)."""
    n = len(x_labels)
    totals = [sum(values[i] for values in series.values()) for i in range(n)]
    y_max = max(totals, default=0) or 1
    parts = _frame(title, y_max, x_labels, unit)
    width = max(2.0, (W - LEFT - RIGHT) / max(n, 1) * 0.8)
    base = [0.0] * n
    for k, (name, values) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        for i, value in enumerate(values):
            if value <= 0:
                continue
            top, bottom = y_at(base[i] + value, y_max), y_at(base[i], y_max)
            parts.append(
                f'<rect class="bar" x="{x_at(i, n) - width / 2:.1f}" y="{top:.1f}" '
                f'width="{width:.1f}" height="{bottom - top:.1f}" fill="{color}">'
                f"<title>{esc(name)} {esc(x_labels[i])}: {esc(_num(value))}</title></rect>"
            )
            base[i] += value
    parts += _legend(list(series))
    parts.append("</svg>")
    return "".join(parts)


def lines(
    title: str,
    x_labels: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    unit: str = "",
    y_max: float | None = None,
) -> str:
    """A line per series over buckets; a None is a gap (no data in that bucket)."""
    n = len(x_labels)
    values = [v for s in series.values() for v in s if v is not None]
    top = y_max if y_max is not None else (max(values, default=0) or 1)
    parts = _frame(title, top, x_labels, unit)
    for k, (name, points) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        coords = [(x_at(i, n), y_at(v, top), v) for i, v in enumerate(points) if v is not None]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in coords)
            parts.append(f'<polyline class="line" points="{path}" stroke="{color}" fill="none"/>')
        present = [i for i, v in enumerate(points) if v is not None]
        for (x, y, v), i in zip(coords, present, strict=True):
            parts.append(
                f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}">'
                f"<title>{esc(name)} {esc(x_labels[i])}: {esc(_num(v) + unit)}</title></circle>"
            )
    parts += _legend(list(series))
    parts.append("</svg>")
    return "".join(parts)


def grouped_bars(
    title: str, categories: Sequence[str], series: Mapping[str, Sequence[float | None]], unit: str
) -> str:
    """Bars side by side per category (e.g. p50 and p95 latency per model)."""
    n, m = len(categories), max(len(series), 1)
    values = [v for s in series.values() for v in s if v is not None]
    y_max = max(values, default=0) or 1
    parts = _frame(title, y_max, categories, unit)
    group = (W - LEFT - RIGHT) / max(n, 1) * 0.8
    width = group / m
    for k, (name, points) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        for i, value in enumerate(points):
            if value is None:
                continue
            x = x_at(i, n) - group / 2 + k * width
            top = y_at(value, y_max)
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{top:.1f}" width="{width * 0.9:.1f}" '
                f'height="{H - BOTTOM - top:.1f}" fill="{color}">'
                f"<title>{esc(categories[i])} {esc(name)}: {esc(_num(value) + unit)}</title>"
                "</rect>"
            )
    parts += _legend(list(series))
    parts.append("</svg>")
    return "".join(parts)
