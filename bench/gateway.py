"""Gateway overhead benchmark: the latency `stillhouse serve` adds over calling the upstream.

    .venv/bin/python bench/gateway.py            # full run, about 8-9 minutes
    .venv/bin/python bench/gateway.py --quick    # smoke run, about 2-3 minutes

What it measures
  * Open-loop, constant-rate load (50, 200 and 500 requests/s) of the same chat-completion request,
    non-streaming and streaming, sent (a) straight to a loopback OpenAI-wire upstream
    (tests/upstream.py, 5 ms fixed latency), (b) through the Stillhouse gateway (capture on, SQLite
    store), (c) through LiteLLM's proxy when it is installed. Each cell runs in the order direct,
    gateway, direct, litellm, so that drift in the shared machine shows up as a difference between
    the two direct runs, which is reported. "Added" latency is the gateway's percentile minus the
    direct percentile (both direct runs pooled), and the ratio of the two: a difference of
    percentiles, not a percentile of per-request differences.
  * Streaming: time to the last byte (the `data: [DONE]` event) is the latency; time to the first
    body byte (the first SSE event) is reported as TTFT.
  * Maximum throughput: `wrk` (closed loop, 32 connections, one thread) against each target, with
    the CPU each process used, so a limit can be told apart from the upstream's own.
  * Capture integrity: the gateway's /metrics `stillhouse_captures_dropped_total` must stay 0, and
    the rows in the SQLite store must equal the responses the gateway gave.

Why this load generator
  wrk2 (constant rate) is not in Debian, and `wrk` and `hey -q` are closed loop: a slow response
  delays the next request, which hides stalls ("coordinated omission"). The open-loop runs use
  the small generator in harness/loadgen.py instead: asyncio on uvloop with raw protocols and
  the httptools parser (both already installed with uvicorn[standard]), no HTTP client library,
  so it costs about 40-60 us of CPU a request (reported per run as `loadgen_cpu_us_per_req`).
  Each request is fired at its scheduled time whether or not earlier ones have answered; it
  takes an idle keep-alive connection or opens a new one (at most 128; beyond that requests queue
  in the generator and the wait counts in their latency). Latency runs from the moment the
  request is fired to the last byte. The timer of the event loop has about 1 ms resolution, so a
  request is fired up to about 1 ms after its scheduled time; that lag is reported separately
  (`lag_p99_ms`), and it is not counted in the latency, because it belongs to the generator, not
  to the system measured.
  `wrk` (C, a Lua script for the POST body) is used only for the maximum throughput, where a
  closed loop is what is wanted and its low CPU cost matters.

Processes and cores (2-core machine)
  The gateway (or LiteLLM) runs alone on CPU 1; the upstream, this generator and wrk share CPU 0
  (`taskset`; --no-pin turns this off). The gateway is started as a user would: a temporary
  stillhouse.toml (teacher = openai-compatible at the upstream, store = sqlite in a temp dir) and
  `.venv/bin/stillhouse serve --config ... --port ... --log-level warning`. The code it runs is a
  `git archive` copy of the committed HEAD put first on PYTHONPATH (the working tree is shared with
  people editing it); `--source worktree` runs the working tree instead. LiteLLM, if
  bench/.litellm-venv (or --litellm-venv) has it, runs with `--num_workers 1` and one model_list
  entry; it captures nothing, so it does less work per request than the gateway.
  Install it with: python3 -m venv bench/.litellm-venv && bench/.litellm-venv/bin/pip install
  'litellm[proxy]'.

Noise: the machine is shared. Each run records the CPU time used by processes that are not part of
the benchmark (`foreign_cpu_pct`, from /proc/stat, with the top such processes in `foreign_top`);
an overloaded target is left to go idle (`settle_s`) before the next run, and each group of runs
waits up to --quiet-wait seconds for the machine to be under 15% busy (`quiet_waits`).

Every subprocess runs in its own process group and is stopped at the end, on error and on Ctrl-C;
the whole run is bounded by an alarm (--budget-s). Results: bench/results/gateway-<time>.json, and a
markdown table on stdout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
from typing import Any

from harness import ROOT, write_result
from harness.report import markdown, summary
from harness.runner import Bench
from harness.sampling import loadavg, machine_busy


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs, for a smoke test")
    p.add_argument(
        "--rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=None,
        help="offered loads in req/s (default 50,200,500)",
    )
    p.add_argument("--no-pin", dest="pin", action="store_false", help="do not use taskset")
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--litellm-venv", default=str(ROOT / "bench" / ".litellm-venv"))
    p.add_argument("--upstream-latency-ms", type=float, default=5.0)
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, store)")
    p.add_argument(
        "--source",
        choices=["head", "worktree"],
        default="head",
        help="run the committed HEAD (a git archive copy, default) or the working tree",
    )
    p.add_argument("--budget-s", type=int, default=None, help="abort after this long")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="before each group of runs, wait up to this many seconds for the "
        "machine to be under 15%% busy (default 15, quick 3)",
    )
    a = p.parse_args(argv)
    a.rates = a.rates or [50.0, 200.0, 500.0]
    if a.quick:
        a.warmup, a.seconds, a.seconds_low, a.litellm_seconds = 1.0, 3.0, 3.0, 3.0
        a.wrk_seconds = 3
        a.pause = 0.5
    else:
        a.warmup, a.seconds, a.seconds_low, a.litellm_seconds = 2.0, 12.0, 8.0, 8.0
        a.wrk_seconds = 8
        a.pause = 1.0
    if a.quiet_wait is None:
        a.quiet_wait = 3.0 if a.quick else 15.0
    a.litellm_short_from = 200.0  # LiteLLM is saturated there: shorter runs, same rate
    a.wrk_connections = [8, 32]
    a.budget_s = a.budget_s or (300 if a.quick else 720)
    if a.pin and (os.cpu_count() or 1) < 2:
        a.pin = False
    if not shutil.which("wrk"):
        p.error("wrk is needed for the throughput runs: apt-get install -y wrk")

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(
        signal.SIGALRM,
        lambda s, f: (_ for _ in ()).throw(
            TimeoutError(f"benchmark ran over its budget of {a.budget_s}s")
        ),
    )
    signal.alarm(a.budget_s)
    bench = Bench(a)
    busy = machine_busy()
    print(
        f"load average before: {loadavg():.2f}, CPU busy over 2 s: {busy:.0f}% of "
        f"{os.cpu_count()} cores; temp dir {bench.tmp}",
        flush=True,
    )
    if busy > 25:
        print(
            "  warning: the machine is busy with other work; the numbers will be disturbed",
            flush=True,
        )
    try:
        result = bench.run()
    finally:
        signal.alarm(0)
        bench.close()
    summ = summary(result)
    for r in result["runs"]:
        r.pop("_lat", None)
        r.pop("_ttft", None)
    result["summary"] = summ
    out = write_result("gateway", result, suffix="-quick" if a.quick else "", indent=2)
    print()
    print(markdown(result, summ))
    print(
        f"\nload average: {result['loadavg_start']:.2f} at start, "
        f"{result['loadavg_end']:.2f} at end; {result['duration_s']:.0f}s; results: {out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
