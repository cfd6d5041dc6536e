"""Soak: a steady 500 requests/s through the gateway for 5 minutes, capture on, on SQLite and on
PostgreSQL. Does every answered call land in the store, does memory stay flat, does p99 hold?

    .venv/bin/python bench/soak.py                       # both stores, 500 req/s x 300 s each
    .venv/bin/python bench/soak.py --stores sqlite --seconds 60 --rate 200   # a short run

PostgreSQL: --pg-url, else $STILLHOUSE_TEST_PG_URL (scripts/test-postgres.sh prints one); the
run creates its own database there and drops it at the end.

The parts are bench/harness's, shared with bench/gateway.py: its open-loop generator (each request
fired at its scheduled time, whatever the earlier ones are doing), its process handling and CPU
accounting, and tests/upstream.py as the upstream (5 ms). The gateway is `stillhouse serve` run from
a `git archive` of HEAD, alone on CPU 1; the upstream and the generator share CPU 0.

Reported per store: requests fired, answered (200), errors; rows in the store after the writer
drained (must equal the 200s: "calls lost" is the difference); the gateway's capture counters;
resident memory (VmRSS of the gateway) sampled every 5 s, and its growth after the warm-up (the
first 60 s); latency p50/p99/max per 30 s window (fired to last byte). Results:
bench/results/soak-<time>.json, and a markdown summary on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import uvloop
from harness import (
    LoadGen,
    Procs,
    Rec,
    Sampler,
    export_commit,
    free_port,
    head_commit,
    http_request,
    machine_info,
    request_body,
    start_gateway,
    start_upstream,
    wait_captures,
    write_result,
)

from stillhouse.stats import percentile

WINDOW = 30.0


def checkout(tmp: Path) -> tuple[str, dict[str, str]]:
    commit = head_commit()
    src = export_commit(commit, tmp / "src")
    return commit, {"PYTHONPATH": str(src)}


def windows(recs: list[Rec], start: float, seconds: float) -> list[dict[str, Any]]:
    out = []
    for k in range(int(seconds // WINDOW)):
        lo, hi = start + k * WINDOW, start + (k + 1) * WINDOW
        inside = [r for r in recs if lo <= r.intended < hi]
        ok = sorted(
            (r.done - r.t0) * 1000
            for r in inside
            if r.error is None and r.status == 200 and r.done is not None
        )
        out.append(
            {
                "from_s": round(k * WINDOW),
                "requests": len(inside),
                "ok": len(ok),
                "p50_ms": round(percentile(ok, 50) or 0, 2),
                "p99_ms": round(percentile(ok, 99) or 0, 2),
                "max_ms": round(ok[-1], 2) if ok else None,
            }
        )
    return out


async def _load(port: int, rate: float, seconds: float) -> tuple[LoadGen, float, int]:
    gen = LoadGen(port, http_request(port, request_body(False)), max_conns=256)
    await gen.prewarm(32)
    start, _, unfinished = await gen.run(rate, seconds, drain_s=60)
    return gen, start, unfinished


def store_count(url: str) -> int:
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30)
        try:
            return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(url) as pg:
        row = pg.execute("SELECT count(*) FROM calls").fetchone()
        return int(row[0]) if row else 0


@contextlib.contextmanager
def pg_database(admin: str) -> Any:
    import psycopg

    name = f"sh_soak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rpartition("/")[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def soak(store: str, url: str, args: argparse.Namespace, tmp: Path, env: dict[str, str]) -> dict:
    procs = Procs(pin=not args.no_pin)
    folder = tmp / store
    folder.mkdir()
    try:
        up = free_port()
        start_upstream(
            procs, tmp / "src", up, folder / "upstream.log", latency_ms=5, cpu=0, env=env
        )
        port = free_port()
        (folder / "stillhouse.toml").write_text(
            f'[store]\nurl = "{url}"\n\n[models.teacher]\nprovider = "openai-compatible"\n'
            f'base_url = "http://127.0.0.1:{up}/v1"\nmodel = "upstream-model"\n\n'
            f'[tasks.bench]\nteacher = "teacher"\nmode = "teacher"\n'
        )
        gateway = start_gateway(
            procs, folder / "stillhouse.toml", port, folder / "gateway.log", cpu=1, env=env
        )
        sampler = Sampler(gateway.pid)
        sampler.start()
        started = time.time()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            gen, t_start, unfinished = runner.run(_load(port, args.rate, args.seconds))
        sampler.stop.set()
        sampler.join()
        ok = sum(1 for r in gen.results if r.error is None and r.status == 200)
        answered = sum(1 for r in gen.results if r.error is None and r.status)
        metrics = wait_captures(port, expected=ok, timeout=120)
        rows = store_count(url)
        errors: dict[str, int] = {}
        for r in gen.results:
            if r.error is not None or r.status != 200:
                key = r.error or f"http {r.status}"
                errors[key] = errors.get(key, 0) + 1
        warm = [s for s in sampler.samples if s["t"] >= args.warmup]
        rss_warm = warm[0]["rss_mb"] if warm else None
        rss_max = max((s["rss_mb"] for s in warm), default=None)
        rss_end = warm[-1]["rss_mb"] if warm else None
        wins = windows(gen.results, t_start, args.seconds)
        p99s = [w["p99_ms"] for w in wins if w["ok"]]
        return {
            "store": store,
            "started": dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
            "rate": args.rate,
            "seconds": args.seconds,
            "fired": len(gen.results) + unfinished,
            "written": gen.written - gen.retries,
            "answered": answered,
            "ok": ok,
            "unfinished": unfinished,
            "errors": errors,
            "rows_in_store": rows,
            "calls_lost": ok - rows if rows < ok else 0,
            "extra_rows": max(0, rows - ok),
            "capture_metrics": metrics,
            "rss_mb_after_warmup": rss_warm,
            "rss_mb_max_after_warmup": rss_max,
            "rss_mb_end": rss_end,
            "rss_growth_pct": (
                round(100 * (rss_max - rss_warm) / rss_warm, 1) if rss_warm and rss_max else None
            ),
            "p99_ms_min_window": min(p99s, default=None),
            "p99_ms_max_window": max(p99s, default=None),
            "windows": wins,
            "samples": sampler.samples,
            "generator_queue_max": gen.queued_max,
            "connections_max": gen.conns_max,
        }
    finally:
        procs.stop_all()


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| store | fired | 200s | rows stored | lost | RSS after warm-up → max (growth) "
        "| p99 per 30 s window, min-max | machine busy |",
        "|---|---:|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        busy = [s["machine_busy_pct"] for s in r["samples"]]
        lines.append(
            f"| {r['store']} | {r['fired']:,} | {r['ok']:,} | {r['rows_in_store']:,} | "
            f"{r['calls_lost']} | {r['rss_mb_after_warmup']} → {r['rss_mb_max_after_warmup']} MB "
            f"({r['rss_growth_pct']} %) | {r['p99_ms_min_window']}-{r['p99_ms_max_window']} ms | "
            f"{min(busy, default=0)}-{max(busy, default=0)} % |"
        )
    for r in results:
        lines.append(f"\n{r['store']} windows (p50 / p99 / max ms):")
        lines.append(
            "  "
            + "; ".join(
                f"{w['from_s']}s {w['p50_ms']}/{w['p99_ms']}/{w['max_ms']}" for w in r["windows"]
            )
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--warmup", type=float, default=60, help="seconds before RSS is judged")
    parser.add_argument("--pg-url", default=os.environ.get("STILLHOUSE_TEST_PG_URL"))
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="stillhouse-soak-"))
    commit, env = checkout(tmp)
    if not args.no_pin:
        os.sched_setaffinity(0, {0})
    results = []
    for store in args.stores:
        if store == "sqlite":
            results.append(soak(store, f"sqlite:///{tmp / 'soak.db'}", args, tmp, env))
        else:
            if not args.pg_url:
                parser.error("postgres needs --pg-url or STILLHOUSE_TEST_PG_URL")
            with pg_database(args.pg_url) as url:
                results.append(soak(store, url, args, tmp, env))
    doc = {"commit": commit, "machine": machine_info(), "runs": results}
    out = write_result("soak", doc)
    print(markdown(results))
    print(f"\nraw results: {out}")
    return 0 if all(r["calls_lost"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
