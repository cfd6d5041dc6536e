"""One open-loop run and its statistics: latency (fired to last byte), TTFT, the generator's own
lag and the throughput inside the measured window, with the project's one percentile function.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import uvloop

from stillhouse.stats import percentile

from .loadgen import LoadGen, Rec, http_request


def summarise(recs: list[Rec], t_measure: float, t_end: float, stream: bool) -> dict[str, Any]:
    measured = [r for r in recs if r.intended >= t_measure]
    ok = [
        r
        for r in measured
        if r.error is None and r.status == 200 and (not stream or r.tail.endswith(b"[DONE]\n\n"))
    ]
    lat = sorted((r.done - r.t0) * 1000 for r in ok if r.done is not None)
    lag = sorted((r.t0 - r.intended) * 1000 for r in measured)
    ttft = sorted((r.first_body - r.t0) * 1000 for r in ok if r.first_body is not None)
    seconds = t_end - t_measure
    # throughput: successful completions of any request (warm-up ones too) inside the window
    in_window = sum(
        1
        for r in recs
        if r.error is None
        and r.status == 200
        and r.done is not None
        and t_measure <= r.done <= t_end
    )
    ok_ids = {id(r) for r in ok}

    def why(r: Rec) -> str:
        if r.error:
            return r.error
        return f"http {r.status}" if r.status != 200 else "stream not finished"

    errors = collections.Counter(why(r) for r in measured if id(r) not in ok_ids)
    out: dict[str, Any] = {
        "measured_requests": len(measured),
        "ok": len(ok),
        "errors": dict(errors),
        "achieved_rps": round(in_window / seconds, 1) if seconds > 0 else None,
        "mean_ms": round(sum(lat) / len(lat), 3) if lat else None,
    }
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        v = percentile(lat, q)
        out[f"{name}_ms"] = round(v, 3) if v is not None else None
    out["max_ms"] = round(lat[-1], 3) if lat else None
    if stream:
        for name, q in (("p50", 50), ("p99", 99)):
            v = percentile(ttft, q)
            out[f"ttft_{name}_ms"] = round(v, 3) if v is not None else None
    for name, q in (("p50", 50), ("p99", 99)):
        v = percentile(lag, q)
        out[f"lag_{name}_ms"] = round(v, 3) if v is not None else None
    out["lag_max_ms"] = round(lag[-1], 3) if lag else None
    out["_lat"] = lat  # pooled later, dropped before writing
    out["_ttft"] = ttft
    return out


async def _open_loop(
    port: int,
    body: bytes,
    rate: float,
    warmup: float,
    seconds: float,
    drain_s: float,
    max_conns: int,
) -> dict[str, Any]:
    gen = LoadGen(port, http_request(port, body), max_conns=max_conns)
    await gen.prewarm(min(max_conns, 8 + int(rate * 0.02)))
    start, end, unfinished = await gen.run(rate, warmup + seconds, drain_s)
    stats = summarise(gen.results, start + warmup, end, stream=b'"stream":true' in body)
    stats["unfinished"] = unfinished
    stats["retried_on_closed_keepalive"] = gen.retries
    stats["generator_queue_max"] = gen.queued_max
    stats["connections_max"] = gen.conns_max
    stats["all_ok_responses"] = sum(1 for r in gen.results if r.error is None and r.status == 200)
    stats["all_responses"] = sum(1 for r in gen.results if r.error is None and r.status)
    stats["requests_written"] = gen.written - gen.retries  # a retried one was not received
    return stats


def open_loop(
    port: int,
    body: bytes,
    rate: float,
    warmup: float,
    seconds: float,
    drain_s: float = 10.0,
    max_conns: int = 128,
) -> dict[str, Any]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_open_loop(port, body, rate, warmup, seconds, drain_s, max_conns))
