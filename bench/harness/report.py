"""The gateway benchmark's report: per (mode, rate) the pooled direct, gateway and LiteLLM
percentiles, what the gateway adds and the ratio, the wrk maxima, and the markdown tables.
Pure functions of the result dict: they never run anything.
"""

from __future__ import annotations

import collections
from typing import Any

from stillhouse.stats import percentile


def _pooled(runs: list[dict[str, Any]], key: str, q: float) -> float | None:
    return percentile([v for r in runs for v in r[key]], q)


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Per (mode, rate): pooled direct vs gateway vs litellm, added latency and ratio."""
    cells: list[dict[str, Any]] = []
    loops = [r for r in result["runs"] if r["kind"] == "open-loop"]
    keys = sorted({(r["stream"], r["rate"]) for r in loops})
    for stream, rate in keys:
        group = [r for r in loops if r["stream"] == stream and r["rate"] == rate]
        by = collections.defaultdict(list)
        for r in group:
            by[r["target"]].append(r)
        cell: dict[str, Any] = {
            "stream": stream,
            "rate": rate,
            "foreign_cpu_max_pct": max(r["foreign_cpu_pct"] for r in group),
        }
        for target, runs in by.items():
            t: dict[str, Any] = {}
            for name, q in (("p50", 50), ("p99", 99)):
                t[f"{name}_ms"] = _pooled(runs, "_lat", q)
                if stream:
                    t[f"ttft_{name}_ms"] = _pooled(runs, "_ttft", q)
            t["sustained"] = all(r["sustained"] for r in runs)
            t["achieved_rps"] = min(r["achieved_rps"] or 0 for r in runs)
            t["errors"] = sum(sum(r["errors"].values()) + r["unfinished"] for r in runs)
            t["cpu_us_per_req"] = runs[0].get("target_cpu_us_per_req")
            cell[target] = t
        d = cell.get("direct")
        if d and len(by["direct"]) == 2:
            a, b = by["direct"]
            cell["direct_drift_p50_ms"] = (
                round(b["p50_ms"] - a["p50_ms"], 3) if (a["p50_ms"] and b["p50_ms"]) else None
            )
            cell["direct_drift_p99_ms"] = (
                round(b["p99_ms"] - a["p99_ms"], 3) if (a["p99_ms"] and b["p99_ms"]) else None
            )
        for target in ("gateway", "litellm"):
            t = cell.get(target) or {}
            if not (t and d):
                continue
            for name in ("p50", "p99") + (("ttft_p50", "ttft_p99") if stream else ()):
                gv, dv = t.get(f"{name}_ms"), d.get(f"{name}_ms")
                if gv is not None and dv is not None:
                    t[f"added_{name}_ms"] = round(gv - dv, 3)
                    t[f"ratio_{name}"] = round(gv / dv, 3) if dv else None
        for t in (v for v in cell.values() if isinstance(v, dict)):
            for k, v in list(t.items()):
                if isinstance(v, float):
                    t[k] = round(v, 3)
        cells.append(cell)
    wrk = {}
    for r in result["runs"]:
        if r["kind"] == "wrk":
            mode = "stream" if r["stream"] else "json"
            wrk[f"{r['target']}/{mode}/c{r['connections']}"] = {
                k: r.get(k)
                for k in (
                    "rps",
                    "p50_ms",
                    "p99_ms",
                    "non_2xx",
                    "socket_errors",
                    "target_cpu_us_per_req",
                    f"{r['target']}_cpu_pct",
                    "direct_cpu_pct",
                    "foreign_cpu_pct",
                )
            }
    targets = {}
    best: dict[str, Any] = {}
    for name, w in wrk.items():
        target, mode, _ = name.split("/")
        key = f"{target}/{mode}"
        if w["rps"] and not w["non_2xx"] and (key not in best or w["rps"] > best[key]["rps"]):
            best[key] = {"rps": w["rps"], "at": name}
    for c in cells:
        if c["rate"] == 500 and "gateway" in c:
            g = c["gateway"]
            mode = "stream" if c["stream"] else "json"
            targets[mode] = {
                "added_p50_ms": g.get("added_p50_ms"),
                "added_p99_ms": g.get("added_p99_ms"),
                "p50_target_met": g.get("added_p50_ms") is not None and g["added_p50_ms"] <= 1.0,
                "p99_target_met": g.get("added_p99_ms") is not None and g["added_p99_ms"] <= 5.0,
            }
    return {"cells": cells, "wrk": wrk, "max_rps": best, "targets_at_500": targets}


def markdown(result: dict[str, Any], summ: dict[str, Any]) -> str:
    has_ll = any("litellm" in c for c in summ["cells"])
    lines = []
    head = (
        "| mode | req/s | direct p50 / p99 | gateway p50 / p99 | gateway added p50 / p99 "
        "(ratio p50) |"
    )
    sep = "|---|---:|---:|---:|---:|"
    if has_ll:
        head += " LiteLLM p50 / p99 | LiteLLM added p50 / p99 |"
        sep += "---:|---:|"
    head += " others' CPU % |"
    sep += "---:|"
    lines += [head, sep]

    def pair(t: dict[str, Any] | None, a: str, b: str) -> str:
        if not t:
            return "-"
        s = f"{_f(t.get(a))} / {_f(t.get(b))}"
        if not t.get("sustained", True):
            s += f" (overloaded: {t['achieved_rps']:.0f}/s done, {t['errors']} not done)"
        return s

    for c in summ["cells"]:
        mode = "stream (last byte)" if c["stream"] else "non-stream"
        g = c.get("gateway")
        added = (
            f"{_f(g.get('added_p50_ms'))} / {_f(g.get('added_p99_ms'))} (x{_f(g.get('ratio_p50'))})"
            if g
            else "-"
        )
        row = (
            f"| {mode} | {c['rate']:.0f} | {pair(c.get('direct'), 'p50_ms', 'p99_ms')} | "
            f"{pair(g, 'p50_ms', 'p99_ms')} | {added} |"
        )
        if has_ll:
            ll = c.get("litellm")
            lla = f"{_f(ll.get('added_p50_ms'))} / {_f(ll.get('added_p99_ms'))}" if ll else "-"
            row += f" {pair(ll, 'p50_ms', 'p99_ms')} | {lla} |"
        row += f" {c['foreign_cpu_max_pct']:.0f} |"
        lines.append(row)
        if c["stream"]:
            row = (
                f"| stream (first event) | {c['rate']:.0f} | "
                f"{pair(c.get('direct'), 'ttft_p50_ms', 'ttft_p99_ms')} | "
                f"{pair(g, 'ttft_p50_ms', 'ttft_p99_ms')} | "
                f"{_f(g.get('added_ttft_p50_ms'))} / {_f(g.get('added_ttft_p99_ms'))} |"
            )
            if has_ll:
                ll = c.get("litellm")
                row += f" {pair(ll, 'ttft_p50_ms', 'ttft_p99_ms')} | " + (
                    f"{_f(ll.get('added_ttft_p50_ms'))} / {_f(ll.get('added_ttft_p99_ms'))} |"
                    if ll
                    else "- |"
                )
            row += " |"
            lines.append(row)
    lines.append("")
    lines.append(
        'Latencies in ms. "others\' CPU %": the most CPU (percent of one core) that '
        "processes outside the benchmark used during any run of the row."
    )
    lines.append(
        "Drift between the two direct runs of each cell (p50 / p99, ms): "
        + ", ".join(
            f"{'stream' if c['stream'] else 'json'}@{c['rate']:.0f} "
            f"{_f(c.get('direct_drift_p50_ms'))} / {_f(c.get('direct_drift_p99_ms'))}"
            for c in summ["cells"]
        )
    )
    lines.append("")
    lines.append(
        "| max throughput (wrk, closed loop) | req/s | p50 / p99 ms | target CPU µs/req | "
        "target CPU % | upstream CPU % |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|")
    for name, w in summ["wrk"].items():
        target = name.split("/")[0]
        lines.append(
            f"| {name} | {_f(w['rps'], 0)} | {_f(w['p50_ms'])} / {_f(w['p99_ms'])} | "
            f"{_f(w['target_cpu_us_per_req'], 0)} | {_f(w.get(f'{target}_cpu_pct'), 0)} | "
            f"{_f(w.get('direct_cpu_pct'), 0)} |"
        )
    lines.append("")
    for c in result["captures"]:
        lines.append(
            f"- captures {c['label']}: dropped {c.get('captures_dropped', float('nan')):.0f}"
            + "".join(
                f", {k.removeprefix('captures_')} {v:.0f}"
                for k, v in c.items()
                if k.startswith("captures_")
                and k not in ("captures_dropped", "captures_written")
                and v
            )
            + "; "
            f"rows in store {c['rows']} (ok {c['rows_ok']}); open-loop requests written to the "
            f"gateway {c['gateway_requests_written']}, answered {c['gateway_responses']} "
            f"(200: {c['gateway_ok_responses']})"
            + (
                f", + wrk {c['wrk_gateway_requests']} completed (up to {c['wrk_connections']} more "
                "cut off at the ends of the runs)"
                if "wrk_gateway_requests" in c
                else ""
            )
        )
    for t, v in summ["targets_at_500"].items():
        lines.append(
            f"- target at 500 req/s, {t}: added p50 {_f(v['added_p50_ms'])} ms "
            f"({'met' if v['p50_target_met'] else 'NOT met'}, ≤ 1 ms), added p99 "
            f"{_f(v['added_p99_ms'])} ms ({'met' if v['p99_target_met'] else 'NOT met'}, ≤ 5 ms)"
        )
    for n in result["notes"]:
        lines.append(f"- {n}")
    return "\n".join(lines)
